"""Argument checks shared by the functional ops.

Every check raises ValueError naming the argument, what it got and what was expected, so that a bad call
fails at the public entry and never deep inside a kernel.
"""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def check_tensor(name: str, t, *, ndim: int | None = None, dtypes=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d tensor, got {describe(t)}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = ", ".join(str(d) for d in dtypes)
        raise ValueError(f"{name}: expected dtype in ({allowed}), got {t.dtype}")


def check_same(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...], what: str) -> None:
    """All tensors agree on `what` ("dtype" or "device")."""
    values = [getattr(t, what) for t in tensors]
    if any(v != values[0] for v in values[1:]):
        got = ", ".join(f"{n}={v}" for n, v in zip(names, values))
        raise ValueError(f"{'/'.join(names)}: expected one {what} for all, got {got}")


def check_dim(name: str, got: int, expected: int, what: str) -> None:
    if got != expected:
        raise ValueError(f"{name}: {what} is {got}, expected {expected}")


def check_probability(name: str, p) -> None:
    if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1), got {p!r}")


def check_qkv(q, k, v, layout_ndim: int) -> None:
    """q/k/v of one attention call: same rank, dtype, device, heads and head dim; k and v same length."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, ndim=layout_ndim, dtypes=FLOAT_DTYPES)
    check_same(("q", "k", "v"), (q, k, v), "dtype")
    check_same(("q", "k", "v"), (q, k, v), "device")
    check_dim("k", k.shape[-2], q.shape[-2], "number of heads")
    check_dim("v", v.shape[-2], q.shape[-2], "number of heads")
    check_dim("k", k.shape[-1], q.shape[-1], "head dim")
    check_dim("v", v.shape[-1], q.shape[-1], "head dim")
    check_dim("v", v.shape[-3], k.shape[-3], "number of keys (dim -3)")
    if layout_ndim == 4:
        check_dim("k", k.shape[0], q.shape[0], "batch size")
        check_dim("v", v.shape[0], q.shape[0], "batch size")


def normalize_attention_mask(attention_mask, batch: int, seqlen_k: int, device) -> torch.Tensor | None:
    """Checks a (batch, seqlen_k) key-padding mask (bool or 0/1) and returns it as bool."""
    if attention_mask is None:
        return None
    check_tensor("attention_mask", attention_mask, ndim=2)
    if tuple(attention_mask.shape) != (batch, seqlen_k):
        raise ValueError(
            f"attention_mask: expected shape (batch, seqlen_k) = ({batch}, {seqlen_k}), "
            f"got {tuple(attention_mask.shape)}"
        )
    if attention_mask.device != device:
        raise ValueError(f"attention_mask: expected device {device}, got {attention_mask.device}")
    if attention_mask.dtype == torch.bool:
        return attention_mask
    if attention_mask.dtype.is_floating_point or attention_mask.dtype.is_complex:
        raise ValueError(f"attention_mask: expected bool or integer 0/1 values, got dtype {attention_mask.dtype}")
    return integer_mask_as_bool(attention_mask)


def integer_mask_as_bool(attention_mask: torch.Tensor) -> torch.Tensor:
    """An integer key-padding mask as bool, once its values are 0/1 (reading them is a host sync on a GPU: pass
    a bool mask to skip it)."""
    if ((attention_mask != 0) & (attention_mask != 1)).any():
        raise ValueError("attention_mask: expected only 0 (padding) and 1 (real token) values")
    return attention_mask.bool()


def check_cu_seqlens(name: str, cu_seqlens, total: int, max_seqlen, max_name: str, device) -> None:
    """int32 (n_segments + 1,) offsets: start at 0, never decrease, end at `total`, segments <= max_seqlen."""
    check_tensor(name, cu_seqlens, ndim=1)
    if cu_seqlens.dtype != torch.int32:
        raise ValueError(f"{name}: expected dtype torch.int32, got {cu_seqlens.dtype}")
    if cu_seqlens.device != device:
        raise ValueError(f"{name}: expected device {device} (that of q/k/v), got {cu_seqlens.device}")
    if cu_seqlens.numel() < 2:
        raise ValueError(f"{name}: expected at least 2 offsets (n_segments + 1), got {cu_seqlens.numel()}")
    if not isinstance(max_seqlen, int) or max_seqlen < 0:
        raise ValueError(f"{max_name}: expected a non-negative int, got {max_seqlen!r}")
    # One host transfer of the offsets; the checks themselves are cheap.
    offsets = cu_seqlens.tolist()
    if offsets[0] != 0:
        raise ValueError(f"{name}: expected the first offset to be 0, got {offsets[0]}")
    lengths = [b - a for a, b in zip(offsets, offsets[1:])]
    if min(lengths) < 0:
        raise ValueError(f"{name}: expected non-decreasing offsets, got {offsets}")
    if offsets[-1] != total:
        raise ValueError(f"{name}: last offset is {offsets[-1]}, expected the token count {total}")
    if max(lengths) > max_seqlen:
        raise ValueError(f"{max_name}: is {max_seqlen}, but {name} holds a segment of length {max(lengths)}")


def check_normalized_shape(x, weight, bias) -> None:
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError(f"x: expected at least 1 dimension, got {describe(x)}")
    hidden = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        check_tensor(name, t, ndim=1, dtypes=FLOAT_DTYPES)
        check_dim(name, t.shape[0], hidden, "length (the last dim of x)")
        if t.device != x.device:
            raise ValueError(f"{name}: expected device {x.device}, got {t.device}")


def check_like(name: str, t, ref: torch.Tensor, ref_name: str, *, same_dtype: bool = True) -> None:
    check_tensor(name, t, dtypes=FLOAT_DTYPES)
    if t.shape != ref.shape:
        raise ValueError(f"{name}: expected shape {tuple(ref.shape)} (that of {ref_name}), got {tuple(t.shape)}")
    if same_dtype:
        check_same((ref_name, name), (ref, t), "dtype")
    check_same((ref_name, name), (ref, t), "device")


def check_bias(name: str, bias, x: torch.Tensor) -> None:
    check_tensor(name, bias, ndim=1, dtypes=FLOAT_DTYPES)
    check_dim(name, bias.shape[0], x.shape[-1], "length (the last dim of x)")
    check_same(("x", name), (x, bias), "device")
