"""Non-finite losses: after N consecutive steps the run stops with a message and exit status 1; a step whose
loss is not finite saves no checkpoint, so the ones kept (and `latest`) hold finite weights."""

import json
import math
import re
import subprocess

import numpy as np
import torch

from semvlp.data.formats import open_features
from semvlp.data.formats.lxmert_tsv import write_tsv
from semvlp.data.synthetic import write_synthetic
from semvlp.train.checkpoint import latest_tag

from pretrain_runs import REPO, command, deepspeed_config, environment, pretrain_args


def test_consecutive_infinite_losses_stop_the_run_with_a_message(tmp_path):
    data = tmp_path / "data"
    write_synthetic(data, {"train": 20}, seed=1, formats=("tsv",))
    store = open_features(data, "tsv")
    records = [store[i] for i in store.ids()]
    for r in records:
        r.features = r.features * np.float32(3e38)  # finite (valid records) but the regression loss overflows
    write_tsv(data / "features.tsv", records)
    args = pretrain_args(data, REPO / "configs/model/tiny.json", deepspeed_config(tmp_path, "zero2_fp32"),
                         tmp_path / "out", 10, 1, "--max-nonfinite-steps", "3", "--checkpoint-every", "1")
    done = subprocess.run(command("plain", 1, args), cwd=REPO, env=environment(), capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 1, done.stderr[-3000:]
    stop = re.search(r"stopping at step (\d+): the loss was NaN or infinite in 3 consecutive steps", done.stderr)
    assert stop, done.stderr[-3000:]
    # The run stops at the third non-finite step in a row (a batch without masked regions can still be finite).
    logged = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == int(stop.group(1)) < 10
    assert not any(math.isfinite(r["loss"]) for r in logged[-3:])
    assert all(math.isfinite(r["loss"]) for r in logged[:-3])
    # Checkpoints every step: only the finite ones were saved, and `latest` is the last of them.
    root = tmp_path / "out" / "checkpoints"
    finite = [r["step"] for r in logged if math.isfinite(r["loss"])]
    kept = sorted(int(p.name.split("_")[1]) for p in root.glob("step_*"))
    assert finite and kept == finite[-2:], (kept, finite)
    assert latest_tag(root) == f"step_{finite[-1]:08d}"
    for step in kept:
        weights = torch.load(root / f"step_{step:08d}" / "mp_rank_00_model_states.pt", weights_only=True)["module"]
        assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()), step
