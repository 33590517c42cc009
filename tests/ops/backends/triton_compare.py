"""Runs a backend op and its reference on the same inputs and checks outputs and every gradient with the
tolerance rule: the backend in the inputs' dtype against a float64 oracle, allowed a multiple of the error of
plain PyTorch (the reference without upcast) in that same dtype, plus the dtype's floor."""

from __future__ import annotations

import torch

from tolerances import GRAD_FACTOR, OUTPUT_FACTOR, assert_within_rule


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _leaves(inputs: dict, dtype=None) -> dict:
    """Float tensors become fresh leaves that require grad (cast to `dtype` when given); others pass through."""
    leaves = {}
    for name, t in inputs.items():
        if isinstance(t, torch.Tensor) and t.dtype.is_floating_point:
            leaves[name] = t.detach().to(dtype or t.dtype).requires_grad_()
        else:
            leaves[name] = t
    return leaves


def _run(fn, leaves: dict, cotangents):
    outs = _as_tuple(fn(**leaves))
    if cotangents is None:
        gen = torch.Generator().manual_seed(1234)
        cotangents = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device) for o in outs]
    loss = sum((o.double() * c).sum() for o, c in zip(outs, cotangents))
    float_leaves = {n: t for n, t in leaves.items() if isinstance(t, torch.Tensor) and t.requires_grad}
    grads = torch.autograd.grad(loss, list(float_leaves.values()), allow_unused=True)
    grads = {n: torch.zeros_like(t) if g is None else g for (n, t), g in zip(float_leaves.items(), grads)}
    return [o.detach() for o in outs], grads, cotangents


def check_against_reference(backend_fn, reference_fn, inputs: dict) -> dict:
    """backend_fn(**inputs); reference_fn(**inputs, upcast=False). Returns the backend's outputs and grads."""
    outs, grads, cotangents = _run(backend_fn, _leaves(inputs), None)
    oracle_outs, oracle_grads, _ = _run(lambda **kw: reference_fn(**kw, upcast=False),
                                        _leaves(inputs, torch.float64), cotangents)
    base_outs, base_grads, _ = _run(lambda **kw: reference_fn(**kw, upcast=False), _leaves(inputs), cotangents)
    for i, (actual, oracle, base) in enumerate(zip(outs, oracle_outs, base_outs)):
        assert actual.dtype == base.dtype, f"output {i}: dtype {actual.dtype}, expected {base.dtype}"
        assert_within_rule(f"output {i}", actual, oracle, base, factor=OUTPUT_FACTOR)
    for name, actual in grads.items():
        assert actual.dtype == inputs[name].dtype, f"d{name}: dtype {actual.dtype}, expected {inputs[name].dtype}"
        assert_within_rule(f"d{name}", actual, oracle_grads[name], base_grads[name], factor=GRAD_FACTOR)
    return {"outputs": outs, "grads": grads}
