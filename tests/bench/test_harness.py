"""The benchmark harness on a trivial benchmark: timing rows, ratios, statuses and the JSON file it writes."""

import json

import pytest
import torch

from bench import harness


def _strict_json(path):
    """Parse as JSON that other tools accept: NaN and Infinity are not JSON."""
    def reject(constant):
        raise AssertionError(f"{path} holds {constant}, which is not valid JSON")
    return json.loads(path.read_text(), parse_constant=reject)


def _trivial(budget_s=2.0):
    def inputs(device):
        return {"a": torch.randn(64, 64, device=device), "b": torch.randn(64, 64, device=device)}

    def slow(inp):
        return lambda: [inp["a"] @ inp["b"] for _ in range(8)]

    def fast(inp):
        return lambda: inp["a"] @ inp["b"]

    def missing(inp):
        raise harness.Unsupported("needs a library that is not installed")

    def broken(inp):
        raise RuntimeError("kaboom")

    case = harness.Case("mm64", inputs, params={"n": 64}, flops=2 * 64**3 * 8, bytes=3 * 64 * 64 * 4,
                        items={"samples": 8})
    return harness.Benchmark("trivial", [case], {"slow": slow, "fast": fast, "missing": missing,
                                                  "broken": broken}, baseline="slow", budget_s=budget_s)


def test_run_writes_valid_json_with_ratios_and_statuses(tmp_path):
    record = harness.run(_trivial(), "cpu", rounds=2, log=lambda line: None)
    path = harness.save(record, tmp_path)
    data = _strict_json(path)
    assert path.name.startswith("trivial_cpu_") and path.suffix == ".json"
    for key in ("device", "torch", "triton", "semvlp", "git_commit", "date", "timer"):
        assert key in data["env"]
    assert data["env"]["timer"] == "wall_clock_median"
    rows = {r["provider"]: r for r in data["results"]}
    assert [r["provider"] for r in data["results"]][0] == "slow"  # the baseline runs first
    assert rows["missing"]["status"] == "unsupported" and "not installed" in rows["missing"]["reason"]
    assert rows["broken"]["status"] == "error" and "kaboom" in rows["broken"]["reason"]
    slow, fast = rows["slow"], rows["fast"]
    assert slow["status"] == fast["status"] == "ok"
    assert slow["samples"] >= 6 and slow["time_ms_q20"] <= slow["time_ms"] <= slow["time_ms_q80"]
    assert slow["speedup_vs_baseline"] == 1.0
    assert fast["speedup_vs_baseline"] == pytest.approx(slow["time_ms"] / fast["time_ms"])
    assert slow["tflops"] == pytest.approx(2 * 64**3 * 8 / (slow["time_ms"] / 1e3) / 1e12)
    assert slow["gbps"] == pytest.approx(3 * 64 * 64 * 4 / (slow["time_ms"] / 1e3) / 1e9)
    assert slow["rates"]["samples_per_s"] == pytest.approx(8 / (slow["time_ms"] / 1e3))
    assert slow["mfu"] is None  # no MFU on the CPU
    assert harness.load(path)["benchmark"] == "trivial"


def test_save_never_overwrites(tmp_path):
    record = harness.run(_trivial(budget_s=0.3), "cpu", providers=["fast"], log=lambda line: None)
    first, second = harness.save(record, tmp_path), harness.save(record, tmp_path)
    assert first != second and first.exists() and second.exists()
    assert [r["provider"] for r in _strict_json(second)["results"]] == ["slow", "fast"]


def test_spent_budget_skips_the_rest(monkeypatch):
    clock = iter(range(0, 10_000, 100))
    monkeypatch.setattr(harness.time, "perf_counter", lambda: float(next(clock)))
    record = harness.run(_trivial(budget_s=1.0), "cpu", log=lambda line: None)
    statuses = [r["status"] for r in record["results"]]
    assert "skipped" in statuses and "time budget" in record["results"][-1]["reason"]


def test_main_writes_a_file_and_reports_errors(tmp_path):
    threads = torch.get_num_threads()
    try:
        code = harness.main(lambda args: _trivial(budget_s=0.5),
                            argv=["--device", "cpu", "--out-dir", str(tmp_path), "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert code == 1  # the "broken" provider failed
    (path,) = tmp_path.glob("trivial_cpu_*.json")
    record = _strict_json(path)
    assert len(record["results"]) == 4 and record["env"]["device"].endswith("(1 threads)")


def test_bad_benchmark_definitions_are_rejected():
    case = harness.Case("c", lambda device: None)
    with pytest.raises(ValueError, match="baseline"):
        harness.Benchmark("b", [case], {"x": lambda inp: (lambda: None)}, baseline="y")
    with pytest.raises(ValueError, match="distinct"):
        harness.Benchmark("b", [case, case], {"x": lambda inp: (lambda: None)}, baseline="x")
    with pytest.raises(ValueError, match="providers"):
        harness.run(_trivial(), "cpu", providers=["nope"])


def test_plot_draws_from_the_json(tmp_path):
    from bench import plot

    path = harness.save(harness.run(_trivial(budget_s=0.3), "cpu", log=lambda line: None), tmp_path)
    out = tmp_path / "trivial.png"
    assert plot.main([str(path), "--metric", "time_ms", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_built_provider_is_timed_once_even_past_the_budget(monkeypatch):
    now = [0.0]

    def clock():
        now[0] += 0.001
        return now[0]

    def expensive(inp):  # building takes longer than the whole budget
        now[0] += 10.0
        return lambda: None

    monkeypatch.setattr(harness.time, "perf_counter", clock)
    case = harness.Case("c", lambda device: None, items={"calls": 1})
    bench = harness.Benchmark("b", [case], {"base": expensive, "other": expensive}, baseline="base",
                              budget_s=5.0, rounds=3)
    rows = {r["provider"]: r for r in harness.run(bench, "cpu", log=lambda line: None)["results"]}
    assert rows["base"]["status"] == "ok" and rows["base"]["samples"] == 3  # one round, minimum calls
    assert rows["other"]["status"] == "skipped"


def test_sigterm_ends_the_run_and_still_writes_the_json(tmp_path):
    import os
    import signal

    def terminating(inp):
        calls = []

        def call():  # the first call (the memory probe) passes, the first timed call is terminated
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
        return call

    def fast(inp):
        return lambda: None

    cases = [harness.Case("first", lambda device: None), harness.Case("second", lambda device: None)]
    bench = harness.Benchmark("term", cases, {"fast": fast, "terminating": terminating}, baseline="fast",
                              budget_s=2.0)
    before = signal.getsignal(signal.SIGTERM)
    assert harness.main(lambda args: bench, argv=["--device", "cpu", "--out-dir", str(tmp_path)]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
    (path,) = tmp_path.glob("term_cpu_*.json")
    record = _strict_json(path)
    assert record["interrupted"] is True
    statuses = [(r["case"], r["provider"], r["status"]) for r in record["results"]]
    assert statuses == [("first", "fast", "ok"), ("first", "terminating", "skipped"),
                        ("second", "fast", "skipped"), ("second", "terminating", "skipped")]
    assert "interrupted" in record["results"][-1]["reason"]
