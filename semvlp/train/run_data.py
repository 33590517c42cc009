"""The run's data: the synthetic dataset or a data folder, and the order in which each rank reads it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..data.corpus import Corpus, load_corpus
from ..data.formats import open_features
from ..data.records import BadRecords
from ..data.synthetic import generate_split, to_corpus

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("val", "novel")


@dataclass
class RunData:
    train: Corpus
    held_out: dict[str, Corpus]   # evaluation splits present: "val" (new scenes), "novel" (held-out combinations)


def load_run_data(source: str, bad: BadRecords, feature_dim: int, synthetic_scenes: int = 4000,
                  data_seed: int = 0, feature_format: str | None = None, region_features: str = "hand") -> RunData:
    """source "synthetic" (generated in memory, seeded by data_seed, with `region_features`, "hand" or "cnn")
    or a data folder in the real formats."""
    if source == "synthetic":
        held_out_scenes = max(synthetic_scenes // 10, 50)
        counts = {"train": synthetic_scenes, "val": held_out_scenes, "novel": held_out_scenes}
        splits = {split: to_corpus(generate_split(split, n, data_seed, feature_dim, features=region_features))
                  for split, n in counts.items()}
        return RunData(splits["train"], {s: splits[s] for s in EVAL_SPLITS})
    # Every record is checked against the model's feature size: a record of another size is a bad record.
    features = open_features(source, feature_format, bad, feature_dim=feature_dim)
    train = load_corpus(source, "train", features=features, bad=bad)
    held_out = {}
    for split in EVAL_SPLITS:
        try:
            held_out[split] = load_corpus(source, split, features=features, bad=bad)
        except ValueError as err:
            logger.info("no %s split: %s", split, err)
    return RunData(train, held_out)


class MicroBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's micro-batches of (epoch, index) keys, step after step from `start_step`.

    Step s reads the s-th global batch of `micro * accumulation * world` samples of a seeded per-epoch
    permutation; micro-batch m of rank r is its slice k = m * world + r. The keys of a step depend on neither
    the rank layout nor earlier steps, so one process with accumulation A * W reads exactly the samples that
    W ranks with accumulation A read, and a resumed run continues where the checkpoint was taken.
    """

    def __init__(self, num_items: int, micro: int, accumulation: int, world: int, rank: int, seed: int,
                 start_step: int, max_steps: int):
        self.num_items, self.micro, self.accumulation = num_items, micro, accumulation
        self.world, self.rank, self.seed = world, rank, seed
        self.start_step, self.max_steps = start_step, max_steps
        self.global_batch = micro * accumulation * world
        if num_items < self.global_batch:
            raise ValueError(f"data: {num_items} training samples are fewer than one global batch "
                             f"({micro} x {accumulation} accumulation x {world} ranks)")
        self.steps_per_epoch = num_items // self.global_batch

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.accumulation

    def __iter__(self):
        permutation, epoch_of_permutation = None, None
        for step in range(self.start_step, self.max_steps):
            epoch, position = divmod(step, self.steps_per_epoch)
            if epoch != epoch_of_permutation:
                permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
                epoch_of_permutation = epoch
            first = position * self.global_batch
            for m in range(self.accumulation):
                k = m * self.world + self.rank
                chunk = permutation[first + k * self.micro:first + (k + 1) * self.micro]
                yield [(epoch, int(i)) for i in chunk]
