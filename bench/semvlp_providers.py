"""Providers for every semvlp backend, so a new backend (e.g. `cuda` once built) is benchmarked automatically.

`backend_providers(op, call)` gives one provider per registered backend, named `semvlp-<backend>`. Each asks
dispatch whether that backend can run the case's inputs and raises `harness.Unsupported` with dispatch's
reasons when it cannot (not installed, no GPU, unsupported shape...), never falling back to another backend.
"""

from __future__ import annotations

from typing import Any, Callable

from bench import harness
from semvlp.ops import dispatch


def backend_names() -> list[str]:
    """Registered backends, highest priority first."""
    return list(dispatch.backends())


def backend_providers(op: str, call: Callable[[Any, str], Callable[[], Any]],
                      dispatch_inputs: Callable[[Any], dict], prefix: str = "semvlp") -> dict[str, Callable]:
    """{"<prefix>-<backend>": provider}: provider(inp) checks dispatch, then returns call(inp, backend).

    dispatch_inputs(inp) gives the op's inputs as dispatch sees them; it may raise harness.Unsupported.
    """
    def provider_for(backend: str):
        def provider(inp):
            reasons = dispatch.explain(op, dispatch_inputs(inp))[backend]
            if reasons:
                raise harness.Unsupported("; ".join(reasons))
            return call(inp, backend)
        return provider

    return {f"{prefix}-{name}": provider_for(name) for name in backend_names()}
