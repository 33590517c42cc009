"""bench/gpu_check.sh --dry-run on the CPU: every step runs or says why not, results come back in at most 8
files no more than 2 folders deep, and the summary table is printed last."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_walks_every_step_and_archives_the_results(tmp_path):
    out = tmp_path / "out"
    # The budget bounds each step's time limit (the profile step gets a quarter of what is left): 500 s keeps the
    # steps within their limits on a loaded 2-core machine, and an unloaded one finishes in about 3 minutes.
    env = dict(os.environ, OUT=str(out), GPU_CHECK_BUDGET="500", PYTHON=sys.executable)
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)  # $OUT/a/b/file at the deepest
    summary = (out / "summary.txt").read_text()
    assert result.stdout.rstrip().endswith(summary.rstrip())
    steps = ["environment", "wheels", "install", "backends", "pytest_gpu", "profile_step", "memcheck"]
    benches = sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))
    for step in steps + benches:
        assert f"\n{step} " in summary, step
    assert "FAILED" not in summary and "TIMEOUT" not in summary, summary

    with tarfile.open(out / "gpu_check_results.tar.gz") as archive:
        names = archive.getnames()
    assert any(n.startswith("results/e2e_tiny_cpu_") and n.endswith(".json") for n in names)
    with tarfile.open(out / "gpu_check_results.tar.gz") as archive:
        profile = archive.extractfile("results/profile_step.txt").read().decode()
    for target in ("mode=two", "mode=single", "add_layer_norm", "varlen_attention"):
        assert target in profile and "FAILED" not in profile, profile[:2000]
    assert all(f"logs/{step}.log" in names for step in ["environment", "backends", "pytest_gpu"] + benches)
