"""2-rank ZeRO-2 and ZeRO-3 on the CPU compute the same per-step losses as one process that reads the same
global batches (twice the gradient accumulation), in fp32 and bf16, with alternating stream modes; the
deepspeed and torchrun launchers both work; the data goes through the real readers (a written data folder)."""

import pytest
import torch
from safetensors.torch import load_file

from semvlp import SemVLPConfig, SemVLPForPretraining
from semvlp.data.synthetic import write_synthetic
from tolerances import DISTRIBUTED_LOSS_RTOL

from pretrain_runs import DTYPES, deepspeed_config, losses, pretrain_args, run, tiny_config

STEPS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    write_synthetic(folder / "data", {"train": 40, "val": 6, "novel": 6}, seed=5, formats=("tsv",))
    return folder


@pytest.mark.parametrize("precision", list(DTYPES))
@pytest.mark.parametrize("stage,launcher", [(2, "deepspeed"), (3, "torchrun")])
def test_two_ranks_match_one_process(setup, stage, launcher, precision):
    """The reference is the same ZeRO stage in one process: stages differ in how Adam treats the parameters
    that a single-stream step leaves without a gradient, so each stage is compared with itself."""
    name = f"zero{stage}_{precision}"
    one, two = setup / f"one_{name}", setup / f"two_{name}"
    run("plain", 1, pretrain_args(setup / "data", tiny_config(setup), deepspeed_config(setup, name), one, STEPS, 2))
    run(launcher, 2, pretrain_args(setup / "data", tiny_config(setup), deepspeed_config(setup, name), two, STEPS, 1,
                                   "--export"))
    ours, ref = losses(two), losses(one)
    assert [r["step"] for r in ours] == list(range(1, STEPS + 1))
    assert [r["mode"] for r in ours] == ["single", "two"] * (STEPS // 2)
    rtol = DISTRIBUTED_LOSS_RTOL[DTYPES[precision]]
    for a, b in zip(ours, ref):
        assert abs(a["loss"] - b["loss"]) <= rtol * abs(b["loss"]), (a["step"], a["loss"], b["loss"])
    # It trains: weights moved from their initialisation (seed 0, as the run's), by no more than a few Adam steps
    # of at most the peak LR each (a larger gap would mean another initialisation, not training).
    torch.manual_seed(0)
    initial = SemVLPForPretraining(SemVLPConfig.load(two / "config.json")).state_dict()
    trained = load_file(str(two / "export" / "model.safetensors"))
    for key in ("semvlp.encoder.layers.0.self_attention.qkv.weight",
                "semvlp.encoder.layers.3.cross_attention.query.weight", "itm_head.weight"):
        moved = (trained[key] - initial[key]).abs().max().item()
        assert 0 < moved < STEPS * 2e-3 * 2, (key, moved)
    assert (two / "results.json").is_file() and (two / "curves.png").is_file()
