"""The Collator with a token budget: the batch of the same samples, padded to the budget's fixed shapes."""

import dataclasses

import numpy as np
import pytest
import torch

from semvlp.data.collate import Collator
from semvlp.data.dataset import Sample
from semvlp.model.inputs import TokenBudget, pad_batch


def _sample(n_words, n_regions, seed):
    rng = np.random.default_rng(seed)
    ids = np.concatenate([[101], rng.integers(1000, 2000, n_words), [102]]).astype(np.int64)
    return Sample(ids, np.array([1], np.int64), rng.random((n_regions, 8)).astype(np.float32),
                  np.tile(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), (n_regions, 1)),
                  np.arange(n_regions, dtype=np.int64), 1, -100, (seed,), "random", np.array([1, 2], np.int64),
                  np.array([0, 1], np.int64))


def test_budget_collator_pads_the_plain_batch_to_fixed_shapes():
    budget = TokenBudget(tokens=80, max_samples=4, max_text_len=12, max_regions=6)
    plain = Collator(103, 1000, 3000, box_dim=5)
    padded = Collator(103, 1000, 3000, box_dim=5, budget=budget)
    shapes = set()
    for seed, (words, regions) in enumerate([((3, 10), (6, 2)), ((10,), (6,)), ((1, 2, 3), (1, 2, 3))]):
        samples = [_sample(w, r, seed * 10 + i) for i, (w, r) in enumerate(zip(words, regions))]
        batch = padded(samples)
        expected = pad_batch(plain(samples), budget)
        for field in dataclasses.fields(batch):
            actual, wanted = getattr(batch, field.name), getattr(expected, field.name)
            if isinstance(actual, torch.Tensor):
                torch.testing.assert_close(actual, wanted, rtol=0, atol=0, msg=field.name)
        shapes.add((batch.input_ids.shape, batch.region_features.shape, batch.mlm_positions.shape,
                    batch.layout.joint_cu_seqlens.shape, batch.layout.max_joint_len))
    assert len(shapes) == 1


def test_budget_collator_rejects_samples_that_do_not_fit():
    collate = Collator(103, 1000, 3000, box_dim=5, budget=TokenBudget(40, 2, 12, 6))
    with pytest.raises(ValueError, match="do not fit"):
        collate([_sample(5, 3, s) for s in range(3)])
