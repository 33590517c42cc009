"""`semvlp ablation`: pretrain with each mode schedule on the same data, budget and recipe, for several seeds;
fine-tune and evaluate every pretrained model the same way. The same runner serves the ablation (single-stream
only, two-stream only, alternating 1:1) and the schedule study (also alternating 3:1 and 1:3, and the two
curricula).

For each (schedule, seed):
1. pretrain (`semvlp pretrain` in a child process, under DeepSpeed's launcher when `ranks` > 1) on the synthetic
   data folder's train split, with the recipe's options (`pretrain_options`), and evaluate it held-out (image-text
   matching per kind of caption, phrase grounding, attribute words);
2. for each mode the schedule trained, fine-tune question answering on the train split's questions and evaluate it
   on val, test and novel; evaluate the pretrained image-text matching head, without fine-tuning, on the test split
   (accuracy, hard negatives by type, retrieval recall); optionally fine-tune and evaluate NLVR2-style reasoning;
3. the row reports the mode with the higher QA accuracy on val (a schedule that trains both modes has two); test
   and novel never take part in a choice. Every mode's numbers stay in the row under "by_mode", and the reports
   also compare the schedules mode by mode: each schedule that trained a mode, evaluated in that mode.
A finished (schedule, seed) is kept in RUN/row.json and not run again while the setup it ran with is unchanged.
The reports also give what a model that ignores the image would get (`reference`).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..data.corpus import load_corpus
from ..data.formats import open_features
from ..data.synthetic import write_synthetic
from ..data.synthetic.language import HARD_NEGATIVE_TYPES
from ..data.tokenizer import train_vocab
from ..eval.baselines import answer_prior, retrieval_chance
from ..eval.task_eval import evaluate_itm, evaluate_retrieval
from ..finetune.loop import FinetuneOptions, init_model, load_pretrained
from ..finetune.run import TaskData, run_finetune, tokenizer_for
from ..model.config import read_json_object
from .report import write_reports

logger = logging.getLogger("semvlp.ablation")

# Each schedule's name (in reports and run folders) and its `semvlp pretrain --mode-schedule` and `--mode-ratio`.
SCHEDULES = {
    "single": ("single", "1:1"),
    "two": ("two", "1:1"),
    "alternate": ("alternate", "1:1"),
    "alternate-3:1": ("alternate", "3:1"),
    "alternate-1:3": ("alternate", "1:3"),
    "single-then-two": ("curriculum:single-two", "1:1"),
    "two-then-single": ("curriculum:two-single", "1:1"),
}
ABLATION = ("single", "two", "alternate")
# The `semvlp pretrain` options each run sets itself, which pretrain_options may not repeat.
_RUNNER_OPTIONS = ("--data", "--output", "--vocab", "--seed", "--mode-schedule", "--mode-ratio", "--mode-granularity",
                   "--max-steps", "--model-config", "--deepspeed-config", "--checkpoint-every", "--keep-checkpoints",
                   "--eval-batch-size", "--export", "--overwrite", "--resume")
# AblationSetup fields that become `semvlp pretrain` options when set.
_FIELD_OPTIONS = {"micro_batch_size": "--micro-batch-size", "lr": "--lr", "warmup_steps": "--warmup-steps",
                  "attribute_mask_rate": "--attribute-mask-rate"}
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class AblationSetup:
    output: str = "runs/ablation"
    reports: str = "reports"
    name: str = "ablation"                   # reports/<name>.json, .md, .png
    schedules: list[str] = field(default_factory=lambda: list(ABLATION))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model_config: str = "configs/model/tiny.json"
    deepspeed_config: str = "configs/deepspeed/zero2_bf16.json"
    pretrain_steps: int = 1000
    ranks: int = 1                           # pretraining processes (DeepSpeed's launcher when more than one)
    pretrain_options: str = ""               # more `semvlp pretrain` options, e.g. the main job's recipe
    micro_batch_size: int | None = None      # None: the DeepSpeed config's (or pretrain_options')
    lr: float | None = None
    warmup_steps: int | None = None
    attribute_mask_rate: float | None = None
    qa_steps: int = 500
    qa_lr: float = 1e-3
    nlvr2_steps: int = 0
    batch_size: int = 64
    train_scenes: int = 4000
    held_out_scenes: int = 200
    test_scenes: int = 400
    data_seed: int = 0
    vocab_size: int = 1000
    retrieval_images: int = 100
    eval_batch_size: int = 128

    def __post_init__(self):
        unknown = [s for s in self.schedules if s not in SCHEDULES]
        if unknown or not self.schedules:
            raise ValueError(f"schedules: expected some of {list(SCHEDULES)}, got {self.schedules}")
        if not self.seeds:
            raise ValueError("seeds: expected at least one seed, got none")
        if not self.name or "/" in self.name:
            raise ValueError(f"name: expected a file name stem for the reports, got {self.name!r}")
        for name in ("pretrain_steps", "ranks", "qa_steps", "batch_size", "train_scenes", "held_out_scenes",
                     "test_scenes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)}")
        given = {word.split("=")[0] for word in shlex.split(self.pretrain_options) if word.startswith("--")}
        clashes = sorted(given & set(_RUNNER_OPTIONS))
        clashes += sorted(flag for name, flag in _FIELD_OPTIONS.items()
                          if flag in given and getattr(self, name) is not None)
        if clashes:
            raise ValueError(f"pretrain_options: {clashes} are set by the ablation itself or by its own option; "
                             f"expected them only once, got {self.pretrain_options!r}")


def run_folder(schedule: str, seed: int) -> str:
    """A run's folder name (no ':' in paths)."""
    return f"{schedule.replace(':', 'to')}_seed{seed}"


def pretrain_command(setup: AblationSetup, data: Path, vocab: Path, schedule: str, seed: int, out: Path,
                     master_port: int | None = None) -> list[str]:
    """The command line that pretrains one (schedule, seed)."""
    kind, ratio = SCHEDULES[schedule]
    launcher = [sys.executable, "-m", "semvlp.cli"]
    if setup.ranks > 1:
        launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_accelerators", str(setup.ranks),
                    "--master_port", str(master_port or _free_port()), "--module", "semvlp.cli"]
    command = launcher + [
        "pretrain", "--data", str(data), "--model-config", setup.model_config, "--vocab", str(vocab),
        "--deepspeed-config", setup.deepspeed_config, "--output", str(out), "--max-steps", str(setup.pretrain_steps),
        "--mode-schedule", kind, "--mode-ratio", ratio, "--seed", str(seed),
        "--checkpoint-every", str(setup.pretrain_steps), "--keep-checkpoints", "1",
        "--eval-batch-size", str(setup.eval_batch_size), "--export",
        "--overwrite"]  # a run that was cut short starts again from scratch
    for name, flag in _FIELD_OPTIONS.items():
        if getattr(setup, name) is not None:
            command += [flag, str(getattr(setup, name))]
    return command + shlex.split(setup.pretrain_options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_data(setup: AblationSetup) -> tuple[Path, Path]:
    """The synthetic data folder and a vocab trained on its train split; kept when a previous run made them
    with the same counts and seed."""
    folder = Path(setup.output) / "data"
    stamp = {"train": setup.train_scenes, "val": setup.held_out_scenes, "novel": setup.held_out_scenes,
             "test": setup.test_scenes, "seed": setup.data_seed, "vocab_size": setup.vocab_size}
    stamp_path = folder / "ablation_data.json"
    vocab = folder / "vocab" / "vocab.txt"
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp and vocab.is_file():
        return folder, vocab
    counts = {split: stamp[split] for split in ("train", "val", "novel", "test")}
    splits = write_synthetic(folder, counts, seed=setup.data_seed)
    sentences = [c.text for im in splits["train"] for c in im.captions] + \
                [q.text for im in splits["train"] for q in im.questions]
    train_vocab(sentences, folder / "vocab", vocab_size=setup.vocab_size)
    stamp_path.write_text(json.dumps(stamp) + "\n")
    return folder, vocab


def _pretrain(setup: AblationSetup, data: Path, vocab: Path, schedule: str, seed: int, out: Path) -> dict:
    """Pretrains in a child process (DeepSpeed keeps process-wide state between engines), its output in
    OUT/pretrain.log; returns its held-out results."""
    out.mkdir(parents=True, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARIABLES}
    log = out / "pretrain.log"
    with open(log, "w") as f:
        done = subprocess.run(pretrain_command(setup, data, vocab, schedule, seed, out), stdout=f,
                              stderr=subprocess.STDOUT, env=environment)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"pretraining {schedule} seed {seed} failed (exit {done.returncode}); the end of {log}:\n"
                           f"{tail}")
    return json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}


def _downstream(setup: AblationSetup, data_dir: Path, vocab: Path, pretrained: Path, schedule: str, seed: int,
                out: Path) -> dict:
    config, state = load_pretrained(pretrained)
    data = TaskData(data_dir, tokenizer_for(config, vocab), config.visual_feat_dim)
    by_mode = {}
    for mode in trained_modes(schedule):
        qa = run_finetune(FinetuneOptions("qa", mode, setup.qa_steps, setup.batch_size, setup.qa_lr, seed=seed),
                          data, config, state, out / f"qa_{mode}", eval_splits=("val", "test", "novel"),
                          eval_batch_size=setup.eval_batch_size)
        matching = init_model("itm", config, state, None, seed)
        itm = evaluate_itm(matching, data.corpus("test"), data.tokenizer, mode, setup.eval_batch_size,
                           desc=f"matching test ({mode}-stream)")
        retrieval = evaluate_retrieval(matching, data.corpus("test"), data.tokenizer, mode, setup.retrieval_images,
                                       desc=f"retrieval test ({mode}-stream)")
        metrics = {"qa": qa, "itm": itm, "retrieval": retrieval}
        if setup.nlvr2_steps:
            metrics["nlvr2"] = run_finetune(
                FinetuneOptions("nlvr2", mode, setup.nlvr2_steps, setup.batch_size, setup.qa_lr, seed=seed), data,
                config, state, out / f"nlvr2_{mode}", eval_splits=("test",), eval_batch_size=setup.eval_batch_size)
        by_mode[mode] = metrics
    return by_mode


def trained_modes(schedule: str) -> list[str]:
    """The modes a schedule pretrains (one-mode schedules: that mode; every other: both)."""
    kind, _ = SCHEDULES[schedule]
    return [kind] if kind in ("single", "two") else ["single", "two"]


def _columns(qa: dict, qa_novel: dict, itm: dict, retrieval: dict) -> dict:
    """Report columns from the metrics of evaluate_qa (test and novel), evaluate_itm and evaluate_retrieval."""
    out = {"qa_acc": qa["accuracy"], "qa_acc_fine": qa.get("granularity/fine"),
           "qa_acc_high": qa.get("granularity/high"), "qa_acc_novel": qa_novel["accuracy"], "itm_acc": itm["accuracy"]}
    out.update({f"qa_acc_{k.split('/', 1)[1]}": v for k, v in qa.items() if k.startswith("type/")})
    out.update({f"itm_hard_{k.split('/', 1)[1]}": v for k, v in itm.items() if k.startswith("hard/")})
    out.update({f"{'t2i' if k.startswith('text') else 'i2t'}_R@{k.split('@')[1]}": v for k, v in retrieval.items()})
    return out


def held_out_columns(results: dict, mode: str) -> dict:
    """Report columns from the pretraining's held-out results ("<split>/<mode>/<metric>") of one mode:
    "<split>_<metric>", e.g. val_itm_accuracy_relation, val_grounding_accuracy."""
    out = {}
    for key, value in results.items():
        split, its_mode, metric = key.split("/", 2)
        if its_mode == mode:
            out[f"{split}_{metric}"] = value
    return out


def reference(setup: AblationSetup, data: Path) -> dict:
    """The columns a model that ignores the image would get: QA from the answer prior of each question
    category, chance for matching, hard negatives, paired reasoning and retrieval."""
    features = open_features(data)
    train, test, novel = (load_corpus(data, split, features=features) for split in ("train", "test", "novel"))
    hard = {f"hard/{kind}": 0.5 for kind in HARD_NEGATIVE_TYPES}
    out = _columns(answer_prior(train, test), answer_prior(train, novel), {"accuracy": 0.5, **hard},
                   retrieval_chance(test, setup.retrieval_images))
    out["nlvr2_acc"] = 0.5
    return out


def mode_columns(by_mode: dict, pretrain_results: dict, mode: str) -> dict:
    """The report columns of one mode: its test metrics and its held-out pretraining results, flattened."""
    metrics = by_mode[mode]
    out = _columns(metrics["qa"]["test"], metrics["qa"]["novel"], metrics["itm"], metrics["retrieval"])
    out.update(held_out_columns(pretrain_results, mode))
    if "nlvr2" in metrics:
        out["nlvr2_acc"] = metrics["nlvr2"]["test"]["accuracy"]
    return out


def row(schedule: str, seed: int, by_mode: dict, pretrain_results: dict, seconds: float) -> dict:
    """The report row of one pretrained model: the mode with the best val QA accuracy (the first listed on a
    tie), its test and held-out metrics flattened, and everything under "by_mode"."""
    mode = max(by_mode, key=lambda m: by_mode[m]["qa"]["val"]["accuracy"])
    out = {"schedule": schedule, "seed": seed, "mode": mode, "trained_modes": list(by_mode)}
    out.update(mode_columns(by_mode, pretrain_results, mode))
    out.update({"pretrain_held_out": pretrain_results, "seconds": seconds, "by_mode": by_mode})
    return out


def rows_in_mode(rows: list[dict], mode: str) -> list[dict]:
    """Every row whose schedule trained `mode`, with that mode's columns whichever mode val QA chose: a switching
    schedule set against the schedule that trains that mode alone."""
    return [{"schedule": r["schedule"], "seed": r["seed"], "mode": mode, "trained_modes": r["trained_modes"],
             "seconds": r["seconds"], **mode_columns(r["by_mode"], r["pretrain_held_out"], mode)}
            for r in rows if mode in r["by_mode"]]


def finished_row(setup: AblationSetup, schedule: str, seed: int) -> dict | None:
    """The row of a (schedule, seed) finished earlier with the same setup, or None."""
    path = Path(setup.output) / run_folder(schedule, seed) / "row.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return saved["row"] if saved.get("setup") == run_stamp(setup) else None


def run_ablation(setup: AblationSetup) -> list[dict]:
    """Runs every (schedule, seed) not finished yet and writes the reports; an interrupted study continues where
    it stopped (a (schedule, seed) cut short starts again)."""
    root = Path(setup.output)
    data, vocab = _prepare_data(setup)
    rows = []
    jobs = [(schedule, seed) for schedule in setup.schedules for seed in setup.seeds]
    with tqdm(jobs, desc=f"{setup.name} runs", unit="run", file=sys.stderr) as bar:
        for schedule, seed in bar:
            bar.set_postfix_str(f"{schedule} seed {seed}")
            done = finished_row(setup, schedule, seed)
            if done is not None:
                rows.append(done)
                bar.write(f"{schedule} seed {seed}: finished earlier ({done['seconds'] / 60:.1f} min), kept")
                continue
            run = root / run_folder(schedule, seed)
            began = time.perf_counter()
            bar.write(f"{schedule} seed {seed}: pretraining {setup.pretrain_steps} steps "
                      f"(log: {run / 'pretrain' / 'pretrain.log'})")
            held_out = _pretrain(setup, data, vocab, schedule, seed, run / "pretrain")
            by_mode = _downstream(setup, data, vocab, run / "pretrain", schedule, seed, run)
            rows.append(row(schedule, seed, by_mode, held_out, time.perf_counter() - began))
            (run / "row.json").write_text(json.dumps({"setup": run_stamp(setup), "row": rows[-1]}, indent=2) + "\n")
            bar.write(f"{schedule} seed {seed}: QA {rows[-1]['qa_acc']:.3f}, ITM {rows[-1]['itm_acc']:.3f} "
                      f"({rows[-1]['seconds'] / 60:.1f} min)")
    write_reports(rows, asdict(setup), Path(setup.reports), reference(setup, data), name=setup.name,
                  mode_rows={mode: rows_in_mode(rows, mode) for mode in ("single", "two")})
    return rows


def run_stamp(setup: AblationSetup) -> dict:
    """What a run's results depend on (not where reports go, nor which schedules and seeds run beside it), so the
    schedule study reuses the ablation's runs of the same setup. The config files count by their contents: a run
    made before a config was edited runs again."""
    stamp = asdict(setup)
    for key in ("reports", "name", "schedules", "seeds"):
        stamp.pop(key)
    stamp["pretrain_options"] = shlex.split(setup.pretrain_options)
    for key in ("model_config", "deepspeed_config"):
        stamp[f"{key}_contents"] = read_json_object(getattr(setup, key), key)
    return stamp
