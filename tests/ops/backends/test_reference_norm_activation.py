"""LayerNorm, add+LayerNorm and bias-GELU references against PyTorch's own ops and float64 gradcheck."""

import pytest
import torch
import torch.nn.functional as F

from semvlp.ops.backends import reference
from tolerances import FP32_ATOL, FP64_ATOL

HIDDEN = [1, 16, 97, 768]


def _randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(hidden, affine):
    x = _randn(3, 5, hidden) * 3 + 1
    w, b = (_randn(hidden, seed=1), _randn(hidden, seed=2)) if affine else (None, None)
    torch.testing.assert_close(reference.layer_norm(x, w, b, eps=1e-5), F.layer_norm(x, (hidden,), w, b, 1e-5),
                               atol=FP32_ATOL, rtol=0)


def test_layer_norm_low_precision_input_is_normalised_in_float32():
    x = (_randn(4, 64) * 50).to(torch.bfloat16)
    out = reference.layer_norm(x, None, None, eps=1e-12)
    assert out.dtype == torch.bfloat16
    expected = F.layer_norm(x.float(), (64,), eps=1e-12).to(torch.bfloat16)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_layer_norm_gradcheck_float64():
    x, w, b = (t.requires_grad_() for t in (_randn(3, 7, dtype=torch.float64), _randn(7, dtype=torch.float64, seed=1),
                                           _randn(7, dtype=torch.float64, seed=2)))
    assert torch.autograd.gradcheck(lambda x, w, b: reference.layer_norm(x, w, b, eps=1e-5, upcast=False),
                                    (x, w, b), atol=1e-8)


@pytest.mark.parametrize("hidden", HIDDEN)
def test_add_layer_norm_matches_unfused_chain(hidden):
    x, residual = _randn(6, hidden), _randn(6, hidden, seed=1)
    w, b, x_bias = _randn(hidden, seed=2), _randn(hidden, seed=3), _randn(hidden, seed=4)
    out, total = reference.add_layer_norm(x, residual, w, b, x_bias=x_bias, eps=1e-12, prenorm=True)
    torch.testing.assert_close(total, residual + x + x_bias, atol=FP32_ATOL, rtol=0)
    torch.testing.assert_close(out, F.layer_norm(residual + x + x_bias, (hidden,), w, b, 1e-12),
                               atol=FP32_ATOL, rtol=0)


def test_add_layer_norm_dropout_mask():
    x, residual = _randn(5, 12), _randn(5, 12, seed=1)
    keep = torch.rand(5, 12) > 0.25
    out = reference.add_layer_norm(x, residual, None, None, dropout_p=0.25, dropout_mask=keep, eps=1e-5)
    torch.testing.assert_close(out, F.layer_norm(residual + x * keep / 0.75, (12,), eps=1e-5), atol=FP32_ATOL, rtol=0)


def test_add_layer_norm_gradcheck_float64():
    tensors = [_randn(4, 6, dtype=torch.float64, seed=s) for s in range(2)]
    tensors += [_randn(6, dtype=torch.float64, seed=s) for s in range(2, 5)]
    x, residual, w, b, x_bias = (t.requires_grad_() for t in tensors)
    fn = lambda x, r, w, b, xb: reference.add_layer_norm(x, r, w, b, x_bias=xb, eps=1e-5, upcast=False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, residual, w, b, x_bias), atol=1e-8)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, FP32_ATOL), (torch.float64, FP64_ATOL)])
def test_bias_gelu_matches_torch(approximate, dtype, atol):
    x, bias = _randn(7, 97, dtype=dtype) * 4, _randn(97, dtype=dtype, seed=1)
    out = reference.bias_gelu(x, bias, approximate=approximate, upcast=False)
    torch.testing.assert_close(out, F.gelu(x + bias, approximate=approximate), atol=atol, rtol=0)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_bias_gelu_gradcheck_float64(approximate):
    x, bias = (t.requires_grad_() for t in (_randn(3, 5, dtype=torch.float64), _randn(5, dtype=torch.float64, seed=1)))
    fn = lambda x, b: reference.bias_gelu(x, b, approximate=approximate, upcast=False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, bias), atol=1e-8)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_add_layer_norm_with_a_float32_residual_and_bfloat16_input_promotes(backend):
    """The autocast pattern: bf16 matmul output, fp32 residual stream; the result is fp32, as x + residual."""
    from semvlp import ops

    x, residual = _randn(4, 32).to(torch.bfloat16), _randn(4, 32, seed=1)
    out = ops.add_layer_norm(x, residual, None, None, eps=1e-5, backend=backend)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.layer_norm(residual + x.float(), (32,), eps=1e-5), atol=FP32_ATOL, rtol=0)


def test_the_model_trains_under_cpu_autocast():
    from semvlp import SemVLPConfig, SemVLPForPretraining
    from semvlp.data import random_batch

    config = SemVLPConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=48, max_position_embeddings=32, cross_layers=[1], visual_feat_dim=12,
                          max_regions=8, num_region_labels=7, num_qa_labels=5)
    model = SemVLPForPretraining(config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(random_batch(config, 3, text_len=9, num_regions=4), mode="two")
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_float64_inputs_are_computed_in_float64_by_default():
    """The oracle's default upcast never takes float64 down to float32 (3e-7 off float64 math if it did)."""
    g = torch.Generator().manual_seed(0)
    x, residual = (torch.randn(6, 33, generator=g, dtype=torch.float64) for _ in range(2))
    weight, bias = torch.randn(33, generator=g, dtype=torch.float64), torch.randn(33, generator=g, dtype=torch.float64)
    expected = F.layer_norm(x + residual, (33,), weight, bias, eps=1e-12)
    assert (reference.add_layer_norm(x, residual, weight, bias) - expected).abs().max() <= 1e-12
    plain = F.layer_norm(x, (33,), weight, bias, eps=1e-12)
    assert (reference.layer_norm(x, weight, bias) - plain).abs().max() <= 1e-12
    assert (reference.bias_gelu(x, bias) - F.gelu(x + bias)).abs().max() <= 1e-12
