"""The run's data: the synthetic dataset or a data folder, and the order in which each rank reads it."""

from __future__ import annotations

import glob
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.corpus import Corpus, load_corpus, split_files
from ..data.dataset import PretrainingDataset
from ..data.formats import open_features
from ..data.records import BadRecords
from ..data.synthetic import generate_split, to_corpus
from ..model.inputs import TokenBudget

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("val", "novel")
# A feature file's format by its suffix; a folder is an npz folder.
_FORMAT_OF_SUFFIX = {".tsv": "tsv", ".h5": "h5", ".hdf5": "h5"}
MAX_AUTO_WORKERS = 4


@dataclass
class RunData:
    train: Corpus
    held_out: dict[str, Corpus]   # evaluation splits present: "val" (new scenes), "novel" (held-out combinations)


def expand_feature_files(entries, feature_format: str | None = None, argument: str = "--features") -> list[Path]:
    """The feature files named by `entries` (paths or glob patterns, relative to the working directory), in the
    order given, each pattern's matches sorted. A pattern that matches nothing, a file named twice, a file whose
    suffix is no feature format (.tsv, .h5/.hdf5, or a folder of npz files), or one of another format than
    `feature_format` is a ValueError naming `argument`. Files of different formats are read as one store."""
    if isinstance(entries, (str, Path)):
        entries = [entries]
    if not entries:
        raise ValueError(f"{argument}: expected at least one feature file or glob pattern, got none")
    found: dict[Path, str] = {}
    for entry in map(str, entries):
        pattern = os.path.expanduser(entry)
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [Path(m).absolute() for m in matches if os.path.exists(m)]
        if not matches:
            raise ValueError(f"{argument}: {entry!r} " + ("matches no file" if glob.has_magic(pattern) else
                                                          "does not exist") + f" (relative to {os.getcwd()})")
        for path in matches:
            fmt = "npz" if path.is_dir() else _FORMAT_OF_SUFFIX.get(path.suffix.lower())
            if fmt is None:
                raise ValueError(f"{argument}: {path} (from {entry!r}) is not a feature file: expected .tsv, "
                                 ".h5/.hdf5 files or folders of npz files")
            if feature_format is not None and fmt != feature_format:
                raise ValueError(f"{argument}: {path} (from {entry!r}) is a {fmt} feature file, but "
                                 f"--feature-format {feature_format} reads every file as {feature_format}; "
                                 "leave --feature-format out to read each file by its suffix")
            if path in found:
                raise ValueError(f"{argument}: {path} is named twice (by {found[path]!r} and {entry!r})")
            found[path] = entry
    # As patterns for `open_features`: a name with glob characters must match only itself.
    return [path.parent / glob.escape(path.name) for path in found]


def resolve_num_workers(requested: int | str, in_memory: bool, local_ranks: int,
                        cpus: int | None = None) -> tuple[int, str]:
    """(DataLoader worker processes per rank, why): an explicit number as given; "auto": none for data held in
    memory (a worker only copies it), else min(4, CPUs per local rank - 1), the rest of a rank's CPUs left to
    its main process."""
    if requested != "auto":
        return int(requested), "--num-workers"
    if in_memory:
        return 0, "--num-workers auto: the data are in memory"
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_rank = max(1, cpus // max(1, local_ranks))
    workers = max(0, min(MAX_AUTO_WORKERS, per_rank - 1))
    return workers, (f"--num-workers auto: file-backed data, {cpus} CPUs for {local_ranks} rank(s) on this node, "
                     f"min({MAX_AUTO_WORKERS}, {per_rank} - 1)")


def ranks_on_node(world_size: int) -> int:
    """Ranks on this node: from the launcher (torchrun: LOCAL_WORLD_SIZE, deepspeed: LOCAL_SIZE), else all."""
    for name in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return world_size


def load_run_data(source: str, bad: BadRecords, feature_dim: int, synthetic_scenes: int = 4000,
                  data_seed: int = 0, feature_format: str | None = None, region_features: str = "hand",
                  num_region_labels: int | None = None, feature_files=None) -> RunData:
    """source "synthetic" (generated in memory, seeded by data_seed, with `region_features`, "hand" or "cnn")
    or a data folder in the real formats, whose features are `feature_files` (paths or glob patterns, relative
    to the working directory: `expand_feature_files`) where given, else the folder's own. Every record is checked
    here, before any sample is drawn, against the model config's `feature_dim` and `num_region_labels` (the
    classes of the masked-region label head)."""
    if source == "synthetic":
        if feature_files is not None:
            raise ValueError("--features: the synthetic data are generated with their features; pass --data a data "
                             "folder to read feature files")
        held_out_scenes = max(synthetic_scenes // 10, 50)
        counts = {"train": synthetic_scenes, "val": held_out_scenes, "novel": held_out_scenes}
        splits = {split: to_corpus(generate_split(split, n, data_seed, feature_dim, features=region_features))
                  for split, n in counts.items()}
        if num_region_labels is not None:
            _check_synthetic_labels(splits.values(), num_region_labels)
        return RunData(splits["train"], {s: splits[s] for s in EVAL_SPLITS})
    # A record of another feature size, or with an object label the model has no class for, is a bad record.
    files = None if feature_files is None else expand_feature_files(feature_files, feature_format)
    if files is not None:
        logger.info("features: %d files (%s)", len(files), ", ".join(map(str, files)))
    features = open_features(source, feature_format, bad, feature_dim=feature_dim, num_region_labels=num_region_labels,
                             files=files)
    train = load_corpus(source, "train", features=features, bad=bad)
    held_out = {}
    for split in EVAL_SPLITS:
        if split_files(source, split):
            held_out[split] = load_corpus(source, split, features=features, bad=bad)
        else:
            logger.info("no %s split in %s", split, source)
    return RunData(train, held_out)


def _check_synthetic_labels(corpora, num_region_labels: int) -> None:
    highest = max(int(corpus.features[i].object_ids.max()) for corpus in corpora for i in corpus.features.ids())
    if highest >= num_region_labels:
        raise ValueError(f"num_region_labels: the synthetic scenes have object labels up to {highest}, the model "
                         f"config's num_region_labels={num_region_labels} has no class for them")


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


def dataset_token_budget(dataset: PretrainingDataset, tokens: int, max_samples: int) -> TokenBudget:
    """The token budget of `tokens` text tokens and regions per micro-batch, `max_samples` samples at most, whose
    longest sample is the dataset's longest text (mismatching texts included) and largest region count."""
    texts = itertools.chain(dataset.token_ids, *dataset.hard_negative_ids)
    max_text_len = max(len(ids) for ids in texts)
    max_regions = max(dataset.corpus.features.num_regions(image_id)
                      for image_id in {t.image_id for t in dataset.texts})
    try:
        return TokenBudget(tokens, max_samples, max_text_len, max_regions)
    except ValueError as err:
        raise ValueError(f"token_budget: {err}") from err


def sample_lengths(dataset: PretrainingDataset) -> Callable[[tuple[int, int]], tuple[int, int]]:
    """A key's (text tokens, regions): its text depends on the key (a mismatching text is drawn per epoch)."""
    def lengths(key: tuple[int, int]) -> tuple[int, int]:
        sample = dataset[key]
        return len(sample.token_ids), len(sample.features)
    return lengths


class TokenBudgetSampler(torch.utils.data.Sampler):
    """Yields this rank's micro-batches of (epoch, index) keys, each as many samples as fit in a token budget.

    The keys run through a seeded permutation per epoch, one epoch after the other; each micro-batch takes the
    keys that follow while they fit (`lengths(key)` gives a sample's text tokens and regions). Micro-batch g of
    that stream goes to rank g % world, step g // (accumulation * world): the stream depends on neither the rank
    layout nor where a run starts, so a resumed run, which packs the stream again up to its start step, reads
    exactly what the uninterrupted run would have read.
    """

    def __init__(self, num_items: int, lengths: Callable[[tuple[int, int]], tuple[int, int]], budget: TokenBudget,
                 accumulation: int, world: int, rank: int, seed: int, start_step: int, max_steps: int):
        if num_items < 1:
            raise ValueError("data: no training samples")
        self.num_items, self.lengths, self.budget = num_items, lengths, budget
        self.accumulation, self.world, self.rank, self.seed = accumulation, world, rank, seed
        self.start_step, self.max_steps = start_step, max_steps

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.accumulation

    def _keys(self):
        for epoch in itertools.count():
            for i in np.random.default_rng([self.seed, epoch]).permutation(self.num_items):
                yield epoch, int(i)

    def _micro_batches(self):
        keys, text, regions = [], [], []
        for key in self._keys():
            t, r = self.lengths(key)
            self.budget.check_sample(t, r)
            if keys and not self.budget.fits(text + [t], regions + [r]):
                yield keys
                keys, text, regions = [], [], []
            keys.append(key)
            text.append(t)
            regions.append(r)

    def __iter__(self):
        per_step = self.accumulation * self.world
        first, end = self.start_step * per_step, self.max_steps * per_step
        for g, keys in enumerate(itertools.islice(self._micro_batches(), end)):
            if g >= first and g % self.world == self.rank:
                yield keys
