"""The autotuner's config pruning, as the autotuner calls it (launchers pass every argument by keyword)."""

import torch

from semvlp.kernels import attention


def _blocks(configs):
    return sorted((c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in configs)


def test_prune_reads_keyword_arguments_and_picks_the_length_regime():
    q = torch.empty(1, 1, 1, 64, dtype=torch.bfloat16)
    short = attention._prune(attention.FWD_CONFIGS, {}, Q=q, tune_q=256, tune_k=256)
    assert short and all(m <= attention.SHORT_MAX_BLOCK_M for m, _ in _blocks(short))
    long = attention._prune(attention.FWD_CONFIGS, {}, Q=q, tune_q=4096, tune_k=4096)
    assert long and all(m >= attention.SHORT_MAX_BLOCK_M for m, _ in _blocks(long))


def test_prune_keeps_fp32_tiles_small_and_accepts_positional_arguments():
    q = torch.empty(1, 1, 1, 64, dtype=torch.float32)
    pruned = attention._prune(attention.BWD_CONFIGS, {"Q": q}, tune_q=4096, tune_k=4096)
    assert pruned and all(m * n <= attention.FP32_MAX_TILE for m, n in _blocks(pruned))
