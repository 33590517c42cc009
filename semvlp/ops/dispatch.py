"""Backend choice for every functional op, with readable reasons.

A backend is registered once with a priority and, per op, a function that lists why it cannot run the
given inputs (empty list = supported) plus the implementation. `backend="auto"` takes the highest-priority
backend with no reasons; a forced backend that cannot run raises one BackendNotSupportedError listing all
of them. The environment variable SEMVLP_BACKEND replaces "auto" (not an explicit choice).

Auto order (priority): cuda > triton > sdpa > torch > reference. A backend's `auto_reasons` keep `auto` away
from inputs where another backend measured faster; the backend's module holds the measurements behind its
rule. Backends whose kernels draw dropout from the counter-based Philox stream of `semvlp.ops.rng` say so
(`philox_dropout`), and the public op then draws the call's (seed, offset) for them.

The public ops resolve a call once per signature (`resolve`, then `RESOLVED[signature]`). A signature holds the
op, the requested backend, grad mode, `environment()` (the environment variables that dispatch and the backends
read: SEMVLP_BACKEND, `Backend.env_vars`), whether autograd records the call (`records_grad` over every tensor argument:
all that the backends' rules read of requires_grad), each tensor argument's dtype, device and shape and the other
arguments' values: all that the argument checks and the backends' rules read. A call whose signature was resolved
before skips both; checks of tensor values (integer masks, offsets) still run on every call. A backend may also
give, per op, a `specialized` implementation for one signature: it takes the op's tensor arguments positionally
(the order each public op documents in its source) with everything else bound, so that the op calls plain PyTorch
with no keyword building and no per-call decisions.
Registering a backend clears the cache; `clear_cache()` does so after a change dispatch cannot see (a backend's
availability patched in a test).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import torch

OPS = ("attention", "varlen_attention", "layer_norm", "add_layer_norm", "bias_gelu")


class BackendNotSupportedError(ValueError):
    """A forced backend cannot run the given inputs; the message lists every reason."""


@dataclass
class Backend:
    name: str
    priority: int
    # Returns None when usable on this machine, else the reason (e.g. "not built", "no GPU").
    unavailable: Callable[[], str | None]
    # op name -> (reasons(**inputs) -> list[str], implementation)
    ops: dict[str, tuple[Callable[..., list[str]], Callable]] = field(default_factory=dict)
    # True: the implementations take `dropout_seed=(seed, offset)` (drawn by the public op, see semvlp.ops.rng)
    # whenever dropout_p > 0; the others draw from torch's generator themselves.
    philox_dropout: bool = False
    # (op, inputs) -> reasons that keep `auto` from choosing this backend for these inputs; a forced choice
    # ignores them (e.g. Triton's CPU interpreter runs only when asked for).
    auto_reasons: Callable[[str, dict], list[str]] | None = None
    # Environment variables this backend's rules read (they become part of every resolved signature).
    env_vars: tuple[str, ...] = ()
    # op name -> specialise(**inputs) -> the implementation for calls of exactly this signature, taking the op's
    # tensor arguments positionally, or None (then the op calls `ops[op]`'s implementation with keywords).
    specialized: dict[str, Callable[..., Callable | None]] = field(default_factory=dict)

    def not_supported_reasons(self, op: str, inputs: dict) -> list[str]:
        reason = self.unavailable()
        if reason is not None:
            return [reason]
        if op not in self.ops:
            return [f"{self.name} does not implement {op}"]
        return self.ops[op][0](**inputs)


_BACKENDS: dict[str, Backend] = {}
_BY_PRIORITY: list[Backend] = []  # what `auto` tries, highest priority first
ENV_VAR = "SEMVLP_BACKEND"


def register_backend(backend: Backend) -> None:
    for op in backend.ops:
        if op not in OPS:
            raise ValueError(f"backend {backend.name!r}: unknown op {op!r}, expected one of {OPS}")
    _BACKENDS[backend.name] = backend
    _BY_PRIORITY[:] = sorted(_BACKENDS.values(), key=lambda b: -b.priority)
    names = dict.fromkeys([ENV_VAR, *(v for b in _BY_PRIORITY for v in b.env_vars)])
    _ENV_KEYS[:] = [_encode_env_key(name) for name in names]
    global environment
    environment = _environment_reader(tuple(_ENV_KEYS))
    clear_cache()


# ---- resolution cache ----------------------------------------------------------------------------------------

# os.environ.get re-encodes the name on every call (about as long as a small PyTorch op takes); the mapping
# behind os.environ, read with pre-encoded names, sees every change made through os.environ just the same.
_ENVIRON = getattr(os.environ, "_data", None)
_ENV_KEYS: list = []
RESOLVED: dict[tuple, tuple[str, Callable, bool, Callable | None]] = {}
MAX_RESOLVED = 4096  # signatures kept; the cache starts over when full (shapes of packed batches vary)


def _encode_env_key(name: str):
    return os.environ.encodekey(name) if _ENVIRON is not None else name


def _environment_reader(keys: tuple) -> Callable[[], tuple]:
    """A function returning the values of `keys` in the environment; unrolled for the usual two names (a tuple
    of two lookups costs a third of `tuple(map(...))`, and every op call reads it)."""
    get = _ENVIRON.get if _ENVIRON is not None else os.environ.get
    if len(keys) == 2:
        first, second = keys
        return lambda: (get(first), get(second))
    return lambda: tuple(map(get, keys))


environment = _environment_reader(())
"""The values of the environment variables that dispatch and the backends read; part of every signature."""


# What every public op reads first: under torch.compile nothing is cached or skipped (the tracer sees the checks
# and the choice as in eager); grad mode is part of every signature.
is_compiling = torch.compiler.is_compiling
is_grad_enabled = torch.is_grad_enabled


def clear_cache() -> None:
    """Forget every resolved signature (after a change of backend availability dispatch cannot see)."""
    RESOLVED.clear()


def resolve(key: tuple | None, op: str, backend: str, inputs: dict) -> tuple[str, Callable, bool, Callable | None]:
    """(backend name, implementation, philox_dropout, specialized implementation or None) for a call whose
    arguments passed their checks; remembered as `RESOLVED[key]` (None: not remembered)."""
    name, impl = choose(op, backend, inputs)
    chosen = _BACKENDS[name]
    # Not for a patched choice, nor where the op must draw the Philox seeds.
    own = chosen.ops.get(op, (None, None))[1] is impl and not chosen.philox_dropout
    specialize = chosen.specialized.get(op) if own else None
    found = (name, impl, chosen.philox_dropout, None if specialize is None else specialize(**inputs))
    if key is not None:
        if len(RESOLVED) >= MAX_RESOLVED:
            RESOLVED.clear()
        try:
            RESOLVED[key] = found
        except TypeError:  # an unhashable argument: this call is resolved every time
            pass
    return found


def records_grad(*tensors) -> bool:
    """Whether autograd records a call on these inputs: grad mode is on and one of them requires grad (other
    values, None included, are ignored). Backends use it where training and inference want different paths."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def backends() -> dict[str, str | None]:
    """Every registered backend: None when usable on this machine, else the reason it is not."""
    return {b.name: b.unavailable() for b in _BY_PRIORITY}


def _requested(backend: str) -> str:
    if not isinstance(backend, str):
        raise ValueError(f"backend: expected a string, got {type(backend).__name__}")
    if backend == "auto":
        backend = os.environ.get(ENV_VAR, "auto")
    if backend != "auto" and backend not in _BACKENDS:
        raise ValueError(f"backend: got {backend!r}, expected 'auto' or one of {sorted(_BACKENDS)}")
    return backend


def choose(op: str, backend: str, inputs: dict) -> tuple[str, Callable]:
    """The (name, implementation) that runs `op` on `inputs` for the requested backend."""
    name = _requested(backend)
    if name != "auto":
        reasons = _BACKENDS[name].not_supported_reasons(op, inputs)
        if reasons:
            raise BackendNotSupportedError(f"backend {name!r} cannot run {op}: " + "; ".join(reasons))
        return name, _BACKENDS[name].ops[op][1]
    tried = []
    for candidate in _BY_PRIORITY:
        reasons = candidate.not_supported_reasons(op, inputs)
        if not reasons and candidate.auto_reasons is not None:
            reasons = candidate.auto_reasons(op, inputs)
        if not reasons:
            return candidate.name, candidate.ops[op][1]
        tried.append(f"{candidate.name}: {'; '.join(reasons)}")
    raise BackendNotSupportedError(f"no backend can run {op}: " + " | ".join(tried))


def philox_dropout(name: str) -> bool:
    """Whether backend `name` takes the public op's `dropout_seed` (see `Backend.philox_dropout`)."""
    return _BACKENDS[name].philox_dropout


def explain(op: str, inputs: dict) -> dict[str, list[str]]:
    """For every backend, why it cannot run `op` on `inputs` (empty list = it can)."""
    return {name: b.not_supported_reasons(op, inputs) for name, b in _BACKENDS.items()}
