"""pytest-benchmark over the harness benchmarks, at their --quick sizes on the CPU (not part of the test-suite):

    .venv/bin/python -m pytest bench/ --benchmark-json=bench/results/pytest-benchmark.json
    .venv/bin/python -m pytest bench/ -k layers --benchmark-json=layers.json

Every case x provider of every `bench/bench_*.py` becomes one benchmark; a provider that cannot run on the
CPU is skipped with its reason. The harness (`python -m bench.bench_<op>`) remains the tool for GPU runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from bench import harness

CPU = torch.device("cpu")


def _benchmarks() -> list[tuple[str, harness.Benchmark | str]]:
    """(module name, its Benchmark built with --quick for the CPU, or the reason it could not be built)."""
    found = []
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        try:
            module = importlib.import_module(f"bench.{path.stem}")
            p = harness.parser()
            if hasattr(module, "add_arguments"):
                module.add_arguments(p)
            args = p.parse_args(["--quick", "--device", "cpu"])
            args.device = CPU
            found.append((path.stem, module.build(args)))
        except Exception as err:  # one broken bench script must not hide the others
            found.append((path.stem, f"{type(err).__name__}: {err}"))
    return found


def _params():
    params = []
    for module, bench in _benchmarks():
        if isinstance(bench, str):
            params.append(pytest.param(module, None, None, id=module, marks=pytest.mark.skip(reason=bench)))
            continue
        for case in bench.cases:
            for provider in bench.providers:
                params.append(pytest.param(bench, case, provider, id=f"{bench.name}-{case.name}-{provider}"))
    return params


_LAST_INPUTS: dict[int, object] = {}


def _inputs(case: harness.Case):
    """The case's inputs, shared by its providers (kept for the last case only)."""
    if id(case) not in _LAST_INPUTS:
        _LAST_INPUTS.clear()
        torch.manual_seed(0)
        _LAST_INPUTS[id(case)] = case.make_inputs(CPU)
    return _LAST_INPUTS[id(case)]


@pytest.mark.parametrize("bench,case,provider", _params())
def test_benchmark(benchmark, bench, case, provider):
    try:
        fn = bench.providers[provider](_inputs(case))
    except harness.Unsupported as why:
        pytest.skip(str(why))
    benchmark.extra_info.update(case=case.name, provider=provider, baseline=bench.baseline, params=case.params,
                                flops=case.flops, bytes=case.bytes, items=case.items)
    benchmark(fn)
