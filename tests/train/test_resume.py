"""A run killed with SIGKILL between checkpoints and resumed with --resume reproduces the uninterrupted run's
losses exactly (fp32, CPU, dropout on, a DataLoader worker reading HDF5 features lazily)."""

import numpy as np
from safetensors.numpy import load_file

from semvlp.data.corpus import load_corpus
from semvlp.data.synthetic import write_synthetic
from semvlp.train.checkpoint import latest_tag

from pretrain_runs import deepspeed_config, kill_after_step, losses, pretrain_args, run, tiny_config

STEPS, EVERY = 12, 4


def _args(folder, out, *extra):
    return pretrain_args(folder / "data", tiny_config(folder, dropout=0.1), deepspeed_config(folder, "zero2_fp32"),
                         out, STEPS, 1, "--checkpoint-every", str(EVERY), "--num-workers", "1", *extra)


def test_sigkill_between_checkpoints_then_resume_reproduces_the_losses(tmp_path):
    write_synthetic(tmp_path / "data", {"train": 30, "val": 4, "novel": 4}, seed=3, formats=("h5",))
    full = tmp_path / "full"
    run("plain", 1, _args(tmp_path, full, "--export"))
    # The region features are standardised with the training split's statistics, saved with the weights.
    exported = load_file(str(full / "export" / "model.safetensors"))
    mean, std = load_corpus(tmp_path / "data", "train").feature_statistics()
    np.testing.assert_allclose(exported["semvlp.region_embeddings.feature_mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(exported["semvlp.region_embeddings.feature_std"], np.maximum(std, 1e-3), rtol=1e-6)

    broken = tmp_path / "broken"
    kill_after_step("plain", 1, _args(tmp_path, broken), EVERY + 1, broken / "metrics.jsonl")
    logged = max(r["step"] for r in losses(broken))
    saved = int(latest_tag(broken / "checkpoints").split("_")[1])
    assert saved == EVERY < logged < STEPS, (saved, logged)  # killed between two checkpoints
    assert not (broken / "results.json").exists()

    run("plain", 1, _args(tmp_path, broken, "--resume"))
    resumed = losses(broken)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    expected = losses(full)
    for a, b in zip(resumed, expected):
        assert (a["mode"], a["loss"], a["losses"]) == (b["mode"], b["loss"], b["losses"]), a["step"]
