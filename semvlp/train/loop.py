"""`semvlp pretrain`: the training loop under DeepSpeed, in three parts: set-up (data, model, engine, resume),
the step, and the finish (held-out evaluation, export, plot)."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..data.collate import Collator
from ..data.dataset import AnswerVocab, PretrainingDataset
from ..data.records import BadRecords
from ..data.tokenizer import WordPieceTokenizer
from ..eval.pretraining import evaluate, format_results
from ..model import SemVLPConfig, SemVLPForPretraining
from ..model.config import PRETRAINING_TASKS, config_differences, read_json_object
from .checkpoint import CheckpointManager, export_safetensors, latest_tag
from .distributed import Distributed, distributed_run, setup_logging
from .ds_config import RunConfig, load_deepspeed_config
from .engine import build_engine, compile_engine
from .metrics import MetricsLogger, plot_curves
from .options import PretrainOptions
from .run_data import (MicroBatchSampler, RunData, TokenBudgetSampler, dataset_token_budget, load_run_data,
                       ranks_on_node, resolve_num_workers, sample_lengths)
from .run_folder import check_output, remove_history
from .schedule import ModeSchedule

logger = logging.getLogger("semvlp.pretrain")


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Run:
    """What the set-up builds and the steps use."""

    options: PretrainOptions
    env: Distributed
    out: Path
    config: SemVLPConfig
    tokenizer: WordPieceTokenizer
    data: RunData
    answers: AnswerVocab
    bad: BadRecords
    deepspeed: RunConfig
    schedule: ModeSchedule
    engine: object                   # deepspeed.DeepSpeedEngine
    checkpoints: CheckpointManager
    collator: Collator
    batches: object                  # iterator over this rank's micro-batches, from the start step on
    metrics: MetricsLogger
    start: int
    steps_per_epoch: int
    global_batch: int


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the dropout RNG for one step of one rank: the RNG state is a function of the position in the
    run, so a resumed run draws the same dropout masks as an uninterrupted one."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def pretrain(options: PretrainOptions) -> dict:
    """Runs the whole job: data, engine, the step loop with checkpoints and metrics, held-out evaluation,
    export. Returns the final held-out results (rank 0 also prints them)."""
    check_output(options.output, options.resume, options.overwrite)
    with distributed_run() as env:
        setup_logging(env.is_main)
        run = set_up(options, env)
        try:
            _train(run)
            results = run_eval(run, options.max_steps) if run.data.held_out else {}
        finally:
            run.metrics.close()
        finish(run, results)
        return results


def _check_resume_point(config: SemVLPConfig, options: PretrainOptions, root: Path) -> None:
    """--resume: refuses checkpoints that not every rank sees (an output folder on a disk of one node), and a
    model config (sizes, tasks, loss weights) other than the one the latest checkpoint was trained with, naming
    the fields, unless --allow-config-change."""
    tags = [None] * dist.get_world_size()
    dist.all_gather_object(tags, latest_tag(root))
    if len(set(tags)) > 1:
        seen = ", ".join(f"rank {rank}: {tag or 'none'}" for rank, tag in enumerate(tags))
        raise ValueError(f"--resume: the ranks see different latest checkpoints in {root} ({seen}); the output "
                         "folder must be on a filesystem that every node shares")
    tag = tags[0]
    if tag is None:
        return
    saved = root / tag / "config.json"
    changes = "; ".join(config_differences(read_json_object(saved, "checkpoint config"), config.to_dict()))
    if not changes:
        return
    if not options.allow_config_change:
        raise ValueError(f"--resume: the model config {options.model_config} differs from the one {root / tag} was "
                         f"trained with ({saved}) in {changes}. Resume with that config, or pass "
                         "--allow-config-change to continue with the new one")
    logger.warning("--allow-config-change: resuming %s with changed %s", root / tag, changes)


def set_up(options: PretrainOptions, env: Distributed) -> Run:
    """Config, tokenizer, data, the engine (resumed from the latest checkpoint when asked) and the data order."""
    out = Path(options.output)
    if options.overwrite and env.is_main:
        remove_history(out)
    config = SemVLPConfig.load(options.model_config)
    tokenizer = WordPieceTokenizer(options.vocab, max_length=config.max_position_embeddings)
    if tokenizer.vocab_size != config.vocab_size:
        # The word embeddings (and the tied MLM decoder) are sized to the vocab; the saved config records it.
        logger.info("vocab_size %d of %s replaced by the %d tokens of %s", config.vocab_size, options.model_config,
                    tokenizer.vocab_size, tokenizer.vocab_path)
        config.vocab_size = tokenizer.vocab_size
    if options.resume:
        _check_resume_point(config, options, out / "checkpoints")
    bad = BadRecords(skip=options.skip_bad_records)
    data = load_run_data(options.data, bad, config.visual_feat_dim, options.synthetic_scenes, options.data_seed,
                         options.feature_format, options.region_features, config.num_region_labels,
                         options.features)
    if bad.total:
        logger.warning(bad.summary())
    answers = AnswerVocab.from_texts(data.train.texts, config.num_qa_labels)
    deepspeed = load_deepspeed_config(options.deepspeed_config, max_steps=options.max_steps,
                                      micro_batch_size=options.micro_batch_size,
                                      gradient_accumulation_steps=options.gradient_accumulation_steps, lr=options.lr,
                                      warmup_steps=options.warmup_steps, precision=options.precision)
    dataset = PretrainingDataset(data.train, tokenizer, answers, seed=options.seed,
                                 attribute_mask_rate=options.attribute_mask_rate,
                                 relation_mask_rate=options.relation_mask_rate)
    micro, accumulation = deepspeed.micro_batch_size, deepspeed.gradient_accumulation_steps
    global_batch = micro * accumulation * env.world_size
    steps_per_epoch = len(dataset) // global_batch
    schedule = ModeSchedule.parse(options.mode_schedule, options.mode_ratio, options.mode_granularity,
                                  steps_per_epoch, options.max_steps)

    torch.manual_seed(options.seed)
    model = SemVLPForPretraining(config)
    # Saved with the weights, so a resumed run, fine-tuning and the export standardise the same way.
    mean, std = data.train.feature_statistics()
    model.semvlp.region_embeddings.set_feature_statistics(mean, std)
    engine = build_engine(model, deepspeed, alternating=len(schedule.modes) > 1)
    if options.compile:
        compile_engine(engine, env.device)
    checkpoints = CheckpointManager(out / "checkpoints", env.is_main, keep=options.keep_checkpoints)
    start = checkpoints.start_step(engine, options.resume)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.json")
        answers.save(out / "answers.json")
        (out / "deepspeed_config.json").write_text(json.dumps(deepspeed.deepspeed, indent=2) + "\n")
        logger.info("%s parameters; %d training samples; global batch %d (%d x %d accumulation x %d ranks); "
                    "ZeRO stage %d, %s; steps %d..%d", f"{sum(p.numel() for p in model.parameters()):,}",
                    len(dataset), global_batch, micro, accumulation, env.world_size, deepspeed.zero_stage,
                    str(deepspeed.dtype).replace("torch.", ""), start, options.max_steps)

    # One collator for training and evaluation: the datasets' samples say how each is masked.
    collator = Collator(tokenizer.mask_id, tokenizer.first_word_id, tokenizer.vocab_size, config.visual_pos_dim)
    train_collator, sampler = collator, MicroBatchSampler(len(dataset), micro, accumulation, env.world_size, env.rank,
                                                          options.seed, start, options.max_steps)
    if options.token_budget is not None:  # micro-batches by tokens, padded to fixed shapes; the micro size caps them
        budget = dataset_token_budget(dataset, options.token_budget, micro)
        logger.info("token budget: %s", budget)
        train_collator = Collator(tokenizer.mask_id, tokenizer.first_word_id, tokenizer.vocab_size,
                                  config.visual_pos_dim, budget=budget)
        sampler = TokenBudgetSampler(len(dataset), sample_lengths(dataset), budget, accumulation, env.world_size,
                                     env.rank, options.seed, start, options.max_steps)
    workers, why = resolve_num_workers(options.num_workers, options.data == "synthetic",
                                       ranks_on_node(env.world_size))
    if env.is_main:
        logger.info("DataLoader: %d worker processes per rank (%s)", workers, why)
    loader = train_loader(dataset, sampler, train_collator, workers, env.device)
    metrics = MetricsLogger(out, env.is_main, options.max_steps, start)
    return Run(options, env, out, config, tokenizer, data, answers, bad, deepspeed, schedule, engine, checkpoints,
               collator, iter(loader), metrics, start, steps_per_epoch, global_batch)


def train_loader(dataset, sampler, collator: Collator, num_workers: int,
                 device: torch.device) -> torch.utils.data.DataLoader:
    """This rank's micro-batches in the sampler's order. A sample and its masking are functions of its (epoch,
    index) key alone (semvlp.data.dataset), so the batches are the same with any number of workers."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=num_workers,
                                       pin_memory=device.type == "cuda")


def train_step(run: Run, step: int) -> dict:
    """One optimizer step (its micro-batches on every rank); returns the step's metrics record, averaged over
    the micro-batches of every rank."""
    mode = run.schedule.mode(step)
    accumulation = run.deepspeed.gradient_accumulation_steps
    torch.manual_seed(step_seed(run.options.seed, step, run.env.rank))
    began = time.perf_counter()
    skipped_before = getattr(run.engine, "skipped_steps", 0)
    # total, one per task, then the number of micro-batches whose loss was not finite
    sums = torch.zeros(len(PRETRAINING_TASKS) + 2, dtype=torch.float64)
    for _ in range(accumulation):
        batch = next(run.batches).to(run.env.device, non_blocking=True, feature_dtype=run.deepspeed.dtype)
        output = run.engine(batch, mode=mode)
        run.engine.backward(output.loss)
        run.engine.step()
        sums[0] += output.loss.item()
        for i, task in enumerate(PRETRAINING_TASKS):
            if task in output.losses:
                sums[1 + i] += output.losses[task].item()
        sums[-1] += 0 if math.isfinite(output.loss.item()) else 1
    dist.all_reduce(sums)
    mean = sums / (accumulation * run.env.world_size)
    return {"step": step + 1, "epoch": step // run.steps_per_epoch, "mode": mode, "loss": mean[0].item(),
            "losses": {t: mean[1 + i].item() for i, t in enumerate(PRETRAINING_TASKS) if run.config.tasks[t]},
            "lr": run.engine.get_lr()[0], "samples_per_s": run.global_batch / (time.perf_counter() - began),
            "skipped": getattr(run.engine, "skipped_steps", 0) != skipped_before, "nonfinite": sums[-1].item() > 0}


def _train(run: Run) -> None:
    """The steps from the start step to --max-steps, with checkpoints, evaluations and the non-finite stop."""
    options = run.options
    consecutive_nonfinite = 0
    for step in range(run.start, options.max_steps):
        record = train_step(run, step)
        nonfinite = record.pop("nonfinite")
        run.metrics.log_step(record)
        consecutive_nonfinite = consecutive_nonfinite + 1 if nonfinite else 0
        if consecutive_nonfinite >= options.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"stopping at step {step + 1}: the loss was NaN or infinite in {consecutive_nonfinite} consecutive "
                f"steps (last losses {record['losses']}). Lower the learning rate, use bf16 instead of fp16, or "
                f"check the data for bad values; the last good checkpoint is in {run.out / 'checkpoints'}")
        done = step + 1
        if done % options.checkpoint_every == 0 or done == options.max_steps:
            if nonfinite:
                # The weights may hold NaN/inf now: saving them would make `latest` name them and prune a good one.
                logger.warning("step %d: no checkpoint saved, the loss was not finite; the last good one stays in "
                               "%s", done, run.out / "checkpoints")
            else:
                run.checkpoints.save(run.engine, done,
                                     {"config.json": json.dumps(run.config.to_dict(), indent=2) + "\n"})
        if options.eval_every and done % options.eval_every == 0 and done != options.max_steps:
            run_eval(run, done)


def run_eval(run: Run, step: int) -> dict:
    """Held-out accuracy of every mode the schedule trains, logged at `step`."""
    modes = list(run.schedule.modes)
    # A compiled model evaluates eagerly: held-out batches have shapes of their own, not worth compiling for.
    with torch.compiler.set_stance("force_eager" if run.options.compile else "default"):
        results = evaluate(run.engine, run.data.held_out, run.tokenizer, run.answers, run.collator, modes,
                           run.options.eval_batch_size, run.env.rank, run.env.world_size, run.deepspeed.dtype,
                           run.env.device)
    run.metrics.log_eval(step, results)
    return results


def finish(run: Run, results: dict) -> None:
    """Rank 0: the export (with the vocab fine-tuning reads), the loss plot, results.json and the printout."""
    if not run.env.is_main:
        return
    if run.options.export:
        path = export_safetensors(run.out / "checkpoints", run.out / "export", vocab=run.tokenizer.vocab_path,
                                  data=run.options.data_description, results=results)
        logger.info("exported fp32 weights and the vocab to %s", path.parent)
    plot_curves(run.out)
    if results:
        (run.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        sizes = {split: len({t.image_id for t in corpus.texts}) for split, corpus in run.data.held_out.items()}
        print(f"\nheld-out accuracy after {run.options.max_steps} steps:\n{format_results(results, sizes)}",
              flush=True)
    if run.bad.total:
        print(run.bad.summary(), flush=True)
