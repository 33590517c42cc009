"""The `sdpa` backend with a non-default softmax_scale, against the reference (fp32, outputs and gradients).

Every other test of the backend runs with the default 1/sqrt(headdim); a scale far from it (0.5 with headdim 16,
whose default is 0.25) makes a backend that drops the argument miss the reference by far more than the tolerance.
"""

import pytest
import torch

from semvlp import ops
from semvlp.ops.backends import sdpa
from tolerances import BACKEND_FP32_ATOL

SCALE = 0.5


@pytest.fixture(params=["as-probed", "rows-without-keys-fixed-up"])
def masked_path(request, monkeypatch):
    """Both masked paths of the backend: the CPU's own handling of rows without keys where the import-time probe
    found it, and the fix-up path that GPUs (and CPUs failing the probe) take."""
    if request.param == "rows-without-keys-fixed-up":
        monkeypatch.setattr(sdpa, "CPU_ZEROES_ROWS_WITHOUT_KEYS", {})
    return request.param


def _run(fn, tensors):
    leaves = [t.clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    return [out, *torch.autograd.grad((out * out).sum(), leaves)]


def _assert_same(ours, expected):
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, expected):
        torch.testing.assert_close(a, b, atol=BACKEND_FP32_ATOL, rtol=0, msg=name)


@pytest.mark.parametrize("masked,causal", [(False, False), (True, False), (True, True)])
def test_attention_honours_softmax_scale(masked, causal, masked_path):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 6, 2, 16, generator=g)
    k, v = torch.randn(2, 2, 9, 2, 16, generator=g).unbind(0)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    mask = mask if masked else None
    results = [_run(lambda q, k, v: ops.attention(q, k, v, attention_mask=mask, causal=causal, softmax_scale=scale,
                                                  backend=backend), (q, k, v))
               for backend, scale in (("sdpa", SCALE), ("reference", SCALE), ("reference", None))]
    _assert_same(results[0], results[1])
    # The case is one where the scale matters: the default-scale output is far from the scaled one.
    assert (results[1][0] - results[2][0]).abs().max() > 100 * BACKEND_FP32_ATOL


def test_varlen_attention_honours_softmax_scale(masked_path):
    g = torch.Generator().manual_seed(4)
    q = torch.randn(9, 2, 16, generator=g)
    k, v = torch.randn(2, 11, 2, 16, generator=g).unbind(0)
    cu_q = torch.tensor([0, 4, 9], dtype=torch.int32)
    cu_k = torch.tensor([0, 7, 11], dtype=torch.int32)
    results = [_run(lambda q, k, v: ops.varlen_attention(q, k, v, cu_q, cu_k, 5, 7, softmax_scale=SCALE,
                                                         backend=backend), (q, k, v))
               for backend in ("sdpa", "reference")]
    _assert_same(*results)
