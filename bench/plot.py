"""Draw benchmark results from the harness's JSON files: one panel per file, cases x providers as grouped bars.

    python -m bench.plot bench/results/e2e_cpu_20261126T120000Z.json [more.json ...] \
        [--metric speedup_vs_baseline] [--out e2e.png]

Metrics: time_ms, speedup_vs_baseline, tflops, gbps, mfu, peak_memory_mb, or a rate such as samples_per_s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

from bench.harness import load  # noqa: E402


def metric_value(row: dict, metric: str) -> float | None:
    if row["status"] != "ok":
        return None
    if metric in row:
        return row[metric]
    return row["rates"].get(metric)


def draw(records: list[dict], metric: str, out: Path) -> Path:
    fig, axes = plt.subplots(len(records), 1, figsize=(9, 3.2 * len(records)), squeeze=False)
    for ax, record in zip(axes[:, 0], records):
        cases = list(dict.fromkeys(r["case"] for r in record["results"]))
        # Only providers with a value here: one that never ran (unsupported, skipped) gets no slot or legend entry.
        providers = list(dict.fromkeys(r["provider"] for r in record["results"]
                                       if metric_value(r, metric) is not None))
        width = 0.8 / max(len(providers), 1)
        for i, provider in enumerate(providers):
            values = {r["case"]: metric_value(r, metric) for r in record["results"] if r["provider"] == provider}
            xs = [c + i * width for c in range(len(cases)) if values.get(cases[c]) is not None]
            ys = [values[case] for case in cases if values.get(case) is not None]
            ax.bar(xs, ys, width, label=provider)
        ax.set_xticks([c + 0.4 - width / 2 for c in range(len(cases))], cases, fontsize=8)
        ax.set_ylabel(metric)
        env = record["env"]
        ax.set_title(f"{record['benchmark']}: {env['device']}, {env['date'][:10]}, "
                     f"commit {(env['git_commit'] or '?')[:8]} (baseline {record['baseline']})", fontsize=9)
        if metric == "speedup_vs_baseline":
            ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="JSON files written by bench/harness.py")
    p.add_argument("--metric", default="speedup_vs_baseline")
    p.add_argument("--out", default=None, help="PNG to write (default: beside the first JSON file)")
    args = p.parse_args(argv)
    records = [load(path) for path in args.results]
    out = Path(args.out) if args.out else Path(args.results[0]).with_suffix(f".{args.metric}.png")
    print(draw(records, args.metric, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
