"""Loading DeepSpeed checkpoint files without running code from them.

DeepSpeed 0.19 reads its checkpoint files with `torch.load(weights_only=False)`, which unpickles arbitrary
objects: a crafted file in a checkpoint folder would run code on resume or export. Here every such read is
`torch.load(weights_only=True)`, which builds only tensors, plain containers and the few classes allow-listed
below: the records DeepSpeed's ZeRO and loss-scaling optimizers put into their state (a dataclass of two
integers, an enum, loss-scaler state holders whose constructors only store numbers).

- `WeightsOnlyCheckpointEngine` wraps the engine's checkpoint engine (`build_engine` installs it), so
  `engine.load_checkpoint` reads every file through it.
- `weights_only_loads()` makes every `torch.load` inside it weights-only (torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD
  switch), for DeepSpeed code that calls `torch.load` itself (`zero_to_fp32`); `check_weights_only` names the
  offending file beforehand.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import zipfile

import torch
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils.tensor_fragment import fragment_address

# What DeepSpeed's ZeRO 1-3 optimizer states hold besides tensors and plain data (the fp32 and bf16 files list
# the first three in torch.serialization.get_unsafe_globals_in_checkpoint; fp16 ones keep a DynamicLossScaler).
DEEPSPEED_SAFE_GLOBALS = [fragment_address, ZeroStageEnum, LossScaler, DynamicLossScaler]

_FORCE, _FORCE_NOT = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class UnsafeCheckpointError(ValueError):
    """A checkpoint file holds objects that only a code-running unpickler would build."""


def _refusal(path, detail: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path}: refused to load: it holds Python objects beyond tensors and plain data ({detail}). Checkpoints "
        "written by semvlp never do; this file was altered or written by other software, and loading it could "
        "run code")


def load_weights_only(path, map_location=None):
    """torch.load of one checkpoint file, weights-only, with DeepSpeed's harmless globals allowed."""
    try:
        with torch.serialization.safe_globals(DEEPSPEED_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise _refusal(path, _gist(error)) from None


def check_weights_only(path) -> None:
    """Raises UnsafeCheckpointError naming `path` if its pickle refers to a global outside the allow-list.
    Reads only the pickle, not the tensor data. Files in torch's legacy (non-zip) format are not inspected here;
    their load is weights-only like every other."""
    if not zipfile.is_zipfile(path):
        return
    with torch.serialization.safe_globals(DEEPSPEED_SAFE_GLOBALS):
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except (ValueError, RuntimeError, pickle.UnpicklingError) as error:
            raise _refusal(path, _gist(error)) from None
    if unsafe:
        raise _refusal(path, "globals " + ", ".join(sorted(unsafe)))


@contextlib.contextmanager
def weights_only_loads(folder):
    """Every torch.load inside is weights-only, whatever its caller passes, with DeepSpeed's harmless globals
    allowed; a refusal names `folder`, the checkpoint being read. It sets environment variables of the process
    for its duration (not for threads running meanwhile)."""
    saved = {name: os.environ.get(name) for name in (_FORCE, _FORCE_NOT)}
    os.environ[_FORCE] = "1"
    os.environ.pop(_FORCE_NOT, None)  # torch refuses to run with both set
    try:
        with torch.serialization.safe_globals(DEEPSPEED_SAFE_GLOBALS):
            yield
    except pickle.UnpicklingError as error:
        raise _refusal(f"{folder}: one of its files", _gist(error)) from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _gist(error: Exception) -> str:
    """The gist of torch's multi-paragraph refusal: the global it met, else its first line."""
    text = str(error)
    found = re.search(r"GLOBAL (\S+)", text)
    if found:
        return f"global {found.group(1)}"
    return next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)


class WeightsOnlyCheckpointEngine:
    """Wraps the checkpoint engine DeepSpeed picked (torch, fast or decoupled writer): saves through it, loads
    weights-only. DeepSpeed has no setting for its own engine class; `install` replaces the engine's attribute."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        if name == "inner":  # not yet set (never delegate it: that would recurse)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def load(self, path: str, map_location=None):
        return load_weights_only(path, map_location=map_location)

    @classmethod
    def install(cls, engine) -> None:
        if not isinstance(engine.checkpoint_engine, cls):
            engine.checkpoint_engine = cls(engine.checkpoint_engine)
