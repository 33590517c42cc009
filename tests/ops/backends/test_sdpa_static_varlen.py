"""The `sdpa` backend's varlen path with static shapes: the layout's max lengths may exceed the segments' (a
token-budget layout), segments may be empty, and the op compiles as one graph that other lengths of the same
total do not recompile."""

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from semvlp import ops
from tolerances import BACKEND_FP32_ATOL


def _inputs(lengths_q, lengths_k, seed=0):
    g = torch.Generator().manual_seed(seed)
    cu_q = torch.tensor([0, *torch.tensor(lengths_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lengths_k).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(sum(lengths_q), 2, 8, generator=g)
    k, v = (torch.randn(sum(lengths_k), 2, 8, generator=g) for _ in range(2))
    return q, k, v, cu_q, cu_k


def _run(backend, q, k, v, cu_q, cu_k, max_q, max_k, causal):
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = ops.varlen_attention(*leaves, cu_q, cu_k, max_q, max_k, causal=causal, backend=backend)
    return [out, *torch.autograd.grad((out * out).sum(), leaves)]


@pytest.mark.parametrize("causal", [False, True])
def test_larger_static_maxima_and_empty_segments_give_the_reference(causal):
    q, k, v, cu_q, cu_k = _inputs([3, 0, 5, 1, 0], [4, 0, 5, 2, 0])
    for max_q, max_k in ((5, 5), (9, 12)):  # the true maxima, then static ones above them
        ours = _run("sdpa", q, k, v, cu_q, cu_k, max_q, max_k, causal)
        expected = _run("reference", q, k, v, cu_q, cu_k, 5, 5, causal)
        for name, a, b in zip(("out", "dq", "dk", "dv"), ours, expected):
            torch.testing.assert_close(a, b, atol=BACKEND_FP32_ATOL, rtol=0, msg=name)


def test_varlen_op_compiles_without_breaks_or_recompiles_for_other_lengths():
    torch._dynamo.reset()
    counters.clear()
    # Without fullgraph=True: under it dynamo would trace a `nonzero` into the graph rather than break there.
    compiled = torch.compile(lambda *a: ops.varlen_attention(*a, backend="sdpa", check_offsets=False),
                             backend="aot_eager")
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            for seed, lengths in enumerate(([4, 4, 4], [1, 6, 5], [8, 0, 4])):  # same total, same segment count
                q, k, v, cu_q, _ = _inputs(lengths, lengths, seed)
                out = compiled(q, k, v, cu_q, cu_q, 8, 8)
                torch.testing.assert_close(out, ops.varlen_attention(q, k, v, cu_q, cu_q, 8, 8, backend="reference"),
                                           atol=BACKEND_FP32_ATOL, rtol=0)
        assert not counters["graph_break"]
        assert counters["stats"]["unique_graphs"] == 1
    finally:
        torch._dynamo.reset()
