"""The `semvlp` command."""

from __future__ import annotations

import argparse
import sys

import torch


def _demo(args) -> int:
    """One real forward and backward pass of the pretraining model in both modes on a random batch."""
    from .data import random_batch
    from .model import SemVLPConfig, SemVLPForPretraining
    from .ops import backends

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
        out = model(batch, mode=mode)
        out.loss.backward()
        with_grad = sum(p.grad is not None for p in model.parameters())
        grad_norm = torch.sqrt(sum(p.grad.float().pow(2).sum() for p in model.parameters() if p.grad is not None))
        losses = "  ".join(f"{name}={value.item():.4f}" for name, value in out.losses.items())
        print(f"{mode}-stream: loss={out.loss.item():.4f}  {losses}  "
              f"grad-norm={grad_norm.item():.3f}  params-with-grad={with_grad}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semvlp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="forward+backward of the pretraining model in both modes on a random batch")
    demo.add_argument("--model-config", required=True, help="model config JSON (e.g. configs/model/tiny.json)")
    demo.add_argument("--batch-size", type=int, default=8)
    demo.add_argument("--text-len", type=int, default=20)
    demo.add_argument("--num-regions", type=int, default=36)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
