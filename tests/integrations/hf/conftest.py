"""Fixtures shared by the Hugging Face integration tests."""

import pytest

from semvlp import ops


@pytest.fixture
def op_calls(monkeypatch):
    """Counts the calls of the fused ops the patched pieces must go through."""
    counts = {name: 0 for name in ("attention", "bias_gelu", "add_layer_norm", "layer_norm")}
    for name in counts:
        original = getattr(ops, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(ops, name, counted)
    return counts
