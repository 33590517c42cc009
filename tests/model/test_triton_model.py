"""The whole pretraining model on the triton backend (SEMVLP_BACKEND=triton, the interpreter on a CPU) gives
the reference backend's loss and parameter gradients in both stream modes: every fused op in its real call
pattern (packed self-attention, per-sample cross-attention, bias-GELU, add+LayerNorm)."""

import pytest
import torch

from semvlp import SemVLPForPretraining
from semvlp.data import random_batch
from tolerances import BACKEND_FP32_ATOL

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _loss_and_grads(model, batch, mode):
    model.zero_grad()
    out = model(batch, mode=mode)
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("mode", ["single", "two"])
def test_triton_backend_matches_reference_in_the_model(tiny_config, monkeypatch, mode):
    torch.manual_seed(0)
    model = SemVLPForPretraining(tiny_config).to(DEVICE)
    batch = random_batch(tiny_config, batch_size=3, text_len=13, num_regions=7).to(DEVICE)
    monkeypatch.setenv("SEMVLP_BACKEND", "reference")
    expected_loss, expected_grads = _loss_and_grads(model, batch, mode)
    monkeypatch.setenv("SEMVLP_BACKEND", "triton")
    loss, grads = _loss_and_grads(model, batch, mode)
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=BACKEND_FP32_ATOL)
    assert len(grads) == len(expected_grads)
    for got, expected in zip(grads, expected_grads):
        torch.testing.assert_close(got, expected, rtol=0, atol=BACKEND_FP32_ATOL)
