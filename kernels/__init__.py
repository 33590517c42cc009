"""Triton kernels of semvlp, installed as `semvlp.kernels` (one op per module)."""
