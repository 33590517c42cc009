"""A store-side cast shared by the kernels."""

import triton
import triton.language as tl


@triton.jit
def cast_for_store(x, dtype: tl.constexpr, ROUND_BF16: tl.constexpr):
    """x (float32) as `dtype`. ROUND_BF16 first rounds to the nearest bf16 (ties to even) in integer
    arithmetic: Triton's interpreter truncates fp32 -> bf16 where a GPU rounds, so the CPU tests would see
    errors of a whole bf16 step. Kernels set it only when interpreting bf16."""
    if ROUND_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)
