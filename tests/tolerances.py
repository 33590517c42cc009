"""Every tolerance of the test-suite, and the rule that uses them.

The rule (FlashAttention's test-suite): a backend's max error against a float32 reference is at most
`factor` times the max error of plain PyTorch computing in the same low precision, plus a floor of about
a few rounding steps of the dtype. Outputs use OUTPUT_FACTOR, gradients GRAD_FACTOR.
"""

from __future__ import annotations

import torch

OUTPUT_FACTOR = 2.0
GRAD_FACTOR = 3.0
FLOOR = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}

# Independent computations of the same math in float64 / float32 (reference vs PyTorch's own ops).
FP64_ATOL = 1e-10
FP32_ATOL = 2e-5
# HF BERT import: encode_text vs transformers.BertModel, fp32.
HF_IMPORT_ATOL = 1e-5
# Two backends on the same fp32 inputs (e.g. sdpa vs reference).
BACKEND_FP32_ATOL = 2e-5
# Drop-in layers against their Hugging Face / torch.nn originals, fp32 on the CPU (issue: <= 1e-5 on outputs).
PATCH_OUTPUT_ATOL = 1e-5
PATCH_GRAD_ATOL = 1e-5
TRANSFORMER_LAYER_ATOL = 1e-5
LAYER_NORM_DROPIN_ATOL = 1e-5
# The same comparisons on a GPU in float32 (other kernels, other summation orders; TF32 stays off).
PATCH_GPU_FP32_ATOL = 1e-4


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0


def assert_within_rule(name: str, actual: torch.Tensor, reference: torch.Tensor, baseline: torch.Tensor,
                       *, factor: float = OUTPUT_FACTOR) -> None:
    """actual: the backend in low precision; reference: fp32 oracle; baseline: PyTorch in the same low precision."""
    if actual.shape != reference.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != reference {tuple(reference.shape)}")
    if not torch.isfinite(actual).all():
        raise AssertionError(f"{name}: non-finite values")
    err = max_error(actual, reference)
    allowed = factor * max_error(baseline, reference) + FLOOR[actual.dtype]
    if err > allowed:
        raise AssertionError(f"{name}: max error {err:.3e} > allowed {allowed:.3e} "
                             f"({factor} x baseline error + floor {FLOOR[actual.dtype]:.1e})")

# Per-step losses of DeepSpeed runs that read the same global batches with a different rank layout (2 ranks vs
# one process with twice the gradient accumulation): they differ only in the order of gradient summation (fp32)
# and in where bf16 gradients are rounded (bf16). Relative tolerance on each step's total loss.
DISTRIBUTED_LOSS_RTOL = {
    torch.float32: 1e-5,
    torch.bfloat16: 2e-2,
}

# Dropout keep rates: |observed - (1 - p)| within this many binomial standard deviations.
KEEP_RATE_SIGMAS = 5.0
