"""Command lines of small fine-tuning runs on the `coco_data` fixture's folder (tests/finetune/conftest.py)."""

from pathlib import Path


def finetune_args(folder: Path, out: Path, task: str, steps: int = 2) -> list[str]:
    return ["finetune", "--task", task, "--data", str(folder), "--model-config", str(folder / "config.json"),
            "--vocab", str(folder / "vocab" / "vocab.txt"), "--output", str(out), "--steps", str(steps),
            "--batch-size", "16", "--lr", "1e-3", "--warmup-steps", "1", "--retrieval-images", "10",
            "--eval-splits", "val"]
