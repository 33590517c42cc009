"""The study runner without training: its schedules, the command lines it launches, the main job's recipe it
takes from the Makefile, and that a finished (schedule, seed) is not run again."""

import shlex
import subprocess
import sys

import pytest
from pretrain_runs import REPO

from semvlp.experiments import ablation
from semvlp.experiments.ablation import (ABLATION, SCHEDULES, AblationSetup, pretrain_command, run_folder,
                                         trained_modes)
from semvlp.train.schedule import ModeSchedule


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_each_schedule_parses_and_trains_the_modes_it_is_evaluated_in(schedule):
    kind, ratio = SCHEDULES[schedule]
    parsed = ModeSchedule.parse(kind, ratio, total_steps=700)
    assert sorted(parsed.modes) == sorted(trained_modes(schedule))
    assert {parsed.mode(s) for s in range(700)} == set(trained_modes(schedule))
    assert ":" not in run_folder(schedule, 0)


def test_the_curricula_switch_at_half_the_steps():
    firsts = {}
    for schedule in ("single-then-two", "two-then-single"):
        parsed = ModeSchedule.parse(*SCHEDULES[schedule], total_steps=700)
        firsts[schedule] = [parsed.mode(s) for s in (0, 349, 350, 699)]
    assert firsts == {"single-then-two": ["single", "single", "two", "two"],
                      "two-then-single": ["two", "two", "single", "single"]}


# The commands a target would run. --no-print-directory: under `make test` this make is a sub-make, which would
# otherwise print "make[1]: Entering directory" lines among them.
MAKE_N = ("make", "-n", "--no-print-directory", "-o", ".venv/.semvlp-installed")


def _make(target: str, *variables: str) -> list[str]:
    """The words of the `semvlp.cli pretrain` or `semvlp.cli ablation` command of `make -n TARGET`."""
    out = subprocess.run([*MAKE_N, target, *variables], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.replace("\\\n", " ")
    words = shlex.split(out)
    start = max(i for i, word in enumerate(words[:-1]) if word == "semvlp.cli" and words[i + 1] in
                ("pretrain", "ablation"))
    end = words.index("&&", start) if "&&" in words[start:] else len(words)
    return words[start + 1:end]


def _options(words: list[str]) -> dict[str, str | None]:
    """{--flag: value} of a command line's words (--flag=value or --flag value; None for a switch)."""
    out = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            flag, _, value = word.partition("=")
            following = words[i + 1] if i + 1 < len(words) else "--"
            out[flag] = value or (None if following.startswith("--") else following)
    return out


def test_make_ablation_pretrains_at_the_main_jobs_recipe():
    pretrain = _options(_make("pretrain"))
    words = _make("ablation")
    study = _options(words)
    runs = _options(pretrain_command(AblationSetup(
        model_config=study["--model-config"], deepspeed_config=study["--deepspeed-config"],
        pretrain_steps=int(study["--pretrain-steps"]), ranks=int(study["--ranks"]),
        pretrain_options=study["--pretrain-options"]), REPO / "data", REPO / "vocab.txt", "alternate", 0, REPO))
    for flag in ("--output", "--data", "--vocab", "--mode-schedule", "--mode-ratio", "--seed", "--keep-checkpoints",
                 "--eval-batch-size", "--overwrite", "--module", "--num_accelerators", "--master_port"):
        runs.pop(flag, None)
        pretrain.pop(flag, None)
    assert runs == pretrain and "--attribute-mask-rate" in runs
    # The same data and vocab sizes as the main job's `data synth` and `data vocab`.
    data = _options(shlex.split(subprocess.run([*MAKE_N, "pretrain"], cwd=REPO,
                                               capture_output=True, text=True, check=True).stdout))
    assert (study["--train-scenes"], study["--held-out-scenes"], study["--held-out-scenes"], study["--vocab-size"]) \
        == (data["--train"], data["--val"], data["--novel"], data["--vocab-size"])
    assert study["--ranks"] == "2" and words[words.index("--schedules") + 1:] == list(ABLATION)
    # ABLATION_STEPS sets the budget of every run (a quick check of the machinery); the recipe stays.
    assert _options(_make("ablation", "ABLATION_STEPS=20"))["--pretrain-steps"] == "20"


def test_make_schedule_study_runs_every_schedule():
    words = _make("schedule-study")
    assert words[words.index("--schedules") + 1:] == list(SCHEDULES)
    assert _options(words)["--name"] == "schedule_study"


def test_runs_of_more_than_one_rank_go_through_deepspeeds_launcher(tmp_path):
    setup = AblationSetup(ranks=2, pretrain_options="--precision fp32 --lr=2e-3", pretrain_steps=10)
    command = pretrain_command(setup, tmp_path / "data", tmp_path / "vocab.txt", "two-then-single", 3, tmp_path)
    assert command[:5] == [sys.executable, "-m", "deepspeed.launcher.runner", "--num_accelerators", "2"]
    assert command[command.index("--module") + 1:command.index("--module") + 3] == ["semvlp.cli", "pretrain"]
    options = _options(command)
    assert options["--mode-schedule"] == "curriculum:two-single" and options["--mode-ratio"] == "1:1"
    assert options["--seed"] == "3" and options["--precision"] == "fp32" and options["--lr"] == "2e-3"
    assert "--micro-batch-size" not in options  # not set: the DeepSpeed config's
    plain = pretrain_command(AblationSetup(micro_batch_size=8), tmp_path, tmp_path, "single", 0, tmp_path)
    assert plain[:3] == [sys.executable, "-m", "semvlp.cli"] and _options(plain)["--micro-batch-size"] == "8"


@pytest.mark.parametrize("kwargs,match", [
    ({"pretrain_options": "--seed 3"}, r"\['--seed'\]"),
    ({"pretrain_options": "--lr=1e-3", "lr": 2e-3}, r"\['--lr'\]"),
    ({"schedules": ["alternate-2:1"]}, "schedules: expected some of"),
    ({"ranks": 0}, "ranks: expected a positive int"),
    ({"name": "a/b"}, "name"),
])
def test_setup_rejects_what_it_cannot_run(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AblationSetup(**kwargs)


def test_a_finished_run_is_kept_and_a_changed_setup_runs_again(tmp_path, monkeypatch):
    trained = []

    def pretrain(setup, data, vocab, schedule, seed, out):
        trained.append((schedule, seed))
        out.mkdir(parents=True, exist_ok=True)
        return {f"val/{m}/itm_accuracy": 0.5 + seed / 10 for m in trained_modes(schedule)}

    def downstream(setup, data, vocab, pretrained, schedule, seed, out):
        qa = {"accuracy": 0.5, "granularity/fine": 0.6, "granularity/high": 0.4}
        return {m: {"qa": {"val": qa, "test": qa, "novel": qa}, "itm": {"accuracy": 0.7},
                    "retrieval": {"text/R@1": 0.2}} for m in trained_modes(schedule)}

    monkeypatch.setattr(ablation, "_prepare_data", lambda setup: (tmp_path / "data", tmp_path / "vocab.txt"))
    monkeypatch.setattr(ablation, "_pretrain", pretrain)
    monkeypatch.setattr(ablation, "_downstream", downstream)
    monkeypatch.setattr(ablation, "reference", lambda setup, data: None)
    model_config = tmp_path / "model.json"
    model_config.write_text((REPO / "configs" / "model" / "tiny.json").read_text())
    setup = AblationSetup(output=str(tmp_path / "runs"), reports=str(tmp_path / "reports"), seeds=[0, 1],
                          schedules=["single", "single-then-two"], name="schedule_study",
                          model_config=str(model_config),
                          deepspeed_config=str(REPO / "configs" / "deepspeed" / "zero2_bf16.json"))
    rows = ablation.run_ablation(setup)
    assert trained == [("single", 0), ("single", 1), ("single-then-two", 0), ("single-then-two", 1)]
    assert [r["val_itm_accuracy"] for r in rows] == [0.5, 0.6, 0.5, 0.6]
    assert (tmp_path / "reports" / "schedule_study.md").is_file()
    # Again with one more schedule: only its runs are new.
    setup.schedules.append("two")
    ablation.run_ablation(setup)
    assert trained[4:] == [("two", 0), ("two", 1)]
    # Another budget is another setup: everything runs again.
    setup.pretrain_steps += 1
    ablation.run_ablation(setup)
    assert len(trained) == 12
    ablation.run_ablation(setup)
    assert len(trained) == 12
    # So is an edited model config under the same path.
    model_config.write_text(model_config.read_text().replace('"num_hidden_layers": 4', '"num_hidden_layers": 2'))
    ablation.run_ablation(setup)
    assert len(trained) == 18


@pytest.mark.parametrize("target", ["pretrain", "ablation"])
def test_an_absolute_venv_keeps_the_torch_extensions_inside_it(target, tmp_path):
    venv = tmp_path / "venv"
    out = subprocess.run(["make", "-n", "--no-print-directory", "-o", f"{venv}/.semvlp-installed", target,
                          f"VENV={venv}"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert f"TORCH_EXTENSIONS_DIR={venv}/torch_extensions " in out
