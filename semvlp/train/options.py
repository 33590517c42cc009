"""PretrainOptions: everything `semvlp pretrain` is told, typed, with the command line's defaults."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields


@dataclass
class PretrainOptions:
    model_config: str                        # model config JSON (configs/model/tiny.json, base.json)
    deepspeed_config: str                    # DeepSpeed config JSON (configs/deepspeed/*.json)
    output: str                              # run folder: checkpoints/, metrics.jsonl, tensorboard/, curves.png
    max_steps: int                           # optimizer steps (also the LR schedule's length)
    data: str = "synthetic"                  # "synthetic" (generated in memory) or a data folder
    mode_schedule: str = "alternate"         # alternate | single | two
    mode_ratio: str = "1:1"                  # alternate: blocks of single-stream : blocks of two-stream
    mode_granularity: str = "step"           # alternate: block length, "step", "epoch" or N steps
    resume: bool = False
    seed: int = 0                            # model initialisation, data order, masking and dropout
    skip_bad_records: bool = False
    synthetic_scenes: int = 4000             # --data synthetic: training scenes
    data_seed: int = 0                       # --data synthetic: seed of the scenes
    region_features: str = "hand"            # --data synthetic: "hand" or "cnn"
    feature_format: str | None = None        # data folder: tsv | h5 | npz (default: the one present)
    vocab: str | None = None                 # WordPiece vocab.txt (default: bert-base-uncased's)
    attribute_mask_rate: float = 0.0
    micro_batch_size: int | None = None      # overrides of the DeepSpeed config
    gradient_accumulation_steps: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0                      # 0: held-out evaluation at the end only
    eval_batch_size: int = 128
    num_workers: int = 0
    max_nonfinite_steps: int = 20
    export: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PretrainOptions":
        """The options of a parsed `semvlp pretrain` command line."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
