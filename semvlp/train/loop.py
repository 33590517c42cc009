"""`semvlp pretrain`: the training loop under DeepSpeed."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..data.collate import Collator
from ..data.dataset import AnswerVocab, PretrainingDataset
from ..data.records import BadRecords
from ..data.tokenizer import WordPieceTokenizer
from ..model import SemVLPConfig, SemVLPForPretraining
from ..model.config import TASKS
from .checkpoint import CheckpointManager, export_safetensors
from .data import MicroBatchSampler, load_run_data
from .distributed import init_distributed, shutdown
from .ds_config import load_deepspeed_config
from .engine import build_engine, cast_inputs
from .evaluate import evaluate, format_results
from .metrics import MetricsLogger, plot_curves
from .schedule import ModeSchedule

logger = logging.getLogger("semvlp.pretrain")


class NonFiniteLossError(RuntimeError):
    pass


def _step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the dropout RNG for one step of one rank: the RNG state is a function of the position in the
    run, so a resumed run draws the same dropout masks as an uninterrupted one."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _setup_logging(is_main: bool) -> None:
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("DeepSpeed", "deepspeed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def pretrain(args) -> dict:
    """Runs the whole job: data, engine, the step loop with checkpoints and metrics, held-out evaluation,
    export. Returns the final held-out results (rank 0 also prints them)."""
    env = init_distributed()
    try:
        return _pretrain(args, env)
    finally:
        shutdown()


def _pretrain(args, env) -> dict:
    _setup_logging(env.is_main)
    out = Path(args.output)
    config = SemVLPConfig.load(args.model_config)
    tokenizer = WordPieceTokenizer(args.vocab, max_length=config.max_position_embeddings)
    if tokenizer.vocab_size != config.vocab_size:
        # The word embeddings (and the tied MLM decoder) are sized to the vocab; the saved config records it.
        logger.info("vocab_size %d of %s replaced by the %d tokens of %s", config.vocab_size, args.model_config,
                    tokenizer.vocab_size, tokenizer.vocab_path)
        config.vocab_size = tokenizer.vocab_size
    bad = BadRecords(skip=args.skip_bad_records)
    data = load_run_data(args.data, bad, config.visual_feat_dim, args.synthetic_scenes, args.data_seed,
                         args.feature_format, args.region_features)
    if bad.total:
        logger.warning(bad.summary())
    answers = AnswerVocab.from_texts(data.train.texts, config.num_qa_labels)
    run = load_deepspeed_config(args.deepspeed_config, max_steps=args.max_steps, micro_batch_size=args.micro_batch_size,
                                gradient_accumulation_steps=args.gradient_accumulation_steps, lr=args.lr,
                                warmup_steps=args.warmup_steps)
    dataset = PretrainingDataset(data.train, tokenizer, answers, seed=args.seed,
                                 attribute_mask_rate=args.attribute_mask_rate)
    micro, accumulation = run.micro_batch_size, run.gradient_accumulation_steps
    global_batch = micro * accumulation * env.world_size
    steps_per_epoch = len(dataset) // global_batch
    schedule = ModeSchedule.parse(args.mode_schedule, args.mode_ratio, args.mode_granularity, steps_per_epoch)

    torch.manual_seed(args.seed)
    model = SemVLPForPretraining(config)
    # Saved with the weights, so a resumed run, fine-tuning and the export standardise the same way.
    mean, std = data.train.feature_statistics()
    model.semvlp.region_embeddings.set_feature_statistics(mean, std)
    engine = build_engine(model, run, alternating=schedule.kind == "alternate")
    checkpoints = CheckpointManager(out / "checkpoints", env.is_main, keep=args.keep_checkpoints)
    start = 0
    if args.resume:
        resumed = checkpoints.load(engine)
        if resumed is None:
            logger.warning("--resume: no checkpoint in %s, starting from step 0", out / "checkpoints")
        start = resumed or 0
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.json")
        answers.save(out / "answers.json")
        (out / "deepspeed_config.json").write_text(json.dumps(run.deepspeed, indent=2) + "\n")
        logger.info("%s parameters; %d training samples; global batch %d (%d x %d accumulation x %d ranks); "
                    "ZeRO stage %d, %s; steps %d..%d", f"{sum(p.numel() for p in model.parameters()):,}",
                    len(dataset), global_batch, micro, accumulation, env.world_size, run.zero_stage,
                    str(run.dtype).replace("torch.", ""), start, args.max_steps)

    # One collator for training and evaluation: the datasets' samples say how each is masked.
    collator = Collator(tokenizer.mask_id, tokenizer.first_word_id, tokenizer.vocab_size, config.visual_pos_dim)
    sampler = MicroBatchSampler(len(dataset), micro, accumulation, env.world_size, env.rank, args.seed, start,
                                args.max_steps)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator,
                                         num_workers=args.num_workers, pin_memory=env.device.type == "cuda")
    metrics = MetricsLogger(out, env.is_main, args.max_steps, start)
    modes = ["single", "two"] if schedule.kind == "alternate" else [schedule.kind]
    checkpoint_files = {"config.json": json.dumps(config.to_dict(), indent=2) + "\n"}

    def run_eval(step: int) -> dict:
        results = evaluate(engine, data.held_out, tokenizer, answers, collator, modes, args.eval_batch_size,
                           env.rank, env.world_size, run.dtype, env.device)
        metrics.log_eval(step, results)
        return results

    batches = iter(loader)
    consecutive_nonfinite = 0
    results = {}
    try:
        for step in range(start, args.max_steps):
            mode = schedule.mode(step)
            torch.manual_seed(_step_seed(args.seed, step, env.rank))
            began = time.perf_counter()
            skipped_before = getattr(engine, "skipped_steps", 0)
            sums = torch.zeros(len(TASKS) + 2, dtype=torch.float64)  # total, tasks..., non-finite micro-batches
            for _ in range(accumulation):
                batch = cast_inputs(next(batches), run.dtype, env.device)
                output = engine(batch, mode=mode)
                engine.backward(output.loss)
                engine.step()
                sums[0] += output.loss.item()
                for i, task in enumerate(TASKS):
                    if task in output.losses:
                        sums[1 + i] += output.losses[task].item()
                sums[-1] += 0 if math.isfinite(output.loss.item()) else 1
            dist.all_reduce(sums)
            mean = sums / (accumulation * env.world_size)
            record = {"step": step + 1, "epoch": step // steps_per_epoch, "mode": mode, "loss": mean[0].item(),
                      "losses": {t: mean[1 + i].item() for i, t in enumerate(TASKS) if config.tasks[t]},
                      "lr": engine.get_lr()[0], "samples_per_s": global_batch / (time.perf_counter() - began),
                      "skipped": getattr(engine, "skipped_steps", 0) != skipped_before}
            metrics.log_step(record)
            consecutive_nonfinite = consecutive_nonfinite + 1 if sums[-1] > 0 else 0
            if consecutive_nonfinite >= args.max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"stopping at step {step + 1}: the loss was NaN or infinite in {consecutive_nonfinite} consecutive "
                    f"steps (last losses {record['losses']}). Lower the learning rate, use bf16 instead of fp16, or "
                    f"check the data for bad values; the last good checkpoint is in {out / 'checkpoints'}")
            done = step + 1
            if done % args.checkpoint_every == 0 or done == args.max_steps:
                checkpoints.save(engine, done, checkpoint_files)
            if args.eval_every and done % args.eval_every == 0 and done != args.max_steps:
                run_eval(done)
        if data.held_out:
            results = run_eval(args.max_steps)
    finally:
        metrics.close()
    if env.is_main:
        if args.export:
            path = export_safetensors(out / "checkpoints", out / "export")
            # The vocab travels with the weights: fine-tuning reads it from there.
            shutil.copyfile(tokenizer.vocab_path, path.parent / "vocab.txt")
            logger.info("exported fp32 weights and the vocab to %s", path.parent)
        plot_curves(out)
        if results:
            (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
            sizes = {split: len({t.image_id for t in corpus.texts}) for split, corpus in data.held_out.items()}
            print(f"\nheld-out accuracy after {args.max_steps} steps:\n{format_results(results, sizes)}", flush=True)
        if bad.total:
            print(bad.summary(), flush=True)
    return results
