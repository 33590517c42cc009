"""Token-budget batches: fixed shapes, and padding that changes neither the loss nor any gradient."""

import pytest
import torch

from semvlp import SemVLPForPretraining
from semvlp.data import random_batch
from semvlp.model.inputs import PackedLayout, TokenBudget, pad_batch
from tolerances import FP32_ATOL


def _loss_and_grads(model, batch, mode):
    model.zero_grad()
    out = model(batch, mode=mode)
    out.loss.backward()
    # Unused parameters (the cross blocks in single-stream mode) have no gradient in either batch.
    return out, {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("backend", ["reference", "auto"])  # auto: sdpa attention on the CPU
@pytest.mark.parametrize("mode", ["single", "two"])
def test_padded_batch_gives_the_loss_and_gradients_of_the_unpadded_one(tiny_config, monkeypatch, backend, mode):
    monkeypatch.setenv("SEMVLP_BACKEND", backend)
    torch.manual_seed(0)
    model = SemVLPForPretraining(tiny_config)
    batch = random_batch(tiny_config, 3, seed=0, text_len=9, num_regions=5)  # every task has targets
    budget = TokenBudget(tokens=60, max_samples=5, max_text_len=9, max_regions=5)
    padded = pad_batch(batch, budget)
    assert padded.layout.total_text + padded.layout.total_regions == 60
    assert padded.batch_size == budget.slots

    out, grads = _loss_and_grads(model, batch, mode)
    padded_out, padded_grads = _loss_and_grads(model, padded, mode)
    assert set(out.losses) == set(padded_out.losses) == set(tiny_config.tasks)
    assert all(loss > 0 for loss in out.losses.values())
    for task, loss in out.losses.items():
        torch.testing.assert_close(padded_out.losses[task], loss, atol=FP32_ATOL, rtol=0, msg=task)
    torch.testing.assert_close(padded_out.loss, out.loss, atol=FP32_ATOL, rtol=0)
    assert any(grad is not None for grad in grads.values())
    for name, grad in grads.items():
        if grad is None:
            assert padded_grads[name] is None, name
        else:
            torch.testing.assert_close(padded_grads[name], grad, atol=FP32_ATOL, rtol=0, msg=name)


def test_every_budget_batch_has_the_same_shapes_and_its_padding_targets_are_ignored(tiny_config):
    budget = TokenBudget(tokens=60, max_samples=6, max_text_len=9, max_regions=5)
    shapes = set()
    for seed in range(6):
        batch = random_batch(tiny_config, 6, seed=seed, text_len=9, num_regions=5, token_budget=60)
        layout = batch.layout
        shapes.add(tuple(t.shape for t in (batch.input_ids, batch.region_features, batch.mlm_positions,
                                           batch.mrm_positions, batch.grounding_positions, batch.itm_labels,
                                           layout.joint_cu_seqlens, layout.stream_cu_seqlens, layout.cross_kv_index))
                   + (layout.max_joint_len, layout.max_stream_len, layout.max_regions))
        real = sum(1 for n in layout.text_lengths()[:budget.max_samples] if n)
        assert budget.fits(layout.text_lengths()[:real], layout.region_counts()[:real])
        assert (batch.itm_labels[real:] == -100).all() and (batch.qa_labels[real:] == -100).all()
        n_mrm = int(batch.mrm_valid.sum())
        assert (batch.mrm_label_targets[n_mrm:] == -100).all() and not batch.mrm_valid[n_mrm:].any()
        assert (batch.mlm_targets != -100).sum() > 0
    assert len(shapes) == 1
    assert shapes.pop()[0] == (budget.text_tokens,)


def test_a_budget_batch_fills_its_tokens_with_real_samples_first(tiny_config):
    batch = random_batch(tiny_config, 8, seed=0, text_len=9, num_regions=5, token_budget=30)
    budget = TokenBudget(tokens=30, max_samples=8, max_text_len=9, max_regions=5)
    real = [n for n in batch.layout.text_lengths()[:8] if n]
    assert 1 <= len(real) < 8
    assert sum(real) <= budget.text_tokens and len(real) * 5 <= budget.region_tokens
    # One more sample of 5 regions would not fit.
    assert (len(real) + 1) * 5 > budget.region_tokens or sum(real) + 4 > budget.text_tokens


def test_token_budget_rejects_what_cannot_fit(tiny_config):
    with pytest.raises(ValueError, match="tokens"):
        TokenBudget(tokens=10, max_samples=2, max_text_len=9, max_regions=5)
    with pytest.raises(ValueError, match="max_samples"):
        TokenBudget(tokens=20, max_samples=0, max_text_len=9, max_regions=5)
    batch = random_batch(tiny_config, 4, seed=0, text_len=9, num_regions=5)
    with pytest.raises(ValueError, match="do not fit"):
        pad_batch(batch, TokenBudget(tokens=60, max_samples=3, max_text_len=9, max_regions=5))
    with pytest.raises(ValueError, match="static_max"):
        PackedLayout.from_lengths([4, 12], [5, 5], static_max=(9, 5))
