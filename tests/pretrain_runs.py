"""Launching `semvlp pretrain` in subprocesses for the tests: one plain process, torchrun or deepspeed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
_DIST_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARIABLES}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               TORCH_EXTENSIONS_DIR=str(REPO / ".venv" / "torch_extensions"))
    return env


def tiny_config(folder: Path, dropout: float = 0.0) -> Path:
    """configs/model/tiny.json with this dropout (none by default, so that runs with different rank layouts
    compute the same)."""
    config = json.loads((REPO / "configs/model/tiny.json").read_text())
    config.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    path = folder / f"tiny_dropout_{dropout}.json"
    path.write_text(json.dumps(config))
    return path


def deepspeed_config(folder: Path, name: str) -> Path:
    """configs/deepspeed/<name>.json; under ZeRO-3 every parameter is partitioned (no persistence threshold) and
    released as soon as its module is done (no reuse window), so the tiny model exercises the gathering paths
    a large one takes."""
    config = json.loads((REPO / f"configs/deepspeed/{name}.json").read_text())
    if config["zero_optimization"]["stage"] == 3:
        config["zero_optimization"].update(stage3_param_persistence_threshold=0, stage3_max_reuse_distance=0,
                                           stage3_max_live_parameters=0)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def command(launcher: str, ranks: int, args: list[str]) -> list[str]:
    if launcher == "plain":
        return [sys.executable, "-m", "semvlp.cli", *args]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
                f"--master_port={free_port()}", "-m", "semvlp.cli", *args]
    if launcher == "deepspeed":
        return [sys.executable, "-m", "deepspeed.launcher.runner", f"--num_accelerators={ranks}",
                f"--master_port={free_port()}", "--module", "semvlp.cli", *args]
    raise ValueError(f"launcher: {launcher!r}")


def pretrain_args(data: Path, model: Path, ds: Path, out: Path, steps: int, accumulation: int, *extra) -> list[str]:
    return ["pretrain", "--data", str(data), "--model-config", str(model), "--deepspeed-config", str(ds),
            "--output", str(out), "--max-steps", str(steps), "--micro-batch-size", "4",
            "--gradient-accumulation-steps", str(accumulation), "--lr", "2e-3", "--warmup-steps", "2",
            "--eval-batch-size", "32", *extra]


def run(launcher: str, ranks: int, args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(command(launcher, ranks, args), cwd=REPO, env=environment(), capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{launcher} run failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-5000:]}")
    return done


def losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def kill_after_step(launcher: str, ranks: int, args: list[str], step: int, metrics: Path) -> None:
    """Starts a run and kills its whole process group (SIGKILL) once `metrics` logs `step` (or after 240 s)."""
    process = subprocess.Popen(command(launcher, ranks, args), cwd=REPO, env=environment(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and process.poll() is None:
            if metrics.is_file() and any(json.loads(line)["step"] >= step
                                         for line in metrics.read_text().splitlines() if line.endswith("}")):
                break
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
