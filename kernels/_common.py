"""Small helpers shared by the kernel launchers."""

import os

import torch

# fp32 inputs get exact fp32 products (a GPU's default for fp32 is TF32); 16-bit inputs ignore the setting.
DOT_PRECISION = {torch.float32: "ieee", torch.float16: "tf32", torch.bfloat16: "tf32"}


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def autotune_enabled() -> bool:
    """SEMVLP_TRITON_AUTOTUNE=0 replaces autotuning by fixed configs (fast start-up, e.g. in tests)."""
    return os.environ.get("SEMVLP_TRITON_AUTOTUNE", "1") != "0"


def upcast_in_kernel(t: torch.Tensor) -> bool:
    """The interpreter computes bf16 arithmetic on raw bits, so kernels cast bf16 loads to fp32 there."""
    return interpreting() and t.dtype == torch.bfloat16


def launch_int32(value: int) -> int:
    """A value in [0, 2**32) as the signed int32 with the same bits (kernels bitcast it back to uint32)."""
    if not 0 <= value < 2**32:
        raise ValueError(f"expected 0 <= value < 2**32, got {value}")
    return value - 2**32 if value >= 2**31 else value


def num_programs_cap(device: torch.device) -> int:
    """An upper bound on useful persistent programs: a few per SM on a GPU, a handful under the interpreter."""
    if device.type != "cuda":
        return 4
    return 4 * torch.cuda.get_device_properties(device).multi_processor_count


class Launch:
    """A kernel with its grid, arguments and launch options; built by a launcher, run or compiled later.

    An autotuned kernel gets its grid as a function of the chosen config (meta -> grid) and num_warps =
    num_stages = None: its configs set them."""

    def __init__(self, kernel, grid, args: dict, num_warps: int | None = 4, num_stages: int | None = 1):
        self.kernel, self.grid, self.args = kernel, grid, args
        self.num_warps, self.num_stages = num_warps, num_stages

    def run(self) -> None:
        options = {"num_warps": self.num_warps, "num_stages": self.num_stages}
        self.kernel[self.grid](**self.args, **{name: value for name, value in options.items() if value is not None})
