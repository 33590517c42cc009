"""The per-signature fast path: a resolved call runs the backend's specialized implementation, which computes
exactly what the keyword path computes, and runs no checks, no choice and no other code of ours."""

import sys

import pytest
import torch

from semvlp import ops
from semvlp.ops import dispatch
from semvlp.ops.backends import sdpa
from semvlp.ops.backends import torch as torch_backend


def _inputs(grad: bool):
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).requires_grad_(grad)

    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4, [False] * 7])  # a row without keys included
    return {"x": randn(5, 8), "residual": randn(5, 8), "weight": randn(8), "bias": randn(8), "x_bias": randn(8),
            "q": randn(3, 4, 2, 8), "k": randn(3, 7, 2, 8), "v": randn(3, 7, 2, 8), "mask": mask}


# op -> (public call, the backend's keyword implementation called as the public op calls it)
CASES = {
    "layer_norm": (lambda i: ops.layer_norm(i["x"], i["weight"], i["bias"], 1e-5),
                   lambda i: torch_backend.layer_norm(x=i["x"], weight=i["weight"], bias=i["bias"], eps=1e-5)),
    "add_layer_norm": (
        lambda i: ops.add_layer_norm(i["x"], i["residual"], i["weight"], i["bias"], x_bias=i["x_bias"], eps=1e-5),
        lambda i: torch_backend.add_layer_norm(i["x"], i["residual"], i["weight"], i["bias"], x_bias=i["x_bias"],
                                               eps=1e-5)),
    "add_layer_norm_dropout": (
        lambda i: ops.add_layer_norm(i["x"], i["residual"], i["weight"], i["bias"], x_bias=i["x_bias"],
                                     dropout_p=0.3, eps=1e-5),
        lambda i: torch_backend.add_layer_norm(i["x"], i["residual"], i["weight"], i["bias"], x_bias=i["x_bias"],
                                               dropout_p=0.3, eps=1e-5)),
    "bias_gelu": (lambda i: ops.bias_gelu(i["x"], i["bias"], "tanh"),
                  lambda i: torch_backend.bias_gelu(i["x"], i["bias"], approximate="tanh")),
    "attention": (lambda i: ops.attention(i["q"], i["k"], i["v"], attention_mask=i["mask"]),
                  lambda i: sdpa.attention(i["q"], i["k"], i["v"], attention_mask=i["mask"],
                                           softmax_scale=8 ** -0.5)),
}


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_resolved_call_is_specialized_and_computes_what_the_keyword_path_does(case, grad):
    public, keyword = CASES[case]
    dispatch.clear_cache()
    inputs = _inputs(grad)
    tensors = [t for t in inputs.values() if t.requires_grad]
    results = []
    for call in (public, public, keyword):  # resolve, then the cached path, then the backend's own
        torch.manual_seed(0)  # the same dropout mask for each
        out = call(inputs)
        grads = torch.autograd.grad(out.sum(), tensors, allow_unused=True) if grad else ()
        results.append((out, grads))
    [found] = dispatch.RESOLVED.values()
    assert found[3] is not None, "no specialized implementation was resolved"
    for out, grads in results[1:]:
        assert torch.equal(out, results[0][0])
        for a, b in zip(grads, results[0][1]):
            assert (a is None and b is None) or torch.equal(a, b)
    assert not torch.isnan(results[0][0]).any()


def test_a_parameter_that_needs_a_cast_is_not_specialized_and_is_cast():
    dispatch.clear_cache()
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    weight, bias = torch.randn(8), torch.randn(8)  # float32 parameters with bfloat16 activations (autocast)
    for _ in range(2):
        out = ops.layer_norm(x, weight, bias)
    [found] = dispatch.RESOLVED.values()
    assert found[0] == "torch" and found[3] is None
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, torch.nn.functional.layer_norm(x, (8,), weight.bfloat16(), bias.bfloat16(), 1e-12))


def test_whether_autograd_records_the_call_is_part_of_the_signature(monkeypatch):
    # The backends' rules read records_grad (triton leaves bias_gelu with gradients to torch on a GPU).
    dispatch.clear_cache()
    x, bias = torch.randn(4, 8), torch.randn(8)
    ops.bias_gelu(x, bias)
    chosen = []
    real_choose = dispatch.choose
    monkeypatch.setattr(dispatch, "choose", lambda *args: chosen.append(args[0]) or real_choose(*args))
    ops.bias_gelu(x, bias)
    assert chosen == []
    ops.bias_gelu(x, bias.requires_grad_())
    assert chosen == ["bias_gelu"]


@pytest.mark.parametrize("philox", [True, False])
def test_a_backend_drawing_philox_seeds_is_never_specialized(monkeypatch, philox):
    backend = dispatch.Backend(name="seeded", priority=-1, unavailable=lambda: None, philox_dropout=philox,
                               ops={"layer_norm": (lambda **_: [], torch_backend.layer_norm)},
                               specialized={"layer_norm": torch_backend._layer_norm_for})
    monkeypatch.setitem(dispatch._BACKENDS, "seeded", backend)
    found = dispatch.resolve(None, "layer_norm", "seeded", dict(x=torch.randn(2, 4), weight=None, bias=None,
                                                                  eps=1e-5))
    assert (found[3] is None) == philox


def _our_calls(call) -> list[str]:
    """The functions of semvlp that one call enters (Python frames only)."""
    entered = []

    def profile(frame, event, _arg):
        if event == "call" and "/semvlp/" in frame.f_code.co_filename.replace("\\", "/"):
            entered.append(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return entered


@pytest.mark.parametrize("case", ["layer_norm", "add_layer_norm", "bias_gelu", "attention"])
def test_a_resolved_call_runs_no_checks_and_no_choice(case):
    dispatch.clear_cache()
    inputs = _inputs(grad=False)
    public = CASES[case][0]
    first = _our_calls(lambda: public(inputs))
    assert "resolve" in first and "check_tensor" in first
    op = case
    assert _our_calls(lambda: public(inputs)) == [
        op, "_environment_reader.<locals>.<lambda>", f"_{op}_for.<locals>.<lambda>"]
