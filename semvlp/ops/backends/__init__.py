"""The backends of `semvlp.ops`, one module or package each; importing this package registers all of them with
`semvlp.ops.dispatch`.

- `reference`: pure PyTorch, float32 compute (float64 stays float64); the oracle every other backend is tested
  against, and the path that runs everything everywhere.
- `torch`: PyTorch's own fused LayerNorm and GELU kernels.
- `sdpa`: PyTorch's `scaled_dot_product_attention`.
- `triton`: the Triton kernels of `semvlp.kernels` (rules in `triton/__init__.py`, one module per op with its
  registered custom ops and autograd.Function).
- `cuda`: the CUDA kernels of `semvlp._C`, laid out like `triton`.
"""

from . import cuda, reference, sdpa, torch, triton  # noqa: F401  (imported for their registration)
