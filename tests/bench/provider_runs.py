"""Running every provider of a benchmark once, as the smoke tests of the benches do."""

import torch

from bench import harness


def cases_run_by_provider(benchmark: harness.Benchmark) -> dict[str, set[str]]:
    """{provider: names of the cases it ran}: each provider is called once on each case's CPU inputs; one that
    raises harness.Unsupported for a case skips it."""
    ran = {name: set() for name in benchmark.providers}
    for case in benchmark.cases:
        inputs = case.make_inputs(torch.device("cpu"))
        for name, provider in benchmark.providers.items():
            try:
                fn = provider(inputs)
            except harness.Unsupported:
                continue
            fn()
            ran[name].add(case.name)
    return ran
