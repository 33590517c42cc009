"""RegionContext against a per-image, per-pair loop: outputs and every gradient, on awkward layouts (an image with
one region, one with none, prime counts, padding slots); what a region gathers depends only on its own image and
on the others' positions relative to it; the config checks its field; the model runs it in both modes."""

import dataclasses

import pytest
import torch

from semvlp import SemVLPConfig, SemVLPForPretraining
from semvlp.data import random_batch
from semvlp.model.inputs import PackedLayout
from semvlp.model.region_context import RegionContext
from tolerances import FP32_ATOL

HIDDEN, HEADS = 12, 3


@pytest.fixture
def config():
    return SemVLPConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=16, max_position_embeddings=32, cross_layers=[1], visual_feat_dim=6,
                        visual_pos_dim=5, max_regions=8, num_region_labels=7, num_qa_labels=5,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, region_context_heads=HEADS)


def _boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    corner = torch.rand(n, 2, generator=generator) * 0.7
    size = torch.rand(n, 2, generator=generator) * 0.3 + 0.01
    xyxy = torch.cat([corner, corner + size], 1)
    return torch.cat([xyxy, (size[:, :1] * size[:, 1:])], 1)


def _reference(module: RegionContext, regions, boxes, counts) -> torch.Tensor:
    """The same computation written pair by pair, image by image."""
    out, start = [], 0
    head_dim = regions.shape[1] // module.heads
    for n in counts:
        for i in range(start, start + n):
            context = torch.zeros(module.heads, head_dim)
            others = [j for j in range(start, start + n) if j != i]
            if others:
                centre_i, size_i = (boxes[i, :2] + boxes[i, 2:4]) / 2, (boxes[i, 2:4] - boxes[i, :2]).clamp(min=1e-3)
                logits = []
                for j in others:
                    centre_j = (boxes[j, :2] + boxes[j, 2:4]) / 2
                    size_j = (boxes[j, 2:4] - boxes[j, :2]).clamp(min=1e-3)
                    pair = torch.cat([(centre_j - centre_i) * 4.0, torch.log(size_j / size_i)])
                    logits.append(module.pair_mlp(pair))
                weights = torch.stack(logits).softmax(dim=0)                       # (others, heads)
                values = module.value(regions[others]).view(len(others), module.heads, head_dim)
                context = (weights[..., None] * values).sum(0)
            out.append(regions[i] + module.output(context.reshape(-1)))
        start += n
    return module.norm(torch.stack(out)) if out else regions


@pytest.mark.parametrize("counts", [[3, 1, 0, 5], [1], [7, 2], [0, 2, 3]])
def test_matches_the_pairwise_loop_with_gradients(config, counts):
    torch.manual_seed(0)
    module = RegionContext(config)
    for parameter in module.parameters():  # away from the zero biases and unit norm of initialisation
        torch.nn.init.normal_(parameter, std=0.5)
    g = torch.Generator().manual_seed(1)
    total = sum(counts)
    regions = torch.randn(total, HIDDEN, generator=g, requires_grad=True)
    boxes = _boxes(total, g).requires_grad_()
    layout = PackedLayout.from_lengths([2] * len(counts), counts)
    out = module(regions, boxes, layout)
    expected = _reference(module, regions, boxes, counts)
    torch.testing.assert_close(out, expected, atol=FP32_ATOL, rtol=0)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, [regions, boxes, *module.parameters()], upstream, allow_unused=True)
    expected_grads = torch.autograd.grad(expected, [regions, boxes, *module.parameters()], upstream,
                                         allow_unused=True)
    for got, want in zip(grads, expected_grads):
        if want is None:
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want, atol=FP32_ATOL, rtol=0)


def test_static_maxima_and_padding_slots_change_nothing(config):
    torch.manual_seed(0)
    module = RegionContext(config)
    g = torch.Generator().manual_seed(2)
    regions, boxes = torch.randn(6, HIDDEN, generator=g), _boxes(6, g)
    tight = PackedLayout.from_lengths([2, 3], [4, 2])
    padded = PackedLayout.from_lengths([2, 3, 0], [4, 2, 0], static_max=(5, 8))
    torch.testing.assert_close(module(regions, boxes, padded), module(regions, boxes, tight), atol=FP32_ATOL, rtol=0)


def test_a_region_gathers_its_own_image_by_relative_position_only(config):
    torch.manual_seed(0)
    module = RegionContext(config)
    g = torch.Generator().manual_seed(3)
    regions, boxes = torch.randn(7, HIDDEN, generator=g), _boxes(7, g)
    layout = PackedLayout.from_lengths([2, 2], [3, 4])
    out = module(regions, boxes, layout)
    other_image = regions.clone()
    other_image[3:] += 1.0
    assert torch.equal(module(other_image, boxes, layout)[:3], out[:3])
    shifted = boxes.clone()
    shifted[:3, :4] += 0.2  # the whole first image moves: relative positions and sizes stay
    torch.testing.assert_close(module(regions, shifted, layout)[:3], out[:3], atol=FP32_ATOL, rtol=0)
    swapped = boxes.clone()
    swapped[[0, 1]] = boxes[[1, 0]]  # two regions trade places: what the others gather changes
    assert not torch.allclose(module(regions, swapped, layout)[2], out[2], atol=1e-4)


def test_a_lone_region_and_an_empty_batch_pass_through_the_norm(config):
    module = RegionContext(config)
    regions = torch.randn(1, HIDDEN)
    out = module(regions, _boxes(1, torch.Generator().manual_seed(0)), PackedLayout.from_lengths([3], [1]))
    torch.testing.assert_close(out, module.norm(regions + module.output.bias), atol=FP32_ATOL, rtol=0)
    empty = torch.zeros(0, HIDDEN)
    assert module(empty, torch.zeros(0, 5), PackedLayout.from_lengths([3], [0])).shape == (0, HIDDEN)


@pytest.mark.parametrize("fields,message", [
    (dict(region_context_heads=-1), r"region_context_heads: expected a non-negative int, got -1"),
    (dict(region_context_heads=True), r"region_context_heads: expected a non-negative int, got True \(bool\)"),
    (dict(region_context_heads=5), r"region_context_heads: hidden_size \(12\) is not divisible by 5"),
    (dict(visual_pos_dim=2), r"region_context_heads: needs box features with x1, y1, x2, y2"),
])
def test_config_names_a_bad_value(config, fields, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(config, **fields)


def test_the_model_trains_it_in_both_modes_and_leaves_it_out_by_default(config):
    torch.manual_seed(0)
    model = SemVLPForPretraining(config)
    batch = random_batch(config, 4, seed=0, text_len=9, num_regions=5)
    for mode in ("single", "two"):
        model.zero_grad()
        model(batch, mode=mode).loss.backward()
        assert model.semvlp.region_context.pair_mlp[0].weight.grad.abs().sum() > 0, mode
    plain = SemVLPForPretraining(dataclasses.replace(config, region_context_heads=0))
    assert plain.semvlp.region_context is None
    assert not any("region_context" in name for name in plain.state_dict())
