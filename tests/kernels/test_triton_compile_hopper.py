"""Every Triton kernel compiles for Hopper (sm_90, through ptxas to a cubin) on this GPU-less machine, for
each dtype, within Hopper's shared memory: GPU-only compile errors fail here, not on the GPU.

The compilations run in subprocesses without TRITON_INTERPRET (see hopper_compile.py), two at a time.
bfloat16, the training dtype, compiles every attention autotune config; the other dtypes the fixed ones.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("hopper_compile.py")
RUNS = {"float32": [], "float16": [], "bfloat16": ["--all-configs"], "none": []}
PARALLEL = 2


@pytest.fixture(scope="module")
def compile_results():
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("a GPU machine runs the kernels themselves (tests/ops/test_triton_gpu.py)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    results, pending = {}, list(RUNS.items())
    running = []
    while pending or running:
        while pending and len(running) < PARALLEL:
            dtype, extra = pending.pop(0)
            proc = subprocess.Popen([sys.executable, str(SCRIPT), dtype, *extra], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            running.append((dtype, proc))
        dtype, proc = running.pop(0)
        stdout, stderr = proc.communicate(timeout=600)
        results[dtype] = (proc.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize("dtype", list(RUNS))
def test_kernels_compile_for_hopper(compile_results, dtype):
    returncode, stdout, stderr = compile_results[dtype]
    assert returncode == 0, f"compilation for sm_90 failed:\n{stderr[-4000:]}"
    compiled = [json.loads(line) for line in stdout.splitlines()]
    assert compiled and all(entry["cubin"] for entry in compiled)
    names = {entry["kernel"].split("[")[0] for entry in compiled}
    expected = ({"attn_keep_mask", "rowwise_keep_mask"} if dtype == "none" else
                {"attn_fwd", "attn_bwd_preprocess", "attn_bwd_dkdv", "attn_bwd_dq", "add_layer_norm_fwd",
                 "add_layer_norm_bwd", "bias_gelu_fwd", "bias_gelu_bwd"})
    assert names == expected
