"""Every usable backend's layer_norm and add_layer_norm honour a non-default eps.

Rows of variance about 1e-4 with eps=1e-3: the eps dominates the variance, so a backend that drops it (or uses
another value) misses the float64 expectation by far more than the tolerance; the test checks that margin too.
"""

import pytest
import torch
import torch.nn.functional as F

import semvlp
from semvlp import ops
from semvlp.ops import dispatch
from tolerances import FP32_ATOL, max_error

EPS, HIDDEN = 1e-3, 48


def _inputs():
    g = torch.Generator().manual_seed(0)
    x, residual, x_bias = (0.01 * torch.randn(shape, generator=g) for shape in ((5, HIDDEN), (5, HIDDEN), HIDDEN))
    weight, bias = 1 + torch.randn(HIDDEN, generator=g), torch.randn(HIDDEN, generator=g)
    return x, residual, x_bias, weight, bias


def _expected(total, weight, bias, eps):
    return F.layer_norm(total.double(), (HIDDEN,), weight.double(), bias.double(), eps)


def _implementing(op: str, inputs: dict) -> list[str]:
    """Every backend with an implementation of `op`, usable here or not (those that are not skip with why)."""
    return [name for name, reasons in dispatch.explain(op, inputs).items()
            if f"{name} does not implement {op}" not in reasons]


_X, _RESIDUAL, _X_BIAS, _WEIGHT, _BIAS = _inputs()
LAYER_NORM_BACKENDS = _implementing("layer_norm", dict(x=_X, weight=_WEIGHT, bias=_BIAS, eps=EPS))
ADD_LAYER_NORM_BACKENDS = _implementing("add_layer_norm", dict(
    x=_X, residual=_RESIDUAL, weight=_WEIGHT, bias=_BIAS, x_bias=_X_BIAS, dropout_p=0.0, eps=EPS, prenorm=True))


def _usable(backend):
    reason = semvlp.backends()[backend]
    if reason is not None:
        pytest.skip(f"{backend}: {reason}")


def _check(name, actual, total, weight, bias):
    err = max_error(actual, _expected(total, weight, bias, EPS))
    assert err <= FP32_ATOL, f"{name}: max error {err:.2e} with eps={EPS}"
    # A wrong eps would be visible: the default eps gives an output this far from the expected one.
    assert max_error(_expected(total, weight, bias, 1e-12), _expected(total, weight, bias, EPS)) > 1000 * FP32_ATOL


@pytest.mark.parametrize("backend", LAYER_NORM_BACKENDS)
def test_layer_norm_honours_eps(backend):
    _usable(backend)
    x, _, _, weight, bias = _inputs()
    out = ops.layer_norm(x, weight, bias, EPS, backend=backend)
    _check("layer_norm", out, x, weight, bias)


@pytest.mark.parametrize("backend", ADD_LAYER_NORM_BACKENDS)
def test_add_layer_norm_honours_eps(backend):
    _usable(backend)
    x, residual, x_bias, weight, bias = _inputs()
    out, total = ops.add_layer_norm(x, residual, weight, bias, x_bias=x_bias, eps=EPS, prenorm=True, backend=backend)
    _check("add_layer_norm", out, residual + x + x_bias, weight, bias)
