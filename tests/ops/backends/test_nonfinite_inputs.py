"""NaN and inf in the inputs reach the outputs of every usable backend exactly where they reach the reference's:
a backend never turns a poisoned row into plausible numbers."""

import pytest
import torch

import semvlp
from semvlp import ops
from semvlp.ops import dispatch

BATCH, SEQLEN, HEADS, HEADDIM = 2, 5, 2, 8


def _implementing(op: str, inputs: dict) -> list[str]:
    return [name for name, reasons in dispatch.explain(op, inputs).items()
            if f"{name} does not implement {op}" not in reasons and name != "reference"]


def _qkv():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(BATCH, SEQLEN, HEADS, HEADDIM, generator=g) for _ in range(3)]


MASK = torch.tensor([[True] * SEQLEN, [True, True, True, False, False]])
ATTENTION_BACKENDS = _implementing("attention", dict(q=_qkv()[0], k=_qkv()[1], v=_qkv()[2], attention_mask=MASK,
                                                     dropout_p=0.0, softmax_scale=0.3, causal=False))


def _usable(backend):
    reason = semvlp.backends()[backend]
    if reason is not None:
        pytest.skip(f"{backend}: {reason}")


def _nonfinite(t: torch.Tensor) -> torch.Tensor:
    """Per (batch, query) row: does the output hold a NaN or inf?"""
    return (~torch.isfinite(t)).flatten(2).any(-1)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["q", "k", "v"])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "key-padding"])
@pytest.mark.parametrize("backend", ATTENTION_BACKENDS)
def test_attention_propagates_nonfinite_inputs_like_the_reference(backend, masked, where, value):
    _usable(backend)
    q, k, v = _qkv()
    {"q": q, "k": k, "v": v}[where][0, 1, 0, 0] = value
    mask = MASK if masked else None
    expected = _nonfinite(ops.attention(q, k, v, attention_mask=mask, backend="reference"))
    # A NaN reaches the output; an inf key may not (a -inf score is a zero weight), but never differently.
    assert expected.any() or where == "k"
    actual = _nonfinite(ops.attention(q, k, v, attention_mask=mask, backend=backend))
    assert torch.equal(actual, expected), \
        f"{backend}: rows with NaN/inf {actual.tolist()}, reference {expected.tolist()}"


LAYER_NORM_BACKENDS = _implementing("layer_norm", dict(x=torch.randn(3, 16), weight=None, bias=None, eps=1e-5))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("backend", LAYER_NORM_BACKENDS)
def test_layer_norm_propagates_nonfinite_inputs_like_the_reference(backend, value):
    _usable(backend)
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    x[1, 4] = value
    expected = ~torch.isfinite(ops.layer_norm(x, None, None, 1e-5, backend="reference")).all(-1)
    actual = ~torch.isfinite(ops.layer_norm(x, None, None, 1e-5, backend=backend)).all(-1)
    assert expected.tolist() == [False, True, False]
    assert torch.equal(actual, expected)
