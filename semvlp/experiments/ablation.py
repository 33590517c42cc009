"""`semvlp ablation`: pretrain with each mode schedule (single-stream only, two-stream only, alternating) on the
same data and budget, for several seeds; fine-tune and evaluate every pretrained model the same way.

For each (schedule, seed):
1. pretrain (`semvlp pretrain`, one rank in a child process) on the synthetic data folder's train split;
2. for each mode the schedule trained (single: single; two: two; alternating: both), fine-tune question
   answering on the train split's questions and evaluate it on val, test and novel; evaluate the pretrained
   image-text matching head, without fine-tuning, on the test split (accuracy, hard negatives by type,
   retrieval recall); optionally fine-tune and evaluate NLVR2-style paired reasoning;
3. the row reports the mode with the higher QA accuracy on val (the alternating schedule has two); test and
   novel never take part in a choice. Every mode's numbers stay in the row under "by_mode".
The reports also give what a model that ignores the image would get (`reference`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.corpus import load_corpus
from ..data.formats import open_features
from ..data.synthetic import write_synthetic
from ..data.synthetic.language import HARD_NEGATIVE_TYPES
from ..data.tokenizer import train_vocab
from ..eval.baselines import answer_prior, retrieval_chance
from ..eval.task_eval import evaluate_itm, evaluate_retrieval
from ..finetune.loop import FinetuneOptions, init_model, load_pretrained
from ..finetune.run import TaskData, run_finetune, tokenizer_for
from .report import write_reports

logger = logging.getLogger("semvlp.ablation")

SCHEDULES = ("single", "two", "alternate")
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class AblationSetup:
    output: str = "runs/ablation"
    reports: str = "reports"
    schedules: list[str] = field(default_factory=lambda: list(SCHEDULES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model_config: str = "configs/model/tiny.json"
    deepspeed_config: str = "configs/deepspeed/zero2_bf16.json"
    pretrain_steps: int = 1000
    micro_batch_size: int = 64
    lr: float = 1.5e-3
    warmup_steps: int = 50
    attribute_mask_rate: float = 0.6
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
            raise ValueError(f"schedules: expected some of {SCHEDULES}, got {self.schedules}")
        if not self.seeds:
            raise ValueError("seeds: expected at least one seed, got none")
        for name in ("pretrain_steps", "qa_steps", "micro_batch_size", "batch_size", "train_scenes",
                     "held_out_scenes", "test_scenes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)}")


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
    """`semvlp pretrain` in a child process (one rank; DeepSpeed keeps process-wide state between engines), its
    output in OUT/pretrain.log; returns its held-out results."""
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "semvlp.cli", "pretrain", "--data", str(data), "--model-config", setup.model_config,
        "--vocab", str(vocab), "--deepspeed-config", setup.deepspeed_config, "--output", str(out),
        "--max-steps", str(setup.pretrain_steps), "--mode-schedule", schedule, "--seed", str(seed),
        "--micro-batch-size", str(setup.micro_batch_size), "--lr", str(setup.lr),
        "--warmup-steps", str(setup.warmup_steps), "--attribute-mask-rate", str(setup.attribute_mask_rate),
        "--checkpoint-every", str(setup.pretrain_steps),
        "--keep-checkpoints", "1", "--eval-batch-size", str(setup.eval_batch_size), "--export",
        "--overwrite"]  # a run that was cut short starts again from scratch
    environment = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARIABLES}
    log = out / "pretrain.log"
    with open(log, "w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=environment)
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
    for mode in (["single", "two"] if schedule == "alternate" else [schedule]):
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


def _columns(qa: dict, qa_novel: dict, itm: dict, retrieval: dict) -> dict:
    """Report columns from the metrics of evaluate_qa (test and novel), evaluate_itm and evaluate_retrieval."""
    out = {"qa_acc": qa["accuracy"], "qa_acc_fine": qa.get("granularity/fine"),
           "qa_acc_high": qa.get("granularity/high"), "qa_acc_novel": qa_novel["accuracy"], "itm_acc": itm["accuracy"]}
    out.update({f"qa_acc_{k.split('/', 1)[1]}": v for k, v in qa.items() if k.startswith("type/")})
    out.update({f"itm_hard_{k.split('/', 1)[1]}": v for k, v in itm.items() if k.startswith("hard/")})
    out.update({f"{'t2i' if k.startswith('text') else 'i2t'}_R@{k.split('@')[1]}": v for k, v in retrieval.items()})
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


def row(schedule: str, seed: int, by_mode: dict, pretrain_results: dict, seconds: float) -> dict:
    """The report row of one pretrained model: the mode with the best val QA accuracy (the first listed on a
    tie), its test metrics flattened, and everything under "by_mode"."""
    mode = max(by_mode, key=lambda m: by_mode[m]["qa"]["val"]["accuracy"])
    chosen = by_mode[mode]
    qa = chosen["qa"]["test"]
    out = {"schedule": schedule, "seed": seed, "mode": mode}
    out.update(_columns(qa, chosen["qa"]["novel"], chosen["itm"], chosen["retrieval"]))
    if "nlvr2" in chosen:
        out["nlvr2_acc"] = chosen["nlvr2"]["test"]["accuracy"]
    out.update({"pretrain_held_out": pretrain_results, "seconds": seconds, "by_mode": by_mode})
    return out


def run_ablation(setup: AblationSetup) -> list[dict]:
    """Runs every (schedule, seed) and writes the reports; a finished run (its row.json) is reused, so an
    interrupted ablation continues where it stopped."""
    root = Path(setup.output)
    data, vocab = _prepare_data(setup)
    rows = []
    for schedule in setup.schedules:
        for seed in setup.seeds:
            run = root / f"{schedule}_seed{seed}"
            row_path = run / "row.json"
            if row_path.is_file() and json.loads(row_path.read_text()).get("setup") == _run_stamp(setup):
                rows.append(json.loads(row_path.read_text())["row"])
                logger.info("%s seed %d: reusing %s", schedule, seed, row_path)
                continue
            began = time.perf_counter()
            logger.info("%s seed %d: pretraining %d steps", schedule, seed, setup.pretrain_steps)
            held_out = _pretrain(setup, data, vocab, schedule, seed, run / "pretrain")
            by_mode = _downstream(setup, data, vocab, run / "pretrain", schedule, seed, run)
            rows.append(row(schedule, seed, by_mode, held_out, time.perf_counter() - began))
            row_path.write_text(json.dumps({"setup": _run_stamp(setup), "row": rows[-1]}, indent=2) + "\n")
            logger.info("%s seed %d: QA %.3f, ITM %.3f (%.0f s)", schedule, seed, rows[-1]["qa_acc"],
                        rows[-1]["itm_acc"], rows[-1]["seconds"])
    write_reports(rows, asdict(setup), Path(setup.reports), reference(setup, data))
    return rows


def _run_stamp(setup: AblationSetup) -> dict:
    """What a run's results depend on (not where reports go, nor which schedules and seeds run beside it)."""
    stamp = asdict(setup)
    for key in ("reports", "schedules", "seeds"):
        stamp.pop(key)
    return stamp
