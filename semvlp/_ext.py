"""The one place that imports the CUDA extension `semvlp._C` (built from csrc/ by setup.py).

Importing `semvlp._C` registers the `torch.ops.semvlp.cuda_*` ops. Everything else asks this module whether
they can run (`unavailable()`) and gets them through `ops()`.
"""

from __future__ import annotations

import functools

import torch

try:
    from . import _C
except ModuleNotFoundError as exc:
    _C = None
    _IMPORT_ERROR = (f"not built: semvlp._C is missing ({exc}); install semvlp where a CUDA toolkit (nvcc) and a "
                     "CUDA build of torch are present, without SEMVLP_SKIP_CUDA_BUILD=1 (README: CUDA extension)")
except (ImportError, OSError) as exc:
    _C = None
    _IMPORT_ERROR = f"not built for this torch: importing semvlp._C failed ({exc}); reinstall semvlp"
else:
    _IMPORT_ERROR = None


def build_error() -> str | None:
    """None when semvlp._C is loaded, else why not (starting with "not built")."""
    return _IMPORT_ERROR


@functools.cache
def _device_error() -> str | None:
    if not torch.cuda.is_available():
        return "no GPU (torch.cuda.is_available() is False)"
    image_error = _C.kernel_image_error()
    if image_error is not None:
        major, minor = torch.cuda.get_device_capability()
        return (f"semvlp._C has no kernels for this GPU (sm_{major}{minor}): {image_error}; reinstall with "
                f"SEMVLP_CUDA_ARCHS including {major}{minor}")
    return None


def unavailable() -> str | None:
    """None when the CUDA kernels can run here, else the reason: not built, no GPU, or built for another GPU."""
    return build_error() or _device_error()


def ops():
    """The namespace `torch.ops.semvlp` holding the cuda_* ops; RuntimeError with the reason if not built."""
    if _C is None:
        raise RuntimeError(f"semvlp CUDA kernels: {_IMPORT_ERROR}")
    return torch.ops.semvlp
