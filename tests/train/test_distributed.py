"""2-rank ZeRO-2 and ZeRO-3 on the CPU compute the same per-step losses as one process that reads the same
global batches (twice the gradient accumulation), in fp32 and bf16, with alternating stream modes; the
deepspeed and torchrun launchers both work; the data goes through the real readers (a written data folder)."""

import pytest

from semvlp.data.synthetic import write_synthetic
from tolerances import DISTRIBUTED_LOSS_RTOL

from pretrain_runs import DTYPES, deepspeed_config, losses, pretrain_args, run, tiny_config

STEPS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    write_synthetic(folder / "data", {"train": 40, "val": 6, "novel": 6}, seed=5, formats=("tsv",))
    return folder


@pytest.fixture(scope="module")
def reference(setup):
    """One process, accumulation 2, per precision."""
    out = {}
    for precision in DTYPES:
        path = setup / f"one_{precision}"
        run("plain", 1, pretrain_args(setup / "data", tiny_config(setup),
                                      deepspeed_config(setup, f"zero2_{precision}"), path, STEPS, 2))
        out[precision] = losses(path)
    return out


@pytest.mark.parametrize("precision", list(DTYPES))
@pytest.mark.parametrize("stage,launcher", [(2, "deepspeed"), (3, "torchrun")])
def test_two_ranks_match_one_process(setup, reference, stage, launcher, precision):
    path = setup / f"two_ranks_zero{stage}_{precision}"
    run(launcher, 2, pretrain_args(setup / "data", tiny_config(setup),
                                   deepspeed_config(setup, f"zero{stage}_{precision}"), path, STEPS, 1))
    ours, ref = losses(path), reference[precision]
    assert [r["step"] for r in ours] == list(range(1, STEPS + 1))
    assert [r["mode"] for r in ours] == ["single", "two"] * (STEPS // 2)
    rtol = DISTRIBUTED_LOSS_RTOL[DTYPES[precision]]
    for a, b in zip(ours, ref):
        assert abs(a["loss"] - b["loss"]) <= rtol * abs(b["loss"]), (a["step"], a["loss"], b["loss"])
    assert ours[-1]["loss"] < ours[0]["loss"]  # it trains
    assert (path / "results.json").is_file() and (path / "curves.png").is_file()
