"""The ablation's reports: ablation.json (setup, the no-image reference, and one row per schedule and seed),
ablation.md (mean ± standard deviation over seeds per schedule) and ablation.png (the same as bars, every seed as
a dot, the reference as a dashed line)."""

from __future__ import annotations

import json
import math
from pathlib import Path

# Columns of the table and the plot, in order; a metric no row has is left out.
QA_METRICS = ("qa_acc", "qa_acc_fine", "qa_acc_high", "qa_acc_attribute", "qa_acc_existence", "qa_acc_count",
              "qa_acc_relation", "qa_acc_comparison", "qa_acc_novel")
MATCHING_METRICS = ("itm_acc", "itm_hard_colour", "itm_hard_binding", "itm_hard_relation", "itm_hard_count",
                    "itm_hard_absence", "t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10",
                    "nlvr2_acc")
LABELS = {
    "qa_acc": "QA accuracy (test)", "qa_acc_fine": "QA, fine-grained (attribute, existence)",
    "qa_acc_high": "QA, high-level (count, relation, comparison)", "qa_acc_novel": "QA, held-out combinations",
    "itm_acc": "ITM accuracy (test)", "nlvr2_acc": "NLVR2-style accuracy (test)",
}


def _label(metric: str) -> str:
    if metric in LABELS:
        return LABELS[metric]
    if metric.startswith("qa_acc_"):
        return f"QA, {metric[7:]} questions"
    if metric.startswith("itm_hard_"):
        return f"ITM hard negatives: {metric[9:]}"
    direction, k = metric.split("_R@")
    return f"retrieval {'text->image' if direction == 't2i' else 'image->text'} R@{k}"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """{schedule: {metric: {"mean", "std", "n"}}} over the rows (seeds) of each schedule."""
    schedules = list(dict.fromkeys(r["schedule"] for r in rows))
    out = {}
    for schedule in schedules:
        mine = [r for r in rows if r["schedule"] == schedule]
        out[schedule] = {}
        for metric in QA_METRICS + MATCHING_METRICS:
            values = [r[metric] for r in mine if r.get(metric) is not None]
            if values:
                mean, std = mean_std(values)
                out[schedule][metric] = {"mean": mean, "std": std, "n": len(values)}
    return out


def markdown(rows: list[dict], setup: dict, reference: dict | None = None) -> str:
    summary = summarise(rows)
    schedules = list(summary)
    metrics = [m for m in QA_METRICS + MATCHING_METRICS if any(m in summary[s] for s in schedules)]
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# Pretraining schedule ablation", "",
             f"Mean ± standard deviation over seeds {seeds}, in percent; test split unless stated. "
             f"Pretraining: {setup.get('pretrain_steps')} steps of {setup.get('micro_batch_size')} samples "
             f"per schedule ({setup.get('model_config')}); QA fine-tuning: {setup.get('qa_steps')} steps. "
             "ITM and retrieval use the pretrained matching head as it is; hard negatives: how often the true "
             "caption outscores its hard negative. The no-image reference answers each question with the most "
             "common training answer of its type, and is chance elsewhere.", "",
             "| metric | " + " | ".join(schedules) + (" | no-image reference |" if reference else " |"),
             "|---|" + "---|" * (len(schedules) + bool(reference))]
    for metric in metrics:
        cells = []
        for s in schedules:
            cell = summary[s].get(metric)
            cells.append(f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}" if cell else "-")
        means = {s: summary[s][metric]["mean"] for s in schedules if metric in summary[s]}
        top = max(means.values())
        # Bold marks a schedule whose mean is strictly the highest; ties are left plain.
        best = [s for s, m in means.items() if m == top]
        cells = [f"**{c}**" if best == [s] and len(means) > 1 else c for c, s in zip(cells, schedules)]
        if reference:
            cells.append("-" if reference.get(metric) is None else f"{100 * reference[metric]:.1f}")
        lines.append(f"| {_label(metric)} | " + " | ".join(cells) + " |")
    lines += ["", "Per run (the mode is the one fine-tuned and reported, picked by QA accuracy on val):", "",
              "| schedule | seed | mode | QA | QA fine | QA high | ITM | t2i R@5 | i2t R@5 | minutes |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r.get(k) for k in ("qa_acc", "qa_acc_fine", "qa_acc_high", "itm_acc", "t2i_R@5", "i2t_R@5")]
        text = " | ".join("-" if c is None else f"{100 * c:.1f}" for c in cells)
        lines.append(f"| {r['schedule']} | {r['seed']} | {r['mode']} | {text} | {r.get('seconds', 0) / 60:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, reference: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows)
    schedules = list(summary)
    panels = [[m for m in QA_METRICS if any(m in summary[s] for s in schedules)],
              [m for m in MATCHING_METRICS if any(m in summary[s] for s in schedules)]]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.9 * max(len(p) for p in panels) * len(schedules) / 2), 8))
    width = 0.8 / len(schedules)
    for ax, metrics, title in zip(axes, panels, ("question answering", "matching, retrieval, paired reasoning")):
        for k, schedule in enumerate(schedules):
            xs = [i + (k - (len(schedules) - 1) / 2) * width for i in range(len(metrics))]
            means = [100 * summary[schedule].get(m, {"mean": float("nan")})["mean"] for m in metrics]
            stds = [100 * summary[schedule].get(m, {"std": 0.0})["std"] for m in metrics]
            ax.bar(xs, means, width, yerr=stds, capsize=2, label=schedule, alpha=0.8)
            for x, metric in zip(xs, metrics):
                seeds = [100 * r[metric] for r in rows if r["schedule"] == schedule and r.get(metric) is not None]
                ax.scatter([x] * len(seeds), seeds, s=8, color="black", zorder=3)
        if reference:
            marks = [(i, 100 * reference[m]) for i, m in enumerate(metrics) if reference.get(m) is not None]
            ax.hlines([y for _, y in marks], [i - 0.45 for i, _ in marks], [i + 0.45 for i, _ in marks],
                      colors="black", linestyles="dashed", linewidth=1, label="no-image reference")
        ax.set_xticks(range(len(metrics)))
        ax.set_xticklabels([m.replace("qa_acc_", "").replace("itm_hard_", "hard ") for m in metrics], rotation=30,
                           ha="right", fontsize=8)
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.set_title(title)
        ax.legend(fontsize=8, ncol=len(schedules) + 1)
    fig.suptitle("pretraining schedule ablation (mean ± std over seeds, dots = seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(rows: list[dict], setup: dict, folder, reference: dict | None = None) -> list[Path]:
    """reports/ablation.json, ablation.md and ablation.png; `reference` holds what a model that ignores the
    image gets, per metric."""
    if not rows:
        raise ValueError("rows: expected at least one finished run, got none")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "ablation.json", folder / "ablation.md", folder / "ablation.png"]
    report = {"setup": setup, "reference": reference, "summary": summarise(rows), "rows": rows}
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(rows, setup, reference))
    plot(rows, paths[2], reference)
    return paths
