"""bench_attention and bench_layer_norm run in --quick mode: every provider either runs or says why not."""

import pytest
import torch

from bench import bench_attention, bench_layer_norm, harness


@pytest.mark.parametrize("module", [bench_attention, bench_layer_norm], ids=lambda m: m.__name__)
def test_quick_run_has_no_errors(module):
    args = harness.parser().parse_args(["--quick", "--device", "cpu"])
    args.device = torch.device("cpu")
    args.compile = False
    benchmark = module.build(args)
    record = harness.run(benchmark, "cpu", budget_s=4, providers=["semvlp-reference", "semvlp-triton"],
                         cases=[benchmark.cases[0].name], log=lambda _: None)
    rows = {r["provider"]: r for r in record["results"]}
    assert all(r["status"] != "error" for r in rows.values()), [r.get("reason") for r in rows.values()]
    assert rows[benchmark.baseline]["status"] == "ok"
