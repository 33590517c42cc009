"""bench_attention and bench_layer_norm in --quick mode: every provider of every case either runs once or
says why it cannot (harness.Unsupported), and the harness times the baseline."""

import os

import pytest
import torch

from bench import bench_attention, bench_layer_norm, harness
from provider_runs import cases_run_by_provider


def _quick(module):
    parser = harness.parser()
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    args = parser.parse_args(["--quick", "--device", "cpu"])
    args.device = torch.device("cpu")
    args.compile = False
    return module.build(args)


@pytest.mark.parametrize("module", [bench_attention, bench_layer_norm], ids=lambda m: m.__name__)
def test_every_provider_runs_or_is_unsupported(module):
    benchmark = _quick(module)
    ran = {name for name, cases in cases_run_by_provider(benchmark).items() if cases}
    # CPU inputs reach the triton backend only through the interpreter.
    interpreted = {"semvlp-triton"} if os.environ.get("TRITON_INTERPRET") == "1" else set()
    assert {benchmark.baseline, "semvlp-reference"} | interpreted <= ran


@pytest.mark.parametrize("module", [bench_attention, bench_layer_norm], ids=lambda m: m.__name__)
def test_harness_times_the_baseline(module):
    benchmark = _quick(module)
    record = harness.run(benchmark, "cpu", budget_s=1, providers=[benchmark.baseline],
                         cases=[benchmark.cases[0].name], log=lambda _: None)
    assert [r["status"] for r in record["results"]] == ["ok"]
    assert record["results"][0]["speedup_vs_baseline"] == 1.0
