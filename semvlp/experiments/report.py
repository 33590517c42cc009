"""The reports of the ablation and the schedule study: <name>.json (setup, the no-image reference, the summary,
the comparisons and one row per schedule and seed), <name>.md (mean ± standard deviation over seeds per schedule,
then which schedule leads on each headline metric and whether its lead exceeds the spread between seeds) and
<name>.png (the same as bars, every seed as a dot, the reference as a dashed line). Given each mode's rows (every
schedule that trained that mode, evaluated in it), both files also compare the schedules mode by mode."""

from __future__ import annotations

import json
import math
from pathlib import Path

# Columns of the table and the plot, in order; a metric no row has is left out. The held-out metrics of the
# pretraining heads ("val_..." and "novel_...") follow, in the order of HELD_OUT_ORDER.
QA_METRICS = ("qa_acc", "qa_acc_fine", "qa_acc_high", "qa_acc_attribute", "qa_acc_existence", "qa_acc_count",
              "qa_acc_relation", "qa_acc_comparison", "qa_acc_novel")
MATCHING_METRICS = ("itm_acc", "itm_hard_colour", "itm_hard_binding", "itm_hard_relation", "itm_hard_count",
                    "itm_hard_absence", "t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10",
                    "nlvr2_acc")
HELD_OUT_SPLITS = ("val", "novel")
HELD_OUT_ORDER = ("itm_accuracy", "itm_accuracy_", "grounding_accuracy", "attribute_mlm_accuracy",
                  "relation_mlm_accuracy")
# The metrics the generated comparison speaks of (held-out ITM of every caption kind too).
HEADLINE = ("qa_acc_fine", "qa_acc_high", "qa_acc_novel", "itm_acc", "itm_hard_relation", "t2i_R@1", "i2t_R@1",
            "val_itm_accuracy", "novel_itm_accuracy", "val_grounding_accuracy", "val_attribute_mlm_accuracy",
            "val_relation_mlm_accuracy")
LABELS = {
    "qa_acc": "QA accuracy (test)", "qa_acc_fine": "QA, fine-grained (attribute, existence)",
    "qa_acc_high": "QA, high-level (count, relation, comparison)", "qa_acc_novel": "QA, held-out combinations",
    "itm_acc": "ITM accuracy (test)", "nlvr2_acc": "NLVR2-style accuracy (test)",
}
_SPLIT_NAMES = {"val": "held-out scenes", "novel": "held-out combinations"}
_HELD_OUT_NAMES = {"itm_accuracy": "pretrained ITM", "grounding_accuracy": "phrase grounding",
                   "attribute_mlm_accuracy": "masked attribute words", "relation_mlm_accuracy": "masked relation words"}


def _label(metric: str) -> str:
    if metric in LABELS:
        return LABELS[metric]
    if metric.startswith("qa_acc_"):
        return f"QA, {metric[7:]} questions"
    if metric.startswith("itm_hard_"):
        return f"ITM hard negatives: {metric[9:]}"
    split, rest = metric.split("_", 1)
    if split in HELD_OUT_SPLITS:
        if rest.startswith("itm_accuracy_"):
            return f"pretrained ITM, {rest[13:]} captions ({_SPLIT_NAMES[split]})"
        return f"{_HELD_OUT_NAMES.get(rest, rest.replace('_', ' '))} ({_SPLIT_NAMES[split]})"
    direction, k = metric.split("_R@")
    return f"retrieval {'text->image' if direction == 't2i' else 'image->text'} R@{k}"


def held_out_metrics(rows: list[dict]) -> list[str]:
    """The held-out metrics of the pretraining heads in the rows, val first, in HELD_OUT_ORDER."""
    names = {k for r in rows for k in r if k.split("_", 1)[0] in HELD_OUT_SPLITS}

    def order(metric: str):
        split, rest = metric.split("_", 1)
        rank = next((i for i, p in enumerate(HELD_OUT_ORDER) if rest == p or (p.endswith("_") and
                                                                               rest.startswith(p))),
                    len(HELD_OUT_ORDER))
        return HELD_OUT_SPLITS.index(split), rank, rest

    return sorted(names, key=order)


def metric_order(rows: list[dict]) -> list[str]:
    return list(QA_METRICS + MATCHING_METRICS) + held_out_metrics(rows)


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
        for metric in metric_order(rows):
            values = [r[metric] for r in mine if r.get(metric) is not None]
            if values:
                mean, std = mean_std(values)
                out[schedule][metric] = {"mean": mean, "std": std, "n": len(values)}
    return out


def _lead(summary: dict, metric: str, schedules: list[str]) -> dict | None:
    """The leader among `schedules` on `metric` and its lead over the next: clear when the difference of the
    means exceeds the sum of the two standard deviations over seeds; None (not judged) with a single seed."""
    ranked = sorted((s for s in schedules if metric in summary[s]), key=lambda s: -summary[s][metric]["mean"])
    if len(ranked) < 2:
        return None
    first, second = summary[ranked[0]][metric], summary[ranked[1]][metric]
    difference, spread = first["mean"] - second["mean"], first["std"] + second["std"]
    return {"metric": metric, "leader": ranked[0], "next": ranked[1], "difference": difference, "spread": spread,
            "clear": difference > spread if min(first["n"], second["n"]) > 1 else None}


def headline_metrics(rows: list[dict]) -> list[str]:
    """The metrics the comparisons speak of, in table order: HEADLINE and held-out ITM of every caption kind."""
    return [m for m in metric_order(rows) if m in HEADLINE or m.startswith("val_itm_accuracy_")]


def compare(rows: list[dict]) -> dict:
    """Which schedule leads on each headline metric (every schedule in the rows) and, where the rows have schedules
    that train one mode and schedules that switch between both ("trained_modes"), the best switching schedule
    against the best one-mode schedule."""
    summary = summarise(rows)
    schedules = list(summary)
    metrics = headline_metrics(rows)
    modes = {r["schedule"]: len(r["trained_modes"]) for r in rows if "trained_modes" in r}
    switching = [s for s in schedules if modes.get(s) == 2]
    one_mode = [s for s in schedules if modes.get(s) == 1]
    out = {"criterion": "clear: the difference of the means exceeds the sum of the two standard deviations over seeds",
           "leads": [lead for m in metrics if (lead := _lead(summary, m, schedules))], "switching": []}
    if switching and one_mode:
        for metric in metrics:
            best = {group: max((s for s in members if metric in summary[s]),
                               key=lambda s: summary[s][metric]["mean"], default=None)
                    for group, members in (("switching", switching), ("one_mode", one_mode))}
            if None not in best.values():
                lead = _lead(summary, metric, list(best.values()))
                # A tie is a lead for neither.
                ahead = lead["leader"] == best["switching"] and lead["difference"] > 0
                out["switching"].append({**lead, "switching_leads": ahead})
    return out


def _percent(cell: dict) -> str:
    return f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}"


def comparison_text(rows: list[dict]) -> list[str]:
    """Markdown lines: who leads on each headline metric, and whether switching between the modes helps."""
    summary, comparison = summarise(rows), compare(rows)
    lines = ["## Which schedule leads", "",
             "Criterion: a lead is *clear* when the difference of the two means exceeds the sum of their standard "
             "deviations over seeds; otherwise it is within the spread between seeds.", ""]
    for lead in comparison["leads"]:
        metric = lead["metric"]
        verdict = {True: "clear", False: "within the spread between seeds",
                   None: "not judged (one seed)"}[lead["clear"]]
        lines.append(f"- {_label(metric)}: **{lead['leader']}** "
                     f"({_percent(summary[lead['leader']][metric])}) leads {lead['next']} "
                     f"({_percent(summary[lead['next']][metric])}) by {100 * lead['difference']:.1f} points "
                     f"(spread {100 * lead['spread']:.1f}): {verdict}.")
    if comparison["switching"]:
        tally, *per_metric = _switching_lines(comparison["switching"])
        lines += ["", "## Does switching between the two modes help?", "",
                  "The best schedule that trains both modes against the best one-mode schedule, per headline metric: "
                  + tally, ""] + per_metric
    return lines


def _switching_lines(switching: list[dict]) -> list[str]:
    """A tally of the best switching schedule against the best one-mode schedule, then one line per metric."""
    ahead = [c for c in switching if c["switching_leads"]]
    clearly = [c for c in ahead if c["clear"]]
    behind_clearly = [c for c in switching if not c["switching_leads"] and c["clear"]]
    lines = [f"switching leads on {len(ahead)} of {len(switching)} metrics, clearly on {len(clearly)}; "
             f"a one-mode schedule leads clearly on {len(behind_clearly)}."]
    for c in switching:
        if c["difference"] == 0:
            lines.append(f"- {_label(c['metric'])}: {c['leader']} and {c['next']} tie.")
            continue
        verdict = {True: "clear", False: "within the spread", None: "not judged (one seed)"}[c["clear"]]
        lines.append(f"- {_label(c['metric'])}: {c['leader']} over {c['next']}, "
                     f"{100 * c['difference']:.1f} points (spread {100 * c['spread']:.1f}), {verdict}.")
    return lines


_MODE_NAMES = {"single": "single-stream", "two": "two-stream"}


def mode_text(mode_rows: dict[str, list[dict]]) -> list[str]:
    """Markdown lines: per mode, the headline metrics of every schedule that trained it, evaluated in it, and the
    best switching schedule against the schedule that trains that mode alone."""
    lines = ["## Each mode on its own", "",
             "The tables above report each run in the mode its val QA chose. Here every schedule that trained a mode "
             "is evaluated in that mode, so switching is set against training that mode alone."]
    for mode, rows in mode_rows.items():
        if not rows:
            continue
        summary = summarise(rows)
        lines += ["", f"### {_MODE_NAMES.get(mode, mode)} mode", ""] + _table_lines(summary, headline_metrics(rows))
        switching = compare(rows)["switching"]
        if switching:
            tally, *per_metric = _switching_lines(switching)
            lines += ["", f"The best switching schedule against {mode} only: " + tally, ""] + per_metric
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _table_lines(summary: dict, metrics: list[str], reference: dict | None = None) -> list[str]:
    """A markdown table of mean ± std, one row per metric some schedule has and one column per schedule."""
    schedules = list(summary)
    lines = ["| metric | " + " | ".join(schedules) + (" | no-image reference |" if reference else " |"),
             "|---|" + "---|" * (len(schedules) + bool(reference))]
    for metric in [m for m in metrics if any(m in summary[s] for s in schedules)]:
        cells = [_percent(summary[s][metric]) if metric in summary[s] else "-" for s in schedules]
        means = {s: summary[s][metric]["mean"] for s in schedules if metric in summary[s]}
        top = max(means.values())
        # Bold marks a schedule whose mean is strictly the highest; ties are left plain.
        best = [s for s, m in means.items() if m == top]
        cells = [f"**{c}**" if best == [s] and len(means) > 1 else c for c, s in zip(cells, schedules)]
        if reference:
            cells.append("-" if reference.get(metric) is None else f"{100 * reference[metric]:.1f}")
        lines.append(f"| {_label(metric)} | " + " | ".join(cells) + " |")
    return lines


def markdown(rows: list[dict], setup: dict, reference: dict | None = None,
             mode_rows: dict[str, list[dict]] | None = None) -> str:
    summary = summarise(rows)
    seeds = sorted({r["seed"] for r in rows})
    options = setup.get("pretrain_options") or ""
    lines = [f"# Pretraining schedules: {setup.get('name', 'ablation')}", "",
             f"Mean ± standard deviation over seeds {seeds}, in percent; test split unless stated. "
             f"Pretraining: {setup.get('pretrain_steps')} steps per schedule ({setup.get('model_config')}, "
             f"{setup.get('deepspeed_config')}, {setup.get('ranks', 1)} rank(s)"
             + (f", `{options}`" if options else "") + f"); QA fine-tuning: {setup.get('qa_steps')} steps. "
             "ITM and retrieval on test use the pretrained matching head as it is; hard negatives: how often the true "
             "caption outscores its hard negative. Pretrained ITM per caption kind, phrase grounding and attribute "
             "words are the pretraining run's own held-out evaluation. The no-image reference answers each question "
             "with the most common training answer of its type, and is chance elsewhere.", "",
             f"Wall time: {_duration(sum(r.get('seconds', 0.0) for r in rows))} for the {len(rows)} runs "
             "(the sum of each run's pretraining, fine-tuning and evaluation, measured when it ran).", ""]
    lines += _table_lines(summary, metric_order(rows), reference)
    lines += [""] + comparison_text(rows)
    if mode_rows:
        lines += [""] + mode_text(mode_rows)
    per_run = ("qa_acc", "qa_acc_fine", "qa_acc_high", "itm_acc", "val_itm_accuracy", "val_itm_accuracy_relation",
               "val_grounding_accuracy", "t2i_R@5", "i2t_R@5")
    lines += ["", "Per run (the mode is the one fine-tuned and reported, picked by QA accuracy on val):", "",
              "| schedule | seed | mode | QA | QA fine | QA high | ITM | pretrained ITM | relation ITM | grounding "
              "| t2i R@5 | i2t R@5 | minutes |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        text = " | ".join("-" if r.get(k) is None else f"{100 * r[k]:.1f}" for k in per_run)
        lines.append(f"| {r['schedule']} | {r['seed']} | {r['mode']} | {text} | {r.get('seconds', 0) / 60:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, reference: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows)
    schedules = list(summary)
    present = [m for m in metric_order(rows) if any(m in summary[s] for s in schedules)]
    panels = [(title, [m for m in present if m in group]) for title, group in (
        ("question answering (fine-tuned)", QA_METRICS), ("matching, retrieval, paired reasoning", MATCHING_METRICS),
        ("pretraining heads, held out", held_out_metrics(rows)))]
    panels = [(title, metrics) for title, metrics in panels if metrics]
    widest = max(len(metrics) for _, metrics in panels)
    # Wide enough to tell the bars apart, narrow enough to read on a screen.
    fig, axes = plt.subplots(len(panels), 1, figsize=(min(24, max(8, 0.12 * widest * len(schedules))), 4 * len(panels)),
                             squeeze=False)
    width = 0.8 / len(schedules)
    for ax, (title, metrics) in zip(axes[:, 0], panels):
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
        ax.set_xticklabels([m.replace("qa_acc_", "").replace("itm_hard_", "hard ").replace("_accuracy", "")
                            for m in metrics], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.set_title(title)
        ax.legend(fontsize=7, ncol=min(len(schedules) + 1, 4))
    fig.suptitle("pretraining schedules (mean ± std over seeds, dots = seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(rows: list[dict], setup: dict, folder, reference: dict | None = None, name: str = "ablation",
                  mode_rows: dict[str, list[dict]] | None = None) -> list[Path]:
    """FOLDER/<name>.json, .md and .png; `reference` holds what a model that ignores the image gets, per metric;
    `mode_rows` ({mode: rows evaluated in that mode}) adds the comparison mode by mode."""
    if not rows:
        raise ValueError("rows: expected at least one finished run, got none")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.json", folder / f"{name}.md", folder / f"{name}.png"]
    report = {"setup": setup, "wall_seconds": sum(r.get("seconds", 0.0) for r in rows), "reference": reference,
              "summary": summarise(rows), "comparison": compare(rows), "rows": rows}
    if mode_rows:
        report["modes"] = {mode: {"summary": summarise(mine), "comparison": compare(mine)}
                           for mode, mine in mode_rows.items() if mine}
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(rows, setup, reference, mode_rows))
    plot(rows, paths[2], reference)
    return paths
