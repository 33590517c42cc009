"""A short table of every benchmark JSON in a folder (the last lines bench/gpu_check.sh prints).

    python -m bench.summary DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def table(folder: Path) -> list[str]:
    lines = []
    for path in sorted(folder.rglob("*.json")):
        try:
            record = json.loads(path.read_text())
            rows, env = record["results"], record["env"]
        except (ValueError, KeyError) as err:
            lines.append(f"{path.name}: unreadable ({err})")
            continue
        flag = " [interrupted]" if record.get("interrupted") else ""
        lines.append(f"{record['benchmark']} on {env['device']}, baseline {record['baseline']}{flag}")
        others: dict[str, int] = {}
        for r in rows:
            if r["status"] != "ok":
                others[r["status"]] = others.get(r["status"], 0) + 1
                continue
            ratio = r.get("speedup_vs_baseline")
            extra = f"{r['tflops']:.1f} TFLOP/s" if (r.get("tflops") or 0) >= 0.05 else ""
            if r.get("mfu"):
                extra += f" MFU {100 * r['mfu']:.0f}%"
            lines.append(f"  {r['case']:<24} {r['provider']:<22} {r['time_ms']:10.3f} ms  "
                         f"{'x%.2f' % ratio if ratio else '   -':>6}  {extra}".rstrip())
        if others:
            lines.append("  not timed: " + ", ".join(f"{n} {status}" for status, n in sorted(others.items())))
    return lines or [f"no benchmark results in {folder}"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    print("\n".join(table(p.parse_args(argv).folder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
