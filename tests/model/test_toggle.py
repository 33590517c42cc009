"""The stream toggle: switching modes never touches a parameter, and each mode attends as documented."""

import dataclasses

import torch

from semvlp import SemVLPForPretraining, SemVLPModel
from semvlp.data import random_batch


def _snapshot(model):
    return ([(name, p.data_ptr(), tuple(p.shape)) for name, p in model.named_parameters()],
            [(name, b.data_ptr()) for name, b in model.named_buffers()],
            list(model.state_dict().keys()))


def _cross_parameters(model):
    return {name for name, _ in model.named_parameters() if ".cross_attention." in name}


def test_switching_modes_with_optimizer_steps_keeps_every_parameter(tiny_config):
    torch.manual_seed(0)
    model = SemVLPForPretraining(tiny_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = _snapshot(model)
    cross = _cross_parameters(model)
    assert cross, "the config plugs cross-attention into layers 1 and 2"
    for step, mode in enumerate(["single", "two", "two", "single", "two", "single", "single"]):
        batch = random_batch(tiny_config, 3, seed=step, text_len=9, num_regions=4)
        optimizer.zero_grad(set_to_none=True)
        model(batch, mode=mode).loss.backward()
        with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
        if mode == "single":
            assert not (with_grad & cross)
        else:
            assert cross <= with_grad
        optimizer.step()
        assert _snapshot(model) == before


def test_single_stream_leaves_every_non_cross_parameter_with_a_gradient(tiny_config):
    model = SemVLPForPretraining(tiny_config)
    model(random_batch(tiny_config, 4, text_len=9, num_regions=4), mode="single").loss.backward()
    missing = {n for n, p in model.named_parameters() if p.grad is None} - _cross_parameters(model)
    assert missing == set()


def _encode(model, batch, mode):
    return model(batch.input_ids, batch.region_features, batch.region_boxes, batch.layout, mode=mode)


def _perturb_regions(batch, sample):
    features = batch.region_features.clone()
    start, end = batch.layout.region_cu_seqlens[sample:sample + 2].tolist()
    features[start:end] += 1.0
    return dataclasses.replace(batch, region_features=features)


def test_two_stream_without_plug_keeps_text_independent_of_regions(tiny_config):
    config = dataclasses.replace(tiny_config, cross_layers=[])
    model = SemVLPModel(config).eval()
    batch = random_batch(config, 3, text_len=9, num_regions=4)
    changed = _perturb_regions(batch, 1)
    text = batch.layout.text_index
    torch.testing.assert_close(_encode(model, batch, "two")[text], _encode(model, changed, "two")[text], atol=0, rtol=0)
    assert not torch.allclose(_encode(model, batch, "single")[text], _encode(model, changed, "single")[text])


def test_each_sample_only_sees_its_own_regions_in_both_modes(tiny_config):
    model = SemVLPModel(tiny_config).eval()
    batch = random_batch(tiny_config, 3, text_len=9, num_regions=4)
    changed = _perturb_regions(batch, 2)
    layout = batch.layout
    own = torch.arange(layout.joint_cu_seqlens[2], layout.total_tokens)
    others = torch.arange(0, layout.joint_cu_seqlens[2])
    for mode in ("single", "two"):
        a, b = _encode(model, batch, mode), _encode(model, changed, mode)
        torch.testing.assert_close(a[others], b[others], atol=0, rtol=0)
        text_of_sample_2 = layout.text_index[layout.text_cu_seqlens[2]:]
        assert not torch.allclose(a[text_of_sample_2], b[text_of_sample_2]), mode
        assert not torch.allclose(a[own], b[own])


def test_text_only_sample_in_two_stream_mode_is_finite(tiny_config):
    from semvlp.data import PackedLayout

    model = SemVLPModel(tiny_config).eval()
    layout = PackedLayout.from_lengths([4, 3], [0, 2])
    out = model(torch.randint(4, 64, (7,)), torch.randn(2, 12), torch.rand(2, 5), layout, mode="two")
    assert torch.isfinite(out).all()


def test_packed_forward_matches_each_sample_alone(tiny_config):
    model = SemVLPModel(tiny_config).eval()
    batch = random_batch(tiny_config, 3, text_len=9, num_regions=4)
    single = random_batch(tiny_config, 1, text_len=9, num_regions=4)
    layout = batch.layout
    for mode in ("single", "two"):
        packed = _encode(model, batch, mode)
        for s in range(3):
            t0, t1 = layout.text_cu_seqlens[s:s + 2].tolist()
            r0, r1 = layout.region_cu_seqlens[s:s + 2].tolist()
            alone = dataclasses.replace(single, input_ids=batch.input_ids[t0:t1],
                                        region_features=batch.region_features[r0:r1],
                                        region_boxes=batch.region_boxes[r0:r1],
                                        layout=type(layout).from_lengths([t1 - t0], [r1 - r0]))
            j0, j1 = layout.joint_cu_seqlens[s:s + 2].tolist()
            torch.testing.assert_close(packed[j0:j1], _encode(model, alone, mode), atol=1e-5, rtol=0)
