"""Which floating-point precision a run computes in, chosen from the hardware unless the user names one.

`--precision auto` (the default of every command) picks bf16 only where the hardware runs it natively: a CUDA
GPU with bf16 units (compute capability 8.0 and up), or a CPU with AVX-512 BF16 or AMX-BF16 under torch's
AVX-512 kernels. Elsewhere it picks fp32: on an AVX2-only CPU bf16 is emulated and several times slower than
fp32, and pre-Ampere GPUs emulate bf16 too (fp16 with loss scaling is there for those who ask for it).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Precision:
    name: str      # bf16 | fp16 | fp32
    reason: str    # why: the hardware, the flag or the config file

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def describe(self) -> str:
        """The line a command prints at its start."""
        return f"precision: {self.name} ({self.reason})"


def cpu_bf16_support() -> tuple[bool, str]:
    """(whether this CPU computes bf16 natively, a phrase saying why). Native needs the AVX-512 BF16 or AMX-BF16
    instructions and torch's AVX-512 kernels (ATEN_CPU_CAPABILITY=avx2 forces the emulated path)."""
    capability = torch.backends.cpu.get_cpu_capability()
    features = [name for name, probe in (("AVX-512 BF16", "_is_avx512_bf16_supported"),
                                         ("AMX", "_is_amx_tile_supported"))
                if getattr(torch.cpu, probe, lambda: False)()]
    if not features:
        return False, f"this CPU has no native bf16: {capability}"
    if not capability.startswith("AVX512"):
        return False, f"torch runs its {capability} kernels here (ATEN_CPU_CAPABILITY), which emulate bf16"
    return True, "this CPU runs bf16 natively: " + " + ".join([capability, *features])


def cuda_bf16_support(device: torch.device) -> tuple[bool, str]:
    """(whether this GPU computes bf16 natively, its name). Emulated bf16 on older GPUs does not count."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False), torch.cuda.get_device_name(device)


def auto_precision(device) -> Precision:
    """bf16 where `device` runs it natively, fp32 otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        native, name = cuda_bf16_support(device)
        return (Precision("bf16", f"{name} supports bf16") if native else
                Precision("fp32", f"{name} has no native bf16; --precision fp16 for mixed precision"))
    native, why = cpu_bf16_support()
    return Precision("bf16" if native else "fp32", why)


def resolve_precision(requested: str, device, source: str | None = None) -> Precision:
    """The precision to run in on `device`: `requested` ("bf16", "fp16", "fp32") wins, "auto" asks the hardware.
    fp16 needs a CUDA GPU; bf16 asked for on a CPU that emulates it runs, with a warning in the reason.
    `source` says who asked (default: the --precision flag)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {requested!r}")
    device = torch.device(device)
    if requested == "auto":
        return auto_precision(device)
    if requested == "fp16" and device.type != "cuda":
        raise ValueError("precision: fp16 needs a CUDA GPU (loss-scaled fp16 is a GPU technique); use bf16 or fp32 "
                         f"on {device.type}")
    reason = source or f"--precision {requested}"
    if requested == "bf16" and device.type == "cpu":
        native, why = cpu_bf16_support()
        if not native:
            reason += f"; emulated, several times slower than fp32 ({why})"
    return Precision(requested, reason)


def autocast(precision: Precision, device) -> contextlib.AbstractContextManager:
    """Mixed precision for plain PyTorch code (fine-tuning, evaluation, the demo): fp32 weights, matrix products
    in the low precision; no context at all for fp32. Wrap single forward passes, never a training loop: autocast
    keeps the weights it cast until the outermost context exits, so later steps would see stale weights."""
    if precision.name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, precision.dtype)
