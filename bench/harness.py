"""The benchmark harness: named cases x providers, timed in one process, one JSON file per run.

A bench script (`bench/bench_<op>.py`) only builds inputs and callables:

    from bench import harness

    def build(args) -> harness.Benchmark:
        def inputs(device):                      # built once per case, shared by every provider
            return {"x": torch.randn(4096, 768, device=device)}

        def ours(inp):                           # provider: inputs -> zero-argument callable
            return lambda: semvlp.ops.layer_norm(inp["x"], None, None)

        def apex(inp):
            raise harness.Unsupported("apex is not installed")

        cases = [harness.Case("n4096_h768", inputs, params={"n": 4096, "hidden": 768},
                              flops=None, bytes=2 * 4096 * 768 * 4)]
        return harness.Benchmark("layer_norm", cases, {"torch": ..., "semvlp": ours, "apex": apex},
                                 baseline="torch", budget_s=60)

    if __name__ == "__main__":
        raise SystemExit(harness.main(build))

`python -m bench.bench_<op> [--quick] [--device cpu|cuda] [--budget S]` then times every provider on every
case: on a GPU with `triton.testing.do_bench` (CUDA events when triton is missing), on the CPU with a
wall-clock loop, the median after warm-up in both. It records the peak memory of one call, derives
TFLOP/s, GB/s, per-second rates of the case's `items` (samples, tokens...) and MFU (GPU, known chips),
divides by the baseline provider's time from the same run, prints a table and writes
`bench/results/<benchmark>_<device>_<UTC time>.json` (never overwriting a file).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
SCHEMA_VERSION = 1
# Timed calls kept per timing at most (a microsecond-long call would otherwise fill memory with samples).
MAX_SAMPLES = 10_000
# Dense bf16 tensor-core peaks (TFLOP/s) for MFU, matched on the device name, most specific first.
# SEMVLP_PEAK_TFLOPS overrides (e.g. for a chip not listed).
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0))


class Unsupported(Exception):
    """Raised by a provider that cannot run a case here; the message is recorded as the reason."""


@dataclass
class Case:
    """One input configuration.

    make_inputs: device -> inputs (any object), built once and shared by every provider of the case.
    params: JSON-serialisable description (shapes, dtype) copied into the results.
    flops, bytes: work of one call (explicit formulas in the bench script), for TFLOP/s, GB/s and MFU.
    items: counts per call reported as rates, e.g. {"samples": 32, "tokens": 4096} -> samples_per_s...
    """

    name: str
    make_inputs: Callable[[torch.device], Any]
    params: dict[str, Any] = field(default_factory=dict)
    flops: float | None = None
    bytes: float | None = None
    items: dict[str, float] = field(default_factory=dict)


# A provider builds the zero-argument callable that is timed, or raises Unsupported(reason).
Provider = Callable[[Any], Callable[[], Any]]


@dataclass
class Benchmark:
    name: str
    cases: list[Case]
    providers: dict[str, Provider]
    baseline: str
    budget_s: float = 60.0
    description: str = ""
    rounds: int = 1  # default of run(rounds=...)

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"name: expected letters, digits, '_', '.' or '-', got {self.name!r}")
        if self.baseline not in self.providers:
            raise ValueError(f"baseline: got {self.baseline!r}, expected one of the providers {list(self.providers)}")
        names = [c.name for c in self.cases]
        if len(set(names)) != len(names):
            raise ValueError(f"cases: expected distinct names, got {names}")
        if self.budget_s <= 0:
            raise ValueError(f"budget_s: expected a positive number of seconds, got {self.budget_s}")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds: expected a positive int, got {self.rounds!r}")


# ---- environment -------------------------------------------------------------------------------------------

def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # an optional package that is missing or broken is simply not reported
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton"),
        "semvlp": _version("semvlp"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "timer": _timer_name(device),
    }


def peak_tflops(name: str) -> float | None:
    if os.environ.get("SEMVLP_PEAK_TFLOPS"):
        return float(os.environ["SEMVLP_PEAK_TFLOPS"])
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value
    return None


# ---- timing and memory -------------------------------------------------------------------------------------

def _timer_name(device: torch.device) -> str:
    if device.type != "cuda":
        return "wall_clock_median"
    return "triton_do_bench_median" if _version("triton") else "cuda_events_median"


def _time_wall_clock(fn: Callable, warmup_s: float, rep_s: float, min_reps: int = 3) -> list[float]:
    """Per-call seconds on the CPU: at least one warm-up call, then at least `min_reps` timed calls (exactly
    that many when rep_s is 0)."""
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < warmup_s:
        fn()
    times: list[float] = []
    end = time.perf_counter() + rep_s
    while len(times) < min_reps or (time.perf_counter() < end and len(times) < MAX_SAMPLES):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _time_cuda(fn: Callable, warmup_s: float, rep_s: float, calls: int | None = None) -> list[float]:
    """Per-call seconds on the GPU: the 20th, 50th and 80th percentiles from do_bench, or every CUDA-event time
    when triton is missing or a fixed number of calls is asked for."""
    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    if do_bench is not None and calls is None:
        q20, q50, q80 = do_bench(fn, warmup=max(1, int(warmup_s * 1e3)), rep=max(1, int(rep_s * 1e3)),
                                 quantiles=[0.2, 0.5, 0.8])
        return [q20 / 1e3, q50 / 1e3, q80 / 1e3]
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_s:
        fn()
    torch.cuda.synchronize()
    times = []
    end = time.perf_counter() + rep_s
    while len(times) < (calls or 3) or (calls is None and time.perf_counter() < end and len(times) < MAX_SAMPLES):
        begin, finish = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        finish.record()
        finish.synchronize()
        times.append(begin.elapsed_time(finish) / 1e3)
    return times


def _rss_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_memory_mb(fn: Callable, device: torch.device) -> tuple[float | None, float | None]:
    """(peak, peak above the level before the call) in MiB during one call of fn.

    GPU: the caching allocator's allocated bytes. CPU: the process's resident set (Linux high-water mark,
    reset through /proc/self/clear_refs); None where that is not available.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return peak / 2**20, (peak - before) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        fn()
        return None, None
    before = _rss_kib("VmRSS")
    fn()
    peak = _rss_kib("VmHWM")
    if before is None or peak is None:
        return None, None
    return peak / 1024, (peak - before) / 1024


def _release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- running -----------------------------------------------------------------------------------------------

def _derived(case: Case, seconds: float, peak: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tflops": None if case.flops is None else case.flops / seconds / 1e12,
        "gbps": None if case.bytes is None else case.bytes / seconds / 1e9,
        "rates": {f"{name}_per_s": count / seconds for name, count in case.items.items()},
    }
    out["mfu"] = None if (out["tflops"] is None or peak is None) else out["tflops"] / peak
    return out


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _timing_row(case: Case, samples: list[float], peak: float | None) -> dict[str, Any]:
    median = statistics.median(samples)
    row = {"status": "ok", "time_ms": median * 1e3, "time_ms_q20": _quantile(samples, 0.2) * 1e3,
           "time_ms_q80": _quantile(samples, 0.8) * 1e3, "samples": len(samples)}
    row.update(_derived(case, median, peak))
    return row


def _build(provider: Provider, inputs: Any, device: torch.device) -> tuple[Callable, dict[str, Any]]:
    """The provider's callable and the peak memory of its first call (which also warms it up)."""
    fn = provider(inputs)
    if not callable(fn):
        raise TypeError(f"provider returned {type(fn).__name__}, expected a zero-argument callable")
    peak_mb, extra_mb = _peak_memory_mb(fn, device)
    return fn, {"peak_memory_mb": peak_mb, "peak_memory_extra_mb": extra_mb}


def _time(fn: Callable, device: torch.device, share_s: float, calls: int | None) -> list[float]:
    """Timed calls of fn for its share of the budget, or exactly `calls` of them after one warm-up call."""
    warmup_s, rep_s = (0.0, 0.0) if calls else (share_s / 3, 2 * share_s / 3)
    if device.type == "cuda":
        return _time_cuda(fn, warmup_s, rep_s, calls)
    return _time_wall_clock(fn, warmup_s, rep_s, min_reps=calls or 3)


class Interrupted(BaseException):
    """Raised inside `run` when the process gets SIGTERM (see `main`); what was measured so far is kept."""


class _Budget:
    """Seconds left for the run, shared out equally over the timings still to come."""

    def __init__(self, seconds: float, timings: int):
        self.seconds, self.timings_left, self.started = seconds, timings, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started)

    def take_share(self) -> tuple[float, float]:
        """(seconds left, this timing's share), counting this timing as done."""
        left = self.left()
        share = max(0.0, left) / max(1, self.timings_left)
        self.timings_left -= 1
        return left, share


def _run_case(benchmark: Benchmark, case: Case, names: list[str], device: torch.device, budget: _Budget,
              rounds: int, calls: int | None, strict: bool, seed: int, rows: dict, samples: dict) -> None:
    """Build the providers of one case (while budget is left), then time them in turn, `rounds` times."""
    torch.manual_seed(seed)
    inputs = case.make_inputs(device)
    fns = {}
    for name in names:
        if budget.left() <= 0:
            continue
        try:
            fns[name], memory = _build(benchmark.providers[name], inputs, device)
            rows[name].update(memory)
        except Unsupported as why:
            rows[name].update(status="unsupported", reason=str(why))
        except Exception as err:
            if strict:
                raise
            rows[name].update(status="error", reason=f"{type(err).__name__}: {err}")
    for round_index in range(rounds):
        for name in names:
            if name not in fns:
                budget.timings_left -= 1
                continue
            left, share = budget.take_share()
            # A provider that was built is timed at least once (its minimum calls), even past the budget:
            # the build (a model, a compilation) cost more than those calls.
            if left <= 0 and round_index > 0:
                continue
            try:
                samples[name] += _time(fns[name], device, share, calls)
            except Exception as err:
                if strict:
                    raise
                rows[name].update(status="error", reason=f"{type(err).__name__}: {err}")
                del fns[name]


def run(benchmark: Benchmark, device: torch.device | str = "cpu", *, budget_s: float | None = None,
        providers: list[str] | None = None, cases: list[str] | None = None, rounds: int | None = None,
        calls: int | None = None, strict: bool = False, seed: int = 0,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time every selected provider on every selected case; returns the run's record (not yet saved).

    providers: names to run (the baseline is always added); cases: substrings selecting case names.
    rounds: the providers of a case are timed in turn this many times and their samples pooled, so a
        drift of the machine's speed (other load, clocks) reaches every provider alike (default: the
        benchmark's).
    calls: time exactly this many calls per round instead of filling the budget (a smoke test).
    strict: re-raise a provider's error instead of recording it.
    Each timing gets an equal share of the budget left (a third warm-up, two thirds timed; on the CPU at
    least one warm-up and three timed calls). Once the budget is spent, providers not yet built are recorded
    as skipped and built ones get their minimum calls in the first round only. An `Interrupted` raised
    meanwhile (SIGTERM under `main`) ends the run with what was measured; the rest is recorded as skipped.
    """
    device = torch.device(device)
    seconds = benchmark.budget_s if budget_s is None else budget_s
    rounds = benchmark.rounds if rounds is None else rounds
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds: expected a positive int, got {rounds}")
    if calls is not None and (not isinstance(calls, int) or calls < 1):
        raise ValueError(f"calls: expected None or a positive int, got {calls!r}")
    unknown = sorted(set(providers or []) - set(benchmark.providers))
    if unknown:
        raise ValueError(f"providers: unknown {unknown}, expected names from {list(benchmark.providers)}")
    names = [p for p in benchmark.providers if providers is None or p in providers or p == benchmark.baseline]
    # The baseline goes first so every ratio has its denominator even when the budget runs out.
    names.sort(key=lambda p: p != benchmark.baseline)
    chosen_cases = [c for c in benchmark.cases if cases is None or any(s in c.name for s in cases)]
    env = environment(device)
    peak = peak_tflops(env["device"]) if device.type == "cuda" else None
    budget = _Budget(seconds, len(chosen_cases) * len(names) * rounds)
    results, missing = [], f"time budget of {seconds:g} s spent"
    for case in chosen_cases:
        rows = {name: {"case": case.name, "provider": name, "params": case.params} for name in names}
        samples = {name: [] for name in names}
        if not missing.startswith("interrupted"):
            try:
                _run_case(benchmark, case, names, device, budget, rounds, calls, strict, seed, rows, samples)
            except Interrupted:
                missing = "interrupted (SIGTERM) before it was timed"
        for name in names:
            row = rows[name]
            if "status" not in row:
                row.update(_timing_row(case, samples[name], peak) if samples[name]
                           else {"status": "skipped", "reason": missing})
            log(_format_row(row))
            results.append(row)
        _release_memory(device)
    _add_ratios(results, benchmark.baseline)
    return {
        "schema": SCHEMA_VERSION,
        "benchmark": benchmark.name,
        "description": benchmark.description,
        "baseline": benchmark.baseline,
        "budget_s": seconds,
        "rounds": rounds,
        "calls": calls,
        "elapsed_s": time.perf_counter() - budget.started,
        "interrupted": missing.startswith("interrupted"),
        "peak_tflops": peak,
        "env": env,
        "results": results,
    }


def _add_ratios(results: list[dict], baseline: str) -> None:
    """speedup = baseline time / provider time, both from this run and the same case."""
    base = {r["case"]: r["time_ms"] for r in results if r["provider"] == baseline and r["status"] == "ok"}
    for r in results:
        ok = r["status"] == "ok" and r["case"] in base
        r["speedup_vs_baseline"] = base[r["case"]] / r["time_ms"] if ok else None


def _format_row(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['case']:<28} {row['provider']:<24} {row['status']}: {row.get('reason', '')}"
    extra = []
    if row["tflops"] is not None:
        extra.append(f"{row['tflops']:.3f} TFLOP/s")
    if row["gbps"] is not None:
        extra.append(f"{row['gbps']:.1f} GB/s")
    extra += [f"{v:.1f} {k.replace('_per_s', '/s')}" for k, v in row["rates"].items()]
    if row["peak_memory_mb"] is not None:
        extra.append(f"peak {row['peak_memory_mb']:.0f} MiB")
    return f"{row['case']:<28} {row['provider']:<24} {row['time_ms']:10.3f} ms  " + "  ".join(extra)


def summary_lines(record: dict) -> list[str]:
    """A short table of a run: one line per measurement with time, throughput and ratio to the baseline."""
    lines = [f"{record['benchmark']} on {record['env']['device']} (baseline: {record['baseline']})"]
    for r in record["results"]:
        if r["status"] != "ok":
            lines.append(f"  {r['case']:<26} {r['provider']:<24} {r['status']}")
            continue
        ratio = r["speedup_vs_baseline"]
        lines.append(f"  {r['case']:<26} {r['provider']:<24} {r['time_ms']:10.3f} ms  "
                     + (f"x{ratio:.2f}" if ratio is not None else "-"))
    return lines


# ---- results files -----------------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "device"


def save(record: dict, out_dir: str | Path = RESULTS_DIR) -> Path:
    """Write the record as `<benchmark>_<device>_<UTC time>.json` in out_dir; an existing file is never replaced."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = "cpu" if record["env"]["device_type"] == "cpu" else _slug(record["env"]["device"])
    stamp = datetime.datetime.fromisoformat(record["env"]["date"]).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(record, indent=1, allow_nan=False) + "\n"
    for n in range(1000):
        path = out_dir / f"{record['benchmark']}_{device}_{stamp}{'' if n == 0 else f'_{n}'}.json"
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(text)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"out_dir: {out_dir} already holds 1000 results named like {path.name}")


def load(path: str | Path) -> dict:
    record = json.loads(Path(path).read_text())
    if record.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema {record.get('schema')!r}, expected {SCHEMA_VERSION}")
    return record


# ---- command line ------------------------------------------------------------------------------------------

def parser(description: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few calls: checks that the bench runs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default: the bench's)")
    p.add_argument("--rounds", type=int, default=None,
                   help="times each provider is timed in turn (default: the bench's)")
    p.add_argument("--calls", type=int, default=None,
                   help="time exactly this many calls per provider and round (a smoke test; default: fill the budget)")
    p.add_argument("--providers", default=None, help="comma-separated providers to run (the baseline always runs)")
    p.add_argument("--cases", default=None, help="comma-separated substrings of case names to run")
    p.add_argument("--out-dir", default=str(RESULTS_DIR), help="where the JSON goes")
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    p.add_argument("--strict", action="store_true", help="stop at the first provider error")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's own choice); part of the recorded device name")
    return p


def _raise_interrupted(signum, frame):
    raise Interrupted()


def main(build: Callable[[argparse.Namespace], Benchmark],
         add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
         argv: list[str] | None = None) -> int:
    """Command line of a bench script. Returns 1 when a provider failed with an error, else 0."""
    p = parser(build.__doc__ or "")
    if add_arguments is not None:
        add_arguments(p)
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads: expected a positive count, got {args.threads}")
        torch.set_num_threads(args.threads)
    benchmark = build(args)
    split = (lambda s: None if s is None else [x for x in s.split(",") if x])
    # A SIGTERM (e.g. from `timeout` in bench/gpu_check.sh) ends the run early and still writes its JSON.
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        record = run(benchmark, args.device, budget_s=args.budget, providers=split(args.providers),
                     cases=split(args.cases), rounds=args.rounds, calls=args.calls, strict=args.strict)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("\n".join(summary_lines(record)))
    if not args.no_save:
        print(f"results: {save(record, args.out_dir)}")
    sys.stdout.flush()
    return int(any(r["status"] == "error" for r in record["results"]))
