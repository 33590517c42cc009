"""Backend choice, forced backends, SEMVLP_BACKEND, and the sdpa backend against the reference."""

import pytest
import torch

from semvlp import ops
from semvlp.ops import dispatch
from semvlp.ops.backends import reference
from tolerances import BACKEND_FP32_ATOL, GRAD_FACTOR, assert_within_rule


def _attention_inputs(batch=2, sq=5, sk=7, h=2, d=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, s, h, d, generator=g).to(dtype) for s in (sq, sk, sk))
    return dict(q=q, k=k, v=v, attention_mask=None, dropout_p=0.0, softmax_scale=None, causal=False)


def test_backends_lists_reference_sdpa_and_torch_as_usable():
    available = dispatch.backends()
    assert available["reference"] is None
    assert available["sdpa"] is None
    assert available["torch"] is None


def test_auto_prefers_sdpa_for_attention_and_torch_for_layer_norm():
    assert dispatch.choose("attention", "auto", _attention_inputs())[0] == "sdpa"
    x = torch.randn(3, 8)
    inputs = dict(x=x, weight=None, bias=None, eps=1e-5)
    assert dispatch.choose("layer_norm", "auto", inputs)[0] == "torch"


def test_auto_falls_back_when_sdpa_has_no_key():
    assert dispatch.choose("attention", "auto", _attention_inputs(sk=0))[0] == "reference"


def test_environment_overrides_auto_but_not_an_explicit_choice(monkeypatch):
    monkeypatch.setenv("SEMVLP_BACKEND", "reference")
    assert dispatch.choose("attention", "auto", _attention_inputs())[0] == "reference"
    assert dispatch.choose("attention", "sdpa", _attention_inputs())[0] == "sdpa"


def test_environment_with_unknown_backend_is_an_error(monkeypatch):
    monkeypatch.setenv("SEMVLP_BACKEND", "fastest")
    with pytest.raises(ValueError, match="backend: got 'fastest'"):
        ops.layer_norm(torch.randn(2, 4), None, None)


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"backend: got 'cudnn', expected 'auto' or one of"):
        ops.layer_norm(torch.randn(2, 4), None, None, backend="cudnn")


def test_forced_backend_that_cannot_run_lists_its_reasons():
    with pytest.raises(ops.BackendNotSupportedError, match="backend 'sdpa' cannot run layer_norm: sdpa does not "
                                                           "implement layer_norm"):
        ops.layer_norm(torch.randn(2, 4), None, None, backend="sdpa")
    inputs = _attention_inputs(sk=0)
    with pytest.raises(ops.BackendNotSupportedError, match="needs at least one key"):
        ops.attention(inputs["q"], inputs["k"], inputs["v"], backend="sdpa")


def test_explain_gives_every_backend_an_answer():
    reasons = dispatch.explain("bias_gelu", dict(x=torch.randn(2, 3), bias=torch.randn(3), approximate="none"))
    assert reasons["reference"] == []
    assert reasons["sdpa"] == ["sdpa does not implement bias_gelu"]


def _padded_case(dtype):
    inputs = _attention_inputs(batch=3, sq=11, sk=13, h=2, d=40, dtype=dtype)
    mask = torch.ones(3, 13, dtype=torch.bool)
    mask[0, 7:] = False
    mask[2] = False
    return inputs["q"], inputs["k"], inputs["v"], mask


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_reference_fp32_outputs_and_gradients(causal):
    q, k, v, mask = _padded_case(torch.float32)
    grads = []
    for backend in ("sdpa", "reference"):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = ops.attention(*leaves, attention_mask=mask, causal=causal, backend=backend)
        out.backward(torch.ones_like(out))
        grads.append([out] + [t.grad for t in leaves])
    for name, a, b in zip(("out", "dq", "dk", "dv"), *grads):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, atol=BACKEND_FP32_ATOL, rtol=0, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sdpa_low_precision_within_the_rule(dtype):
    q, k, v, mask = _padded_case(dtype)
    dout = torch.randn(q.shape).to(dtype)

    def run(fn, tensors):
        leaves = [t.clone().requires_grad_() for t in tensors]
        out = fn(*leaves)
        out.backward(dout.to(out.dtype))
        return [out] + [t.grad for t in leaves]

    ours = run(lambda q, k, v: ops.attention(q, k, v, attention_mask=mask, backend="sdpa"), (q, k, v))
    oracle = run(lambda q, k, v: reference.attention(q, k, v, attention_mask=mask), [t.float() for t in (q, k, v)])
    plain = run(lambda q, k, v: reference.attention(q, k, v, attention_mask=mask, upcast=False), (q, k, v))
    for i, name in enumerate(("out", "dq", "dk", "dv")):
        assert ours[i].dtype == dtype, name
        assert_within_rule(name, ours[i], oracle[i], plain[i], factor=1 + (i > 0) * (GRAD_FACTOR - 1))
    with torch.no_grad():  # inference: the CPU path without the float32 upcast of training
        inferred = ops.attention(q, k, v, attention_mask=mask, backend="sdpa")
    assert inferred.dtype == dtype
    assert_within_rule("out without grad", inferred, oracle[0], plain[0], factor=1)


def test_sdpa_varlen_matches_reference_with_empty_segments():
    g = torch.Generator().manual_seed(1)
    lengths_q, lengths_k = [3, 0, 5, 2], [4, 2, 0, 6]
    q = torch.randn(sum(lengths_q), 2, 16, generator=g, requires_grad=True)
    k = torch.randn(sum(lengths_k), 2, 16, generator=g, requires_grad=True)
    v = torch.randn(sum(lengths_k), 2, 16, generator=g, requires_grad=True)
    cu_q = torch.tensor([0, 3, 3, 8, 10], dtype=torch.int32)
    cu_k = torch.tensor([0, 4, 6, 6, 12], dtype=torch.int32)
    results = []
    for backend in ("sdpa", "reference"):
        out = ops.varlen_attention(q, k, v, cu_q, cu_k, 5, 6, causal=True, backend=backend)
        results.append([out] + list(torch.autograd.grad(out.sum(), (q, k, v))))
    for name, a, b in zip(("out", "dq", "dk", "dv"), *results):
        torch.testing.assert_close(a, b, atol=BACKEND_FP32_ATOL, rtol=0, msg=name)


# ---- resolution cache: a signature resolved once is not checked or chosen again ----------------------------------

def _norm_args(hidden=8, dtype=torch.float32):
    return torch.randn(3, hidden, dtype=dtype), torch.randn(hidden), torch.randn(hidden)


def test_a_resolved_signature_skips_the_choice_and_a_new_one_does_not(monkeypatch):
    dispatch.clear_cache()
    x, w, b = _norm_args()
    expected = ops.layer_norm(x, w, b)
    chosen = []
    monkeypatch.setattr(dispatch, "choose", lambda op, backend, inputs: chosen.append(op) or ("reference",
                        reference.layer_norm))
    torch.testing.assert_close(ops.layer_norm(x, w, b), expected)
    assert chosen == []
    ops.layer_norm(*_norm_args(hidden=16))
    ops.layer_norm(*_norm_args(dtype=torch.float64))
    with torch.no_grad():
        ops.layer_norm(x, w, b)
    assert chosen == ["layer_norm"] * 3


def test_environment_changes_reach_a_resolved_signature(monkeypatch):
    x, w, b = _norm_args()
    ops.layer_norm(x, w, b)
    monkeypatch.setenv("SEMVLP_BACKEND", "fastest")
    with pytest.raises(ValueError, match="backend: got 'fastest'"):
        ops.layer_norm(x, w, b)
    monkeypatch.setenv("SEMVLP_BACKEND", "sdpa")
    with pytest.raises(ops.BackendNotSupportedError, match="sdpa does not implement layer_norm"):
        ops.layer_norm(x, w, b)


def test_bad_arguments_fail_after_good_ones_were_resolved():
    x, w, b = _norm_args()
    ops.layer_norm(x, w, b)
    with pytest.raises(ValueError, match="weight: length"):
        ops.layer_norm(x, torch.randn(9), b)
    with pytest.raises(ValueError, match="x: expected a torch.Tensor, got list"):
        ops.layer_norm(x.tolist(), w, b)
    with pytest.raises(ValueError, match="eps: expected a finite positive float"):
        ops.layer_norm(x, w, b, eps=[1e-5])  # unhashable: never cached, always checked
    with pytest.raises(ValueError, match="dropout_p: expected a float in"):
        ops.add_layer_norm(x, x, w, b, dropout_p=1.0)


def test_integer_mask_values_are_checked_on_every_call():
    inputs = _attention_inputs()
    mask = torch.ones(2, 7, dtype=torch.int64)
    ops.attention(inputs["q"], inputs["k"], inputs["v"], attention_mask=mask)
    mask[1, 3] = 2
    with pytest.raises(ValueError, match="attention_mask: expected only 0"):
        ops.attention(inputs["q"], inputs["k"], inputs["v"], attention_mask=mask)


def test_offsets_are_checked_on_every_call_unless_told_otherwise():
    q = torch.randn(6, 2, 16)
    good, bad = torch.tensor([0, 2, 6], dtype=torch.int32), torch.tensor([0, 5, 6], dtype=torch.int32)
    ops.varlen_attention(q, q, q, good, good, 4, 4)
    with pytest.raises(ValueError, match="max_seqlen_q: is 4, but cu_seqlens_q holds a segment of length 5"):
        ops.varlen_attention(q, q, q, bad, good, 4, 4)
    ops.varlen_attention(q, q, q, good, good, 4, 4, check_offsets=False)


def test_registering_a_backend_clears_the_cache():
    ops.layer_norm(*_norm_args())
    assert dispatch.RESOLVED
    dispatch.register_backend(dispatch._BACKENDS["reference"])
    assert not dispatch.RESOLVED


def test_the_cpu_kernels_of_this_torch_zero_rows_without_keys():
    # What lets the sdpa backend skip its fix-up on the CPU; the comparisons with the reference above cover the
    # values (a batch row whose keys are all padding).
    assert dispatch.backends()["sdpa"] is None
    from semvlp.ops.backends import sdpa
    assert sdpa.CPU_ZEROES_ROWS_WITHOUT_KEYS[(torch.float32, False)]
    assert sdpa._probe_zeroes_rows_without_keys(torch.float32, 0.0)
