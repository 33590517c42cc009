"""bench_overhead: every target runs under both providers, the PyTorch baseline of packed attention computes what
ops.varlen_attention computes, and a --quick run writes host-timed JSON with the CPU capability."""

import json

import torch

from bench import bench_overhead, harness
from provider_runs import cases_run_by_provider
from semvlp import ops


def _args(*argv):
    parser = harness.parser()
    bench_overhead.add_arguments(parser)
    args = parser.parse_args(["--device", "cpu", *argv])
    args.device = torch.device("cpu")
    return args


def test_every_case_runs_under_both_providers_except_the_steps_torch_has_none_of():
    benchmark = bench_overhead.build(_args("--repeat", "1"))
    ran = cases_run_by_provider(benchmark)
    names = {case.name for case in benchmark.cases}
    assert ran["semvlp"] == names
    assert ran["torch"] == names - {"step_single", "step_two"}
    for target in ("layer_norm", "add_layer_norm", "bias_gelu", "attention", "varlen_attention", "nn_layer_norm",
                   "nn_self_attention", "nn_cross_attention", "nn_feed_forward"):
        assert {f"{target}_fwd", f"{target}_fwd_bwd"} <= names, target


def test_torch_varlen_baseline_computes_what_ops_varlen_attention_does():
    kv_index, cu_q, cu_k, max_q, max_k = bench_overhead._cross_layout(torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    total = int(cu_q[-1])
    q = torch.randn(total, 2, 16, generator=gen)
    kv = torch.randn(total, 2, 16, generator=gen).index_select(0, kv_index)
    expected = ops.varlen_attention(q, kv, kv, cu_q, cu_k, max_q, max_k, backend="reference")
    got = bench_overhead.torch_varlen_attention(q, kv, kv, cu_q, cu_k, max_q, max_k)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (got[: int(cu_q[2])][int(cu_q[1]):] == 0).all()  # the segment with no keys


def test_quick_run_writes_host_timed_json_with_the_cpu_capability(tmp_path):
    rc = bench_overhead.main(["--quick", "--calls", "1", "--budget", "1", "--cases", "layer_norm_fwd",
                              "--out-dir", str(tmp_path)])
    assert rc == 0
    [path] = tmp_path.glob("overhead_cpu_*.json")
    record = harness.load(path)
    assert record["env"]["timer"] == "host_wall_clock_median"
    assert record["env"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["env"]["threads"] == 1 and "(1 threads)" in record["env"]["device"]
    rows = {r["provider"]: r for r in record["results"]}
    assert rows["torch"]["status"] == rows["semvlp"]["status"] == "ok"
    calls = rows["semvlp"]["params"]["calls_per_timing"]
    assert rows["semvlp"]["us_per_call"] == rows["semvlp"]["time_ms"] * 1e3 / calls
    assert rows["semvlp"]["speedup_vs_baseline"] == rows["torch"]["time_ms"] / rows["semvlp"]["time_ms"]
    json.dumps(record, allow_nan=False)
