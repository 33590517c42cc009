"""The `semvlp` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .presets import find_config
from .train.precision import PRECISIONS, autocast, resolve_precision

WORKERS_HELP = ("DataLoader worker processes per rank; auto (default): 0 for --data synthetic (in memory), "
                "else min(4, CPUs per rank on the node - 1)")
PRECISION_HELP = ("auto: bf16 where the GPU or CPU runs it natively (AVX-512 BF16/AMX), fp32 otherwise; "
                  "bf16, fp16 (GPU only) or fp32 to choose")


def _model_config(value: str) -> str:
    """A model config file, or a shipped preset by name (tiny, base)."""
    return find_config(value, "model")


def _deepspeed_config(value: str) -> str:
    """A DeepSpeed config file, or a shipped preset by name (zero2_auto, zero3_bf16, ...)."""
    return find_config(value, "deepspeed")


def _precision(args, device):
    """The run's precision (semvlp.train.precision), announced in one line."""
    precision = resolve_precision(args.precision, device)
    print(precision.describe(), flush=True)
    return precision


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    return _int_at_least(text, 0)


def workers(text: str) -> int | str:
    """argparse type of --num-workers: "auto" or an integer of at least 0."""
    if text == "auto":
        return text
    try:
        return _int_at_least(text, 0)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer of at least 0, got {text!r}") from None


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < least:
        raise argparse.ArgumentTypeError(f"expected an integer of at least {least}, got {text!r}")
    return value


def _demo(args) -> int:
    """One real forward and backward pass of the pretraining model in both modes on a random batch."""
    from .data import random_batch
    from .model import SemVLPConfig, SemVLPForPretraining
    from .ops.dispatch import backends

    precision = _precision(args, "cpu")
    torch.manual_seed(args.seed)
    config = SemVLPConfig.load(args.model_config)
    model = SemVLPForPretraining(config)
    batch = random_batch(config, args.batch_size, seed=args.seed, text_len=args.text_len,
                         num_regions=min(args.num_regions, config.max_regions))
    usable = [name for name, reason in backends().items() if reason is None]
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{config.num_hidden_layers} layers (cross-attention in {config.cross_layers}); backends: {usable}")
    print(f"batch: {batch.batch_size} samples, {batch.layout.total_text} text tokens, "
          f"{batch.layout.total_regions} regions, packed into {batch.layout.total_tokens} tokens")
    for mode in ("single", "two"):
        model.zero_grad(set_to_none=True)
        with autocast(precision, "cpu"):
            out = model(batch, mode=mode)
        out.loss.backward()
        with_grad = sum(p.grad is not None for p in model.parameters())
        grad_norm = torch.sqrt(sum(p.grad.float().pow(2).sum() for p in model.parameters() if p.grad is not None))
        losses = "  ".join(f"{name}={value.item():.4f}" for name, value in out.losses.items())
        print(f"{mode}-stream: loss={out.loss.item():.4f}  {losses}  "
              f"grad-norm={grad_norm.item():.3f}  params-with-grad={with_grad}")
    return 0


def _pretrain(args) -> int:
    try:
        from .train.loop import NonFiniteLossError, pretrain
    except ModuleNotFoundError as err:
        if err.name != "deepspeed":
            raise
        message = "semvlp pretrain needs DeepSpeed, which is not installed: pip install 'semvlp[train]'"
        raise SystemExit(message) from err
    from .train.options import PretrainOptions

    try:
        pretrain(PretrainOptions.from_args(args))
    except NonFiniteLossError as err:
        print(f"semvlp pretrain: {err}", file=sys.stderr)
        return 1
    return 0


def _synth(args) -> int:
    from .data.synthetic import write_synthetic

    counts = {"train": args.train, "val": args.val, "novel": args.novel, "test": args.test}
    counts = {split: n for split, n in counts.items() if n}
    splits = write_synthetic(args.out, counts, seed=args.seed, feature_dim=args.feature_dim,
                             formats=tuple(args.formats.split(",")), features=args.region_features)
    sizes = ", ".join(f"{split} {len(images)} images / {sum(len(im.captions) for im in images)} captions / "
                      f"{sum(len(im.questions) for im in images)} questions" for split, images in splits.items())
    print(f"wrote {args.out}: {sizes}; {args.region_features} features as {args.formats}")
    return 0


def _corpus_sentences(path: Path) -> list[str]:
    """Sentences of a text file (one a line), a COCO captions JSON or a VQA questions JSON."""
    if path.suffix != ".json":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    from .data.formats.jsonfile import load_json

    data = load_json(path, ())
    if "annotations" in data:
        return [a["caption"] for a in data["annotations"] if isinstance(a, dict) and a.get("caption")]
    if "questions" in data:
        return [q["question"] for q in data["questions"] if isinstance(q, dict) and q.get("question")]
    raise ValueError(f"{path}: expected a COCO captions JSON (annotations) or a VQA questions JSON (questions)")


def _vocab(args) -> int:
    from .data.tokenizer import train_vocab

    sentences = [s for path in args.corpus for s in _corpus_sentences(Path(path))]
    if not sentences:
        raise SystemExit("semvlp data vocab: the corpus has no sentences")
    vocab = train_vocab(sentences, args.out, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
    print(f"wrote {vocab} ({sum(1 for _ in open(vocab, encoding='utf-8'))} tokens from {len(sentences)} sentences)")
    return 0


def _convert(args) -> int:
    from .data.formats.convert import convert_folder

    written = convert_folder(args.data, args.out)
    print(f"wrote {args.out}: {len(written)} files and folders with canonical image ids")
    return 0


def _export(args) -> int:
    from .train.checkpoint import export_safetensors

    print(f"wrote {export_safetensors(args.checkpoints, args.out, args.tag, vocab=args.vocab)}")
    return 0


def _vocab_beside(folder) -> Path | None:
    """The vocab.txt a pretraining run or export keeps beside its weights, if any."""
    if folder is None:
        return None
    for candidate in (Path(folder) / "vocab.txt", Path(folder) / "export" / "vocab.txt"):
        if candidate.is_file():
            return candidate
    return None


def _bad_records(args):
    from .data.records import BadRecords

    return BadRecords(skip=args.skip_bad_records)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_pretrained(path, argument: str):
    """load_pretrained of --init or --model, with one clear error for weights that are not safetensors (semvlp
    never unpickles weights): a .bin or .pt file, or an export whose model.safetensors is not one."""
    from safetensors import SafetensorError, safe_open

    from .finetune.loop import load_pretrained

    path = Path(path)
    if path.is_file():
        try:
            with safe_open(str(path), "pt"):
                pass
        except SafetensorError as err:
            raise ValueError(f"{argument}: {path} is not a safetensors file ({err}); semvlp reads weights only from "
                             "safetensors: pass a pretraining export folder (model.safetensors and config.json, "
                             "from `semvlp pretrain --export` or `semvlp export`)") from err
        path = path.parent
    try:
        return load_pretrained(path)
    except SafetensorError as err:
        raise ValueError(f"{argument}: the model.safetensors in {path} is not a readable safetensors file ({err})") \
            from err


def _finetune_engine(args):
    """The DeepSpeed options of `semvlp finetune`, or None for the plain loop (which takes none of them)."""
    from .finetune.engine_loop import EngineOptions

    if args.deepspeed_config is None:
        given = [flag for flag, value in (("--gradient-accumulation-steps", args.gradient_accumulation_steps),
                                          ("--checkpoint-every", args.checkpoint_every),
                                          ("--resume", args.resume), ("--overwrite", args.overwrite)) if value]
        if given:
            raise ValueError(f"{', '.join(given)}: need --deepspeed-config (fine-tuning under DeepSpeed)")
        return None
    return EngineOptions(args.deepspeed_config, args.gradient_accumulation_steps, args.checkpoint_every or 500,
                         resume=args.resume, overwrite=args.overwrite, precision=args.precision)


def _finetune(args) -> int:
    from .finetune.run import TaskData, format_metrics, run_finetune, tokenizer_for
    from .finetune.loop import FinetuneOptions

    if args.init is None and args.model_config is None:
        raise SystemExit("semvlp finetune: pass --init (a pretraining export) or --model-config (train from scratch)")
    if args.init:
        config, state = _load_pretrained(args.init, "init")
    else:
        from .model import SemVLPConfig

        config, state = SemVLPConfig.load(args.model_config), None
    engine = _finetune_engine(args)
    vocab = args.vocab or _vocab_beside(args.init)
    data = TaskData(args.data, tokenizer_for(config, vocab), config.visual_feat_dim, args.feature_format,
                    _bad_records(args), args.features)
    # Under DeepSpeed the precision is settled with the config file (semvlp.train.ds_config); the engine reports it.
    precision = resolve_precision(args.precision, _device()) if engine else _precision(args, _device())
    options = FinetuneOptions(args.task, args.mode, args.steps, args.batch_size, args.lr, args.warmup_steps,
                              args.weight_decay, seed=args.seed, precision=precision.name)
    # finetune() casts each step's forward itself: a context around the loop would keep stale cast weights.
    results = run_finetune(options, data, config, state, args.output, args.train_split, tuple(args.eval_splits),
                           args.max_answers, args.eval_batch_size, args.retrieval_images, _device(), engine=engine,
                           num_workers=args.num_workers, vocab=vocab)
    if results is None:  # a rank other than 0 of a DeepSpeed launch: rank 0 saves, evaluates and reports
        return 0
    print(f"{args.task} ({args.mode}-stream) after {args.steps} steps:\n{format_metrics(results)}")
    print(f"model, finetune.json, metrics.jsonl and results.json in {args.output}")
    if args.report:
        report = {f"{split}_accuracy": metrics["accuracy"] for split, metrics in results.items()}
        report.update(results=results, task=args.task, mode=args.mode, data=args.data, init=args.init,
                      steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.report}")
    return 0


def _eval(args) -> int:
    from .finetune.run import TaskData, evaluate, format_metrics, tokenizer_for
    from .finetune.loop import FinetuneOptions, init_model, load_finetuned

    precision = _precision(args, _device())
    if (Path(args.model) / "finetune.json").is_file():
        model, options = load_finetuned(args.model, _device())
    else:
        # A pretraining export: its ITM head, as pretrained, is the matching and retrieval model.
        config, state = _load_pretrained(args.model, "model")
        model, options = init_model("itm", config, state, None, 0).to(_device()), FinetuneOptions("itm", args.mode)
    data = TaskData(args.data, tokenizer_for(model.config, args.vocab or _vocab_beside(args.model)),
                    model.config.visual_feat_dim, args.feature_format, _bad_records(args), args.features)
    with autocast(precision, _device()):
        results = {split: evaluate(model, options, data, split, args.batch_size, args.retrieval_images)
                   for split in args.splits}
    print(f"{options.task} ({options.mode}-stream):\n{format_metrics(results)}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _predict(args) -> int:
    from .finetune.predict import run_predict

    count = run_predict(args.task, args.model, args.data, args.split, args.out, args.vocab or _vocab_beside(args.model),
                        args.batch_size, args.retrieval_images, args.top_k, args.feature_format, _bad_records(args),
                        _device(), feature_files=args.features)
    print(f"wrote {args.out}: {args.task} predictions for {count} {args.split} queries")
    return 0


def _easy_vqa(args) -> int:
    from .data.synthetic.easy_vqa import write_easy_vqa

    try:
        counts = write_easy_vqa(args.out, args.feature_dim, tuple(args.formats.split(",")), args.limit)
    except ImportError as err:
        print(f"semvlp data easy-vqa: {err}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{split} {sum(c.values())} questions" for split, c in counts.items())
    print(f"wrote {args.out}: easy-VQA {sizes}; features as {args.formats}")
    return 0


def _features(args) -> int:
    from .data.extract_features import DetectorExtractor, GridExtractor, extract_features

    try:
        extractor = (GridExtractor(args.backbone, args.grid, args.device) if args.backbone else
                     DetectorExtractor(args.detector, args.max_regions, args.score_threshold, args.device))
    except ImportError as err:
        print(f"semvlp data features: {err}", file=sys.stderr)
        return 1
    summary = extract_features(args.images, args.out, extractor, args.format, args.batch_size, args.workers)
    print(f"wrote {summary.path}: {summary.written} images, {summary.skipped} already there")
    return 0


def _ablation(args) -> int:
    from .experiments.ablation import AblationSetup, run_ablation

    setup = AblationSetup(**{k: v for k, v in vars(args).items() if k in AblationSetup.__dataclass_fields__})
    rows = run_ablation(setup)
    print((Path(setup.reports) / f"{setup.name}.md").read_text())
    print(f"{len(rows)} runs; reports in {setup.reports} ({setup.name}.json, {setup.name}.md, {setup.name}.png)")
    return 0


def _add_features(parser) -> None:
    parser.add_argument("--features", nargs="+", metavar="FILE_OR_GLOB",
                        help="feature files to read instead of the data folder's own: paths or quoted glob patterns "
                             "(relative to the working directory), e.g. 'feats/train2014_*.tsv' feats/val2014.tsv; "
                             "read as one store (.tsv, .h5/.hdf5, npz folders; an image id in two files is a bad "
                             "record)")


def _add_finetune(commands) -> None:
    p = commands.add_parser("finetune", help="fine-tune a downstream task (qa, itm, nlvr2) from a pretraining export")
    p.add_argument("--task", choices=("qa", "itm", "nlvr2"), required=True,
                   help="qa: VQA-style answers (BCE over soft scores); itm: image-text matching and retrieval; "
                        "nlvr2: a statement about two images, true or false")
    p.add_argument("--data", required=True, help="data folder in the real formats (semvlp data synth / easy-vqa)")
    p.add_argument("--init", help="pretraining export (OUTPUT/export of semvlp pretrain --export) or run folder")
    p.add_argument("--model-config", type=_model_config,
                   help="without --init: model config JSON (or a preset: tiny, base) to train from scratch")
    p.add_argument("--vocab", help="WordPiece vocab.txt (default: the one beside --init)")
    p.add_argument("--output", required=True, help="folder for model.safetensors, finetune.json, metrics, results")
    p.add_argument("--mode", choices=("single", "two"), default="single", help="stream mode to fine-tune and run in")
    p.add_argument("--steps", type=positive_int, default=500)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=non_negative_int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0, help="new heads, data order and dropout")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-splits", nargs="+", default=["val"], help="splits evaluated at the end")
    p.add_argument("--max-answers", type=positive_int, default=3129,
                   help="qa: answer vocabulary size (most common first)")
    p.add_argument("--eval-batch-size", type=positive_int, default=128)
    p.add_argument("--retrieval-images", type=positive_int, default=100, help="itm: images in the retrieval pool")
    p.add_argument("--feature-format", choices=("tsv", "h5", "npz"), help="which feature files to read")
    _add_features(p)
    p.add_argument("--num-workers", type=workers, default="auto",
                   help="DataLoader worker processes (without --deepspeed-config); auto (default): min(4, CPUs - 1)")
    p.add_argument("--skip-bad-records", action="store_true", help="skip and count bad records instead of failing")
    p.add_argument("--report", help="also write <split>_accuracy of every eval split and the set-up to this JSON")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    ds = p.add_argument_group("DeepSpeed", "train under DeepSpeed as pretraining does (launch with deepspeed or "
                                           "torchrun for several ranks); --batch-size is then the micro-batch per rank")
    ds.add_argument("--deepspeed-config", type=_deepspeed_config,
                    help="DeepSpeed config JSON or preset (zero2_auto, zero1_bf16, ...; ZeRO stage 0-2)")
    ds.add_argument("--gradient-accumulation-steps", type=positive_int,
                    help="micro-batches per optimizer step (default: the config's)")
    ds.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints (default 500; and at "
                                                                   "the end) in OUTPUT/checkpoints")
    ds.add_argument("--resume", action="store_true", help="continue the run in --output from its latest checkpoint")
    ds.add_argument("--overwrite", action="store_true",
                    help="remove an earlier run's checkpoints, metrics and results from --output first")
    p.set_defaults(run=_finetune)

    e = commands.add_parser("eval", help="evaluate a fine-tuned model on splits of a data folder")
    e.add_argument("--model", required=True, help="a semvlp finetune output folder, or a pretraining export "
                                                   "(evaluated as image-text matching with its pretrained ITM head)")
    e.add_argument("--mode", choices=("single", "two"), default="single",
                   help="stream mode for a pretraining export (a fine-tuned model runs in its own)")
    e.add_argument("--data", required=True, help="data folder in the real formats")
    e.add_argument("--splits", nargs="+", default=["test"])
    e.add_argument("--vocab", help="WordPiece vocab.txt (default: the one beside the model)")
    e.add_argument("--batch-size", type=positive_int, default=128)
    e.add_argument("--retrieval-images", type=positive_int, default=100, help="itm: images in the retrieval pool")
    e.add_argument("--out", help="write the results as JSON here")
    e.add_argument("--feature-format", choices=("tsv", "h5", "npz"), help="which feature files to read")
    _add_features(e)
    e.add_argument("--skip-bad-records", action="store_true", help="skip and count bad records instead of failing")
    e.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    e.set_defaults(run=_eval)

    r = commands.add_parser("predict", help="write a fine-tuned model's predictions on a split (labels not needed)")
    r.add_argument("--task", choices=("vqa", "retrieval", "nlvr2"), required=True,
                   help="vqa: [{question_id, answer}] from the questions alone; retrieval: ranked images per caption "
                        "and captions per image; nlvr2: [{identifier, prediction}]")
    r.add_argument("--model", required=True, help="a semvlp finetune output folder of the matching task")
    r.add_argument("--data", required=True, help="data folder in the real formats")
    r.add_argument("--split", default="test")
    r.add_argument("--out", required=True, help="the predictions JSON to write")
    r.add_argument("--vocab", help="WordPiece vocab.txt (default: the one beside the model)")
    r.add_argument("--batch-size", type=positive_int, default=128)
    r.add_argument("--retrieval-images", type=positive_int, default=100, help="retrieval: images in the pool")
    r.add_argument("--top-k", type=positive_int, default=10, help="retrieval: entries in each ranking")
    r.add_argument("--feature-format", choices=("tsv", "h5", "npz"), help="which feature files to read")
    r.add_argument("--skip-bad-records", action="store_true", help="skip and count bad records instead of failing")
    _add_features(r)
    r.set_defaults(run=_predict)


def _add_ablation(commands) -> None:
    from .experiments.ablation import SCHEDULES, AblationSetup

    d = AblationSetup()
    p = commands.add_parser("ablation", help="pretrain with each mode schedule (single-only, two-only, alternating, "
                                             "curricula) at the same budget and seeds, fine-tune and evaluate each, "
                                             "write reports")
    p.add_argument("--output", default=d.output, help="runs and the synthetic data folder")
    p.add_argument("--reports", default=d.reports, help="folder for the reports: NAME.json, NAME.md, NAME.png (--name)")
    p.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=d.schedules)
    p.add_argument("--seeds", nargs="+", type=int, default=d.seeds)
    p.add_argument("--model-config", type=_model_config, default=d.model_config)
    p.add_argument("--deepspeed-config", type=_deepspeed_config, default=d.deepspeed_config)
    p.add_argument("--name", default=d.name, help="the reports' file name stem (ablation, schedule_study)")
    p.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps, help="the same for every schedule")
    p.add_argument("--ranks", type=int, default=d.ranks,
                   help="pretraining processes per run (under DeepSpeed's launcher when more than one)")
    p.add_argument("--pretrain-options", default=d.pretrain_options,
                   help="more `semvlp pretrain` options for every run, as one string (--pretrain-options='--lr 2e-3')")
    p.add_argument("--micro-batch-size", type=int, default=d.micro_batch_size, help="pretraining batch")
    p.add_argument("--lr", type=float, default=d.lr, help="pretraining peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--attribute-mask-rate", type=float, default=d.attribute_mask_rate,
                   help="pretraining: share of captions with grounded colour words that are attribute samples")
    p.add_argument("--qa-steps", type=int, default=d.qa_steps, help="QA fine-tuning steps per mode")
    p.add_argument("--qa-lr", type=float, default=d.qa_lr, help="fine-tuning learning rate (QA and NLVR2)")
    p.add_argument("--nlvr2-steps", type=int, default=d.nlvr2_steps, help="NLVR2-style fine-tuning steps (0: skip)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="fine-tuning batch")
    p.add_argument("--train-scenes", type=int, default=d.train_scenes)
    p.add_argument("--held-out-scenes", type=int, default=d.held_out_scenes, help="val and novel scenes each")
    p.add_argument("--test-scenes", type=int, default=d.test_scenes)
    p.add_argument("--data-seed", type=int, default=d.data_seed)
    p.add_argument("--vocab-size", type=int, default=d.vocab_size)
    p.add_argument("--retrieval-images", type=int, default=d.retrieval_images)
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.set_defaults(run=_ablation)


def _add_pretrain(commands) -> None:
    from .data.synthetic import REGION_FEATURES
    from .train.options import PretrainOptions
    from .train.schedule import MODE_SCHEDULES

    d = PretrainOptions
    p = commands.add_parser("pretrain", help="pretrain under DeepSpeed (launch with deepspeed, torchrun or plainly)")
    p.add_argument("--data", default=d.data,
                   help="'synthetic' (generated in memory) or a data folder written in the real formats")
    p.add_argument("--model-config", required=True, type=_model_config,
                   help="model config JSON, or a preset: tiny (CPU), base")
    p.add_argument("--deepspeed-config", required=True, type=_deepspeed_config,
                   help="DeepSpeed config JSON, or a preset: zero{0,1,2,3}_{auto,bf16,fp16,fp32}")
    p.add_argument("--output", required=True, help="run folder: checkpoints/, metrics.jsonl, tensorboard/, curves.png")
    p.add_argument("--max-steps", type=positive_int, required=True,
                   help="optimizer steps (also the LR schedule's length)")
    p.add_argument("--mode-schedule", choices=MODE_SCHEDULES, default=d.mode_schedule,
                   help="alternate the modes, one mode only, or a curriculum: one mode, then the other")
    p.add_argument("--mode-ratio", default=d.mode_ratio,
                   help="alternate: blocks of single-stream : blocks of two-stream; curriculum: the run's steps split "
                        "S parts single-stream : T parts two-stream (1:1 switches at half)")
    p.add_argument("--mode-granularity", default=d.mode_granularity,
                   help="alternate: block length, 'step', 'epoch' or N steps")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/latest")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the checkpoints, metrics and results of an earlier run in OUTPUT first (without it, "
                        "or --resume, a folder holding them is refused)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="--resume with a model config (sizes, tasks, loss weights) other than the checkpoint's "
                        "(refused without it, naming the fields that differ)")
    p.add_argument("--seed", type=int, default=d.seed, help="model initialisation, data order, masking and dropout")
    p.add_argument("--skip-bad-records", action="store_true", help="skip and count bad records instead of failing")
    p.add_argument("--synthetic-scenes", type=positive_int, default=d.synthetic_scenes,
                   help="--data synthetic: training scenes")
    p.add_argument("--data-seed", type=int, default=d.data_seed, help="--data synthetic: seed of the scenes")
    p.add_argument("--region-features", choices=REGION_FEATURES, default=d.region_features,
                   help="--data synthetic: hand features (colour statistics, shape cues) or pooled CNN features")
    p.add_argument("--feature-format", choices=("tsv", "h5", "npz"), help="data folder: which feature files to read")
    _add_features(p)
    p.add_argument("--vocab", help="WordPiece vocab.txt (default: bert-base-uncased's)")
    p.add_argument("--attribute-mask-rate", type=float, default=d.attribute_mask_rate,
                   help="share of captions with grounded words (colour words, spatial relation words) that become "
                        "attribute samples: all those words masked (ERNIE-ViL style), no ITM label")
    p.add_argument("--relation-mask-rate", type=float, default=d.relation_mask_rate,
                   help="the same share for captions with spatial relation words (default: --attribute-mask-rate); "
                        "the rest are ITM samples, whose relation words also name the relation the image shows")
    p.add_argument("--micro-batch-size", type=positive_int, help="override train_micro_batch_size_per_gpu")
    p.add_argument("--gradient-accumulation-steps", type=positive_int, help="override gradient_accumulation_steps")
    p.add_argument("--lr", type=float, help="override the peak learning rate")
    p.add_argument("--warmup-steps", type=non_negative_int, help="override the scheduler's warmup_num_steps")
    p.add_argument("--checkpoint-every", type=positive_int, default=d.checkpoint_every,
                   help="steps between checkpoints (and one at the end)")
    p.add_argument("--keep-checkpoints", type=positive_int, default=d.keep_checkpoints,
                   help="complete checkpoints kept")
    p.add_argument("--eval-every", type=non_negative_int, default=d.eval_every,
                   help="steps between held-out evaluations (0: at the end only)")
    p.add_argument("--eval-batch-size", type=positive_int, default=d.eval_batch_size)
    p.add_argument("--num-workers", type=workers, default=d.num_workers, help=WORKERS_HELP)
    p.add_argument("--max-nonfinite-steps", type=positive_int, default=d.max_nonfinite_steps,
                   help="stop after this many consecutive steps with a NaN/inf loss")
    p.add_argument("--export", action="store_true", help="write OUTPUT/export/model.safetensors at the end")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help=PRECISION_HELP + "; wins over the DeepSpeed config's bf16/fp16 section, which auto keeps "
                        "unless it says \"enabled\": \"auto\" (configs/deepspeed/zero*_auto.json)")
    p.add_argument("--token-budget", type=positive_int,
                   help="static-shape micro-batches: as many samples (at most --micro-batch-size) as fit in this many "
                        "text tokens + regions, padded to exactly that (for --compile and CUDA graphs)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (mode reduce-overhead: CUDA graphs on a GPU); use with --token-budget")
    p.set_defaults(run=_pretrain)


def _add_data(commands) -> None:
    from .data.synthetic import REGION_FEATURES

    data = commands.add_parser("data", help="synthetic data and vocabularies").add_subparsers(dest="data_command",
                                                                                             required=True)
    synth = data.add_parser("synth", help="write the synthetic dataset in the real formats")
    synth.add_argument("--out", required=True, help="data folder to write")
    synth.add_argument("--train", type=positive_int, default=4000, help="training images")
    synth.add_argument("--val", type=non_negative_int, default=400,
                       help="held-out images of the training distribution (0: none)")
    synth.add_argument("--novel", type=non_negative_int, default=400,
                       help="held-out images with held-out colour-shape combos (0: none)")
    synth.add_argument("--test", type=non_negative_int, default=0,
                       help="downstream test images (pretraining never reads them; 0: none)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--feature-dim", type=positive_int, default=64,
                       help="region feature size (hand features are zero-padded to it; CNN features need a "
                            "multiple of 4)")
    synth.add_argument("--region-features", choices=REGION_FEATURES, default="hand",
                       help="hand features (colour statistics, shape cues) or pooled CNN features of a seeded, "
                            "untrained network")
    synth.add_argument("--formats", default="tsv", help="comma-separated feature formats: tsv,h5,npz")
    synth.set_defaults(run=_synth)
    vocab = data.add_parser("vocab", help="train a WordPiece vocab.txt on a corpus")
    vocab.add_argument("--corpus", nargs="+", required=True,
                       help="text files (one sentence a line), COCO captions JSON or VQA questions JSON")
    vocab.add_argument("--out", required=True, help="folder for vocab.txt")
    vocab.add_argument("--vocab-size", type=positive_int, default=8000)
    vocab.add_argument("--min-frequency", type=positive_int, default=1)
    vocab.set_defaults(run=_vocab)
    easy = data.add_parser("easy-vqa", help="write easy-VQA (from the easy-vqa package) in the real formats")
    easy.add_argument("--out", required=True, help="data folder to write")
    easy.add_argument("--feature-dim", type=positive_int, default=64,
                      help="region feature size (hand features, zero-padded)")
    easy.add_argument("--formats", default="tsv", help="comma-separated feature formats: tsv,h5,npz")
    easy.add_argument("--limit", type=positive_int, help="only the first N images of each split")
    easy.set_defaults(run=_easy_vqa)
    features = data.add_parser("features", help="region features of a folder of jpg/png images: grid features of "
                                                "a Hugging Face backbone or Faster R-CNN regions")
    features.add_argument("--images", required=True, help="folder of .jpg/.png images (file name = image id)")
    features.add_argument("--out", required=True, help="data folder to write features.tsv / features.h5 into; "
                                                       "images already there are skipped")
    source = features.add_mutually_exclusive_group(required=True)
    source.add_argument("--backbone", help="grid features: a model folder (or hub id) for transformers' AutoModel "
                                           "and AutoImageProcessor (ViT, DINOv2, CLIP, ResNet, ConvNeXt, ...)")
    source.add_argument("--detector", help="detector regions: a torchvision fasterrcnn_resnet50_fpn state-dict file")
    features.add_argument("--grid", type=positive_int, help="--backbone: average-pool to N x N cells (default: one "
                                                            "region per patch or feature-map cell)")
    features.add_argument("--max-regions", type=positive_int, default=36, help="--detector: best boxes per image")
    features.add_argument("--score-threshold", type=float, default=0.2, help="--detector: keep boxes above it")
    features.add_argument("--format", choices=("tsv", "h5"), default="tsv", help="LXMERT TSV or HDF5")
    features.add_argument("--batch-size", type=positive_int, default=8)
    features.add_argument("--workers", type=non_negative_int, default=2, help="image-decoding processes")
    features.add_argument("--device", help="torch device (default: cuda when there is one, else cpu)")
    features.set_defaults(run=_features)
    convert = data.add_parser("convert", help="copy a data folder with every image id in the canonical form "
                                              "(COCO_<split>_<12 digits> and integers -> the integer)")
    convert.add_argument("--data", required=True, help="data folder to read")
    convert.add_argument("--out", required=True, help="new folder to write")
    convert.set_defaults(run=_convert)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semvlp", description=__doc__)
    # The deepspeed launcher passes --local_rank=N before the subcommand; the rank is read from LOCAL_RANK.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="forward+backward of the pretraining model in both modes on a random batch")
    demo.add_argument("--model-config", required=True, type=_model_config,
                      help="model config JSON, or a preset: tiny, base")
    demo.add_argument("--batch-size", type=int, default=8)
    demo.add_argument("--text-len", type=int, default=20)
    demo.add_argument("--num-regions", type=int, default=36)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    demo.set_defaults(run=_demo)
    _add_pretrain(commands)
    _add_data(commands)
    _add_finetune(commands)
    _add_ablation(commands)
    export = commands.add_parser("export", help="checkpoint -> model.safetensors (DeepSpeed's zero_to_fp32)")
    export.add_argument("--checkpoints", required=True, help="OUTPUT/checkpoints of a run")
    export.add_argument("--tag", help="checkpoint folder name (default: the latest)")
    export.add_argument("--out", required=True, help="folder for model.safetensors, config.json and README.md "
                        "(save_pretrained layout)")
    export.add_argument("--vocab", help="WordPiece vocab.txt of the run, copied beside the weights")
    export.set_defaults(run=_export)
    return parser


def _raised_in_semvlp(error: BaseException) -> bool:
    """Whether `error` was raised by semvlp's own code (a checked input, with a message meant for the user) rather
    than inside a library it calls (where the traceback is what helps)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    # The spec names the module even where it runs as __main__ (python -m semvlp.cli).
    spec = tb.tb_frame.f_globals.get("__spec__")
    name = spec.name if spec is not None else tb.tb_frame.f_globals.get("__name__", "")
    return name.split(".")[0] == "semvlp"


def main(argv: list[str] | None = None) -> int:
    """Runs one command; a ValueError of semvlp's (bad input) becomes one `semvlp: error:` line on stderr and exit
    status 2, and on the other ranks of a run the failure of the rank that raised it one such line and status 1."""
    from .train.distributed import RankFailedError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except RankFailedError as err:
        print(f"semvlp: error: {err}", file=sys.stderr, flush=True)
        return 1
    except ValueError as err:
        if not _raised_in_semvlp(err):
            raise
        print(f"semvlp: error: {err}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
