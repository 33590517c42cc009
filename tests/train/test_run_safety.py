"""A run never loses an earlier run's history: a new run refuses a folder holding one (unless --resume or
--overwrite), a non-finite step neither saves nor prunes a checkpoint, and a metrics line cut short by a kill
does not block resume."""

import json
import logging
import math
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from semvlp.data.synthetic import write_synthetic
from semvlp.train import loop
from semvlp.train.checkpoint import CheckpointManager, latest_tag
from semvlp.train.metrics import MetricsLogger, read_records
from semvlp.train.options import PretrainOptions
from semvlp.train.run_folder import check_output, remove_history

from pretrain_runs import REPO, deepspeed_config, losses, pretrain_args, run, tiny_config


def _earlier_run(out, steps=9):
    """What a finished run leaves: checkpoints with `latest`, metrics, TensorBoard logs, results."""
    tag = f"step_{steps:08d}"
    (out / "checkpoints" / tag).mkdir(parents=True)
    (out / "checkpoints" / "latest").write_text(tag + "\n")
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n"
                                               for s in range(1, steps + 1)))
    (out / "tensorboard").mkdir()
    (out / "results.json").write_text("{}\n")


@pytest.mark.parametrize("history", ["checkpoints", "metrics.jsonl", "eval.jsonl", "tensorboard", "export"])
def test_a_new_run_refuses_a_folder_holding_an_earlier_run(tmp_path, history):
    path = tmp_path / history
    if history.endswith((".jsonl", ".json")):
        path.write_text("{}\n")
    else:
        path.mkdir()
    with pytest.raises(ValueError, match=rf"output: {tmp_path} already holds a run \({history}\); pass --resume .*"
                                         "--overwrite"):
        check_output(tmp_path, resume=False, overwrite=False)
    check_output(tmp_path, resume=True, overwrite=False)
    check_output(tmp_path, resume=False, overwrite=True)
    assert path.exists()  # checking never deletes


def test_a_folder_without_run_history_is_accepted(tmp_path):
    """`make pretrain` writes its data and vocab into the run folder before the run starts."""
    (tmp_path / "data").mkdir()
    (tmp_path / "vocab").mkdir()
    (tmp_path / ".made-by-make-pretrain").touch()
    check_output(tmp_path, resume=False, overwrite=False)
    check_output(tmp_path / "new" / "run", resume=False, overwrite=False)
    assert (tmp_path / "new" / "run").is_dir()


def test_the_output_must_be_a_writable_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=rf"output: {tmp_path / 'file'} is a file; expected a folder"):
        check_output(tmp_path / "file", resume=False, overwrite=False)
    with pytest.raises(ValueError, match=rf"output: cannot write to {tmp_path / 'file' / 'run'} \("):
        check_output(tmp_path / "file" / "run", resume=False, overwrite=False)


def test_overwrite_removes_the_run_history_and_nothing_else(tmp_path):
    _earlier_run(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "captions_train.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    remove_history(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]
    assert (tmp_path / "data" / "captions_train.json").is_file()


def test_resume_and_overwrite_together_are_refused():
    with pytest.raises(ValueError, match="resume, overwrite: pass one of them"):
        PretrainOptions("m.json", "d.json", "out", 5, resume=True, overwrite=True)


class _Engine:
    """Saves its one "weight" (the last step's loss) where DeepSpeed would write its files."""

    weight = 0.0

    def save_checkpoint(self, root, tag, client_state, save_latest):
        folder = Path(root) / tag
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "weights.json").write_text(json.dumps({"weight": self.weight, **client_state}))


def test_non_finite_steps_neither_save_nor_prune_a_checkpoint(tmp_path, monkeypatch, group):
    """Checkpoints every step, two kept: the non-finite steps 3, 5 and 6 save nothing, so the two kept are the
    good steps 2 and 4 and `latest` names step 4 when the third non-finite step in a row stops the run."""
    scripted = [1.0, 0.9, math.nan, 0.8, math.inf, math.nan, math.nan, 0.7]
    engine = _Engine()

    def train_step(run, step):
        engine.weight = scripted[step]
        return {"step": step + 1, "epoch": 0, "mode": "single", "loss": scripted[step], "losses": {},
                "lr": 1e-3, "samples_per_s": 1.0, "skipped": False, "nonfinite": not math.isfinite(scripted[step])}

    monkeypatch.setattr(loop, "train_step", train_step)
    options = PretrainOptions("m.json", "d.json", str(tmp_path), len(scripted), checkpoint_every=1,
                              keep_checkpoints=2, max_nonfinite_steps=3)
    metrics = MetricsLogger(tmp_path, True, options.max_steps)
    run = SimpleNamespace(options=options, start=0, engine=engine, metrics=metrics, out=tmp_path,
                          checkpoints=CheckpointManager(tmp_path / "checkpoints", True, keep=2),
                          config=SimpleNamespace(to_dict=dict))
    try:
        with pytest.raises(loop.NonFiniteLossError, match="stopping at step 7: the loss was NaN or infinite in 3 "
                                                          "consecutive steps"):
            loop._train(run)
    finally:
        metrics.close()
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["step_00000002", "step_00000004"]
    assert latest_tag(root) == "step_00000004"
    saved = json.loads((root / "step_00000004" / "weights.json").read_text())
    assert saved == {"weight": 0.8, "step": 4}
    assert [r["step"] for r in read_records(tmp_path / "metrics.jsonl")] == list(range(1, 8))


def test_a_metrics_line_cut_short_is_dropped_with_a_warning(tmp_path, caplog):
    records = [{"step": s, "loss": 2.0 / s, "losses": {"mlm": 1.0}} for s in range(1, 6)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 6, "loss": 0.3')
    with caplog.at_level(logging.WARNING, logger="semvlp.train.metrics"):
        MetricsLogger(tmp_path, True, 10, start_step=4).close()
    assert read_records(path) == records[:4]
    assert path.read_text().endswith("}\n")
    assert f"{path}: dropped its last line, a record cut short" in caplog.text


def test_a_broken_metrics_line_before_the_last_is_an_error_naming_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(ValueError, match=rf"{path}: line 2 is not a JSON record"):
        MetricsLogger(tmp_path, True, 10, start_step=3)
    assert path.read_text().count("\n") == 3  # left as it was


def test_overwrite_then_a_kill_mid_line_then_resume(tmp_path):
    """--overwrite replaces an earlier run (whose later-named checkpoint would otherwise prune the new ones);
    a run killed after step 3, mid-way through writing step 4's record, resumes from its step-2 checkpoint and
    reproduces the uninterrupted losses."""
    write_synthetic(tmp_path / "data", {"train": 24, "val": 4, "novel": 4}, seed=5, formats=("npz",))
    out = tmp_path / "run"
    _earlier_run(out, steps=9)
    (out / "data").mkdir()
    (out / "data" / "keep.txt").write_text("not the run's")
    args = pretrain_args(tmp_path / "data", tiny_config(tmp_path), deepspeed_config(tmp_path, "zero2_fp32"), out, 4,
                         1, "--checkpoint-every", "2")
    run("plain", 1, [*args, "--overwrite"])
    root = out / "checkpoints"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["step_00000002", "step_00000004"]
    assert latest_tag(root) == "step_00000004"
    assert (out / "data" / "keep.txt").is_file()
    full = losses(out)
    assert [r["step"] for r in full] == [1, 2, 3, 4]

    # What a SIGKILL while writing step 4's record leaves: the step-2 checkpoint and a partial line.
    (root / "latest").write_text("step_00000002\n")
    shutil.rmtree(root / "step_00000004")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in lines[:3]) + lines[3][:25])
    resumed = run("plain", 1, [*args, "--resume"])
    assert "metrics.jsonl: dropped its last line, a record cut short" in resumed.stderr
    assert [(r["step"], r["loss"]) for r in losses(out)] == [(r["step"], r["loss"]) for r in full]


def _make(*args):
    return subprocess.run(["make", "-s", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_pretrain_deletes_only_a_folder_it_made(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny.json").write_text("{}")
    done = _make("pretrain-folder", f"RUN={configs}")
    assert done.returncode != 0
    assert f"make pretrain: {configs} exists and was not made by make pretrain; not deleting it" in done.stderr
    assert (configs / "tiny.json").read_text() == "{}"

    made = tmp_path / "runs" / "pretrain"
    assert _make("pretrain-folder", f"RUN={made}").returncode == 0
    (made / "metrics.jsonl").write_text("{}\n")
    assert _make("pretrain-folder", f"RUN={made}").returncode == 0  # its own folder: replaced by an empty one
    assert [p.name for p in made.iterdir()] == [".made-by-make-pretrain"]

    # `make pretrain` deletes nothing but through that check, which comes first.
    plan = _make("-n", "pretrain", f"RUN={configs}").stdout.splitlines()
    removals = [i for i, line in enumerate(plan) if "rm " in line]
    guard = next(i for i, line in enumerate(plan) if f'[ ! -f "{configs}/.made-by-make-pretrain" ]' in line)
    assert len(removals) == 1 and guard < removals[0], plan
    assert plan[removals[0]].strip() == f'rm -rf -- "{configs}"'
