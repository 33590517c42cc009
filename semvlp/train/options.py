"""PretrainOptions: everything `semvlp pretrain` is told, typed, with the command line's defaults."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

# The smallest value of each integer option; the DeepSpeed config's overrides may also be None (keep the file's).
_LEAST = {"max_steps": 1, "checkpoint_every": 1, "keep_checkpoints": 1, "max_nonfinite_steps": 1,
          "eval_batch_size": 1, "synthetic_scenes": 1, "micro_batch_size": 1, "gradient_accumulation_steps": 1,
          "warmup_steps": 0, "eval_every": 0}
_OVERRIDES = ("micro_batch_size", "gradient_accumulation_steps", "warmup_steps")


@dataclass
class PretrainOptions:
    model_config: str                        # model config JSON (configs/model/tiny.json, base.json)
    deepspeed_config: str                    # DeepSpeed config JSON (configs/deepspeed/*.json)
    output: str                              # run folder: checkpoints/, metrics.jsonl, tensorboard/, curves.png
    max_steps: int                           # optimizer steps (also the LR schedule's length)
    data: str = "synthetic"                  # "synthetic" (generated in memory) or a data folder
    mode_schedule: str = "alternate"         # one of semvlp.train.schedule.MODE_SCHEDULES
    mode_ratio: str = "1:1"                  # alternate: blocks of single-stream : blocks of two-stream
    mode_granularity: str = "step"           # alternate: block length, "step", "epoch" or N steps
    resume: bool = False                     # continue the run in `output` from its latest checkpoint
    overwrite: bool = False                  # remove the run in `output` (checkpoints, metrics) and start again
    allow_config_change: bool = False        # --resume with a model config other than the checkpoint's
    seed: int = 0                            # model initialisation, data order, masking and dropout
    skip_bad_records: bool = False
    synthetic_scenes: int = 4000             # --data synthetic: training scenes
    data_seed: int = 0                       # --data synthetic: seed of the scenes
    region_features: str = "hand"            # --data synthetic: "hand" or "cnn"
    feature_format: str | None = None        # data folder: tsv | h5 | npz (default: the one present)
    features: list[str] | None = None        # feature files or glob patterns (default: the data folder's own)
    vocab: str | None = None                 # WordPiece vocab.txt (default: bert-base-uncased's)
    attribute_mask_rate: float = 0.0
    relation_mask_rate: float | None = None  # captions with relation words; None: attribute_mask_rate
    micro_batch_size: int | None = None      # overrides of the DeepSpeed config
    gradient_accumulation_steps: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0                      # 0: held-out evaluation at the end only
    eval_batch_size: int = 128
    num_workers: int | str = "auto"          # DataLoader workers per rank; auto: run_data.resolve_num_workers
    max_nonfinite_steps: int = 20
    export: bool = False
    precision: str = "auto"                  # auto | bf16 | fp16 | fp32 (semvlp.train.ds_config: how it meets the file)
    token_budget: int | None = None          # static-shape micro-batches of this many text tokens + regions
    compile: bool = False                    # torch.compile the model (CUDA graphs on a GPU)

    def __post_init__(self):
        for name, least in _LEAST.items():
            value = getattr(self, name)
            if value is None and name in _OVERRIDES:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}: expected an integer of at least {least}, got {value!r}")
        if self.token_budget is not None and (isinstance(self.token_budget, bool)
                                              or not isinstance(self.token_budget, int) or self.token_budget < 1):
            raise ValueError(f"token_budget: expected a positive integer, got {self.token_budget!r}")
        if self.num_workers != "auto" and (isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int)
                                           or self.num_workers < 0):
            raise ValueError(f"num_workers: expected 'auto' or an integer of at least 0, got {self.num_workers!r}")
        if self.features is not None and self.data == "synthetic":
            raise ValueError("features: the synthetic data are generated with their features; pass a data folder "
                             "as data to read feature files")
        if self.resume and self.overwrite:
            raise ValueError("resume, overwrite: pass one of them (--resume continues the run in the output folder, "
                             "--overwrite deletes it)")

    @property
    def data_description(self) -> str:
        """The training data as the export's model card names it: --data, and the --features files where given."""
        return self.data if not self.features else f"{self.data} (features: {' '.join(self.features)})"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PretrainOptions":
        """The options of a parsed `semvlp pretrain` command line."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
