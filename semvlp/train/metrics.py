"""Run metrics: a progress bar, OUTPUT/metrics.jsonl (one object per step), OUTPUT/eval.jsonl, TensorBoard
logs under OUTPUT/tensorboard/, and a PNG of the curves at the end. Only rank 0 writes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)


def read_records(path: Path) -> list[dict]:
    """The records of a JSON-lines file. A last line that is not whole (the writer was killed mid-line) is
    dropped with a warning; a broken line before it is an error naming the file and line."""
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines):
                raise ValueError(f"{path}: line {number} is not a JSON record ({err}); fix or remove that line") \
                    from err
            logger.warning("%s: dropped its last line, a record cut short (%d characters)", path, len(line))
    return records


def _keep_until(path: Path, step: int) -> None:
    """Drops the records after `step` (written by a run that died after its last checkpoint). The file is
    replaced atomically, so a kill during the rewrite leaves the old one."""
    if not path.is_file():
        return
    records = read_records(path)
    kept = [r for r in records if r["step"] <= step]
    if len(kept) < len(records):
        logger.info("%s: dropped %d records after step %d, the step the run resumes from", path,
                    len(records) - len(kept), step)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


class MetricsLogger:
    def __init__(self, out_dir, enabled: bool, max_steps: int, start_step: int = 0):
        self.enabled = enabled
        self.out = Path(out_dir)
        self.bar = tqdm(total=max_steps, initial=start_step, disable=not enabled, dynamic_ncols=True, unit="step")
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.out.mkdir(parents=True, exist_ok=True)
        self.metrics_path, self.eval_path = self.out / "metrics.jsonl", self.out / "eval.jsonl"
        for path in (self.metrics_path, self.eval_path):
            _keep_until(path, start_step)
        self.tensorboard = SummaryWriter(str(self.out / "tensorboard"), purge_step=start_step + 1)

    def log_step(self, record: dict) -> None:
        self.bar.update(1)
        if not self.enabled:
            return
        self.bar.set_postfix(loss=f"{record['loss']:.3f}", mode=record["mode"], refresh=False)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["step"]
        self.tensorboard.add_scalar("loss/total", record["loss"], step)
        for task, value in record["losses"].items():
            self.tensorboard.add_scalar(f"loss/{task}", value, step)
        self.tensorboard.add_scalar("lr", record["lr"], step)
        self.tensorboard.add_scalar("samples_per_s", record["samples_per_s"], step)

    def log_eval(self, step: int, results: dict) -> None:
        if not self.enabled:
            return
        with open(self.eval_path, "a") as f:
            f.write(json.dumps({"step": step, **results}) + "\n")
        for name, value in results.items():
            self.tensorboard.add_scalar(f"eval/{name}", value, step)

    def close(self) -> None:
        self.bar.close()
        if self.enabled:
            self.tensorboard.close()


def plot_curves(out_dir) -> Path | None:
    """OUTPUT/curves.png: the loss of each task per step, and the held-out accuracies per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    metrics = read_records(out / "metrics.jsonl")
    evals = read_records(out / "eval.jsonl") if (out / "eval.jsonl").is_file() else []
    if not metrics:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = [m["step"] for m in metrics]
    axes[0].plot(steps, [m["loss"] for m in metrics], label="total", color="black", linewidth=1)
    for task in metrics[-1]["losses"]:
        axes[0].plot(steps, [m["losses"].get(task, float("nan")) for m in metrics], label=task, linewidth=0.8)
    axes[0].set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    axes[0].legend(fontsize=8)
    for name in (evals[-1] if evals else {}):
        if name != "step":
            axes[1].plot([e["step"] for e in evals], [100 * e.get(name, float("nan")) for e in evals], marker="o",
                         label=name)
    axes[1].set(xlabel="step", ylabel="accuracy (%)", ylim=(0, 100), title="held-out accuracy")
    if evals:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    return out / "curves.png"
