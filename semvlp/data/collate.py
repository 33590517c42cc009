"""The collate function: masks words and regions of each sample, then packs the samples into one
PretrainingBatch with its PackedLayout (built here, on the CPU)."""

from __future__ import annotations

import numpy as np
import torch

from ..model.inputs import PackedLayout, PretrainingBatch, TokenBudget, pad_batch
from .boxes import box_features
from .dataset import Sample

WORD_MASK_RATE = 0.15
REGION_MASK_RATE = 0.15


class Collator:
    """Masks as BERT and LXMERT do: 15% of words (80% [MASK], 10% a random word, 10% kept) and 15% of regions
    (features zeroed). Words of mismatched pairs are masked too, so [MASK] says nothing about the ITM label,
    but only matched pairs and questions contribute MLM targets, and the relation words a sample names in
    `shown_relation_positions` (see Sample), whatever its ITM label. A sample's `masking` says which of these
    apply (see Sample); "random_and_grounded" also replaces all its grounded words (colour and relation words)
    by [MASK].

    `budget`: every batch is padded to the budget's fixed shapes (`semvlp.model.inputs.pad_batch`); the samples
    given must fit in it (the token-budget sampler forms such micro-batches)."""

    def __init__(self, mask_id: int, first_word_id: int, vocab_size: int, box_dim: int,
                 word_mask_rate: float = WORD_MASK_RATE, region_mask_rate: float = REGION_MASK_RATE,
                 budget: TokenBudget | None = None):
        if not first_word_id < vocab_size:
            raise ValueError(f"first_word_id: expected below vocab_size {vocab_size}, got {first_word_id}")
        for name, rate in (("word_mask_rate", word_mask_rate), ("region_mask_rate", region_mask_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name}: expected a rate in [0, 1], got {rate}")
        self.mask_id, self.first_word_id, self.vocab_size = mask_id, first_word_id, vocab_size
        self.box_dim = box_dim
        self.word_mask_rate, self.region_mask_rate = word_mask_rate, region_mask_rate
        self.budget = budget

    def _mask_words(self, sample: Sample, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input ids, masked positions with targets, their targets)."""
        ids = sample.token_ids.copy()
        if sample.masking == "none":
            return ids, np.zeros(0, np.int64), np.zeros(0, np.int64)
        if sample.masking == "attributes":
            positions = sample.grounded_positions
            targets = ids[positions].copy()
            ids[positions] = self.mask_id
            return ids, positions, targets
        chosen = rng.random(len(ids)) < self.word_mask_rate
        chosen[[0, -1]] = False  # [CLS] and [SEP]
        action = rng.random(len(ids))
        if sample.masking == "random_and_grounded":
            chosen[sample.grounded_positions] = True
            action[sample.grounded_positions] = 0.0  # always [MASK]
        positions = np.flatnonzero(chosen)
        targets = ids[positions].copy()
        action = action[positions]
        ids[positions[action < 0.8]] = self.mask_id
        randomised = positions[(action >= 0.8) & (action < 0.9)]
        ids[randomised] = rng.integers(self.first_word_id, self.vocab_size, size=len(randomised))
        if sample.itm_label == 0:
            positions, targets = np.zeros(0, np.int64), np.zeros(0, np.int64)
        extra = ~np.isin(sample.shown_relation_positions, positions)
        return (ids, np.concatenate([positions, sample.shown_relation_positions[extra]]),
                np.concatenate([targets, sample.shown_relation_ids[extra]]))

    def __call__(self, samples: list[Sample]) -> PretrainingBatch:
        if not samples:
            raise ValueError("samples: expected at least one sample, got none")
        ids, mlm_pos, mlm_tgt, feats, boxes, mrm_pos, mrm_feat, mrm_lab, itm = [], [], [], [], [], [], [], [], []
        ground_pos, ground_samples, ground_tgt = [], [], []
        text_offset = region_offset = 0
        for i, sample in enumerate(samples):
            rng = np.random.default_rng(list(sample.mask_seed))
            words, positions, targets = self._mask_words(sample, rng)
            ids.append(words)
            itm.append(sample.itm_label)
            mlm_pos.append(positions + text_offset)
            mlm_tgt.append(targets)
            ground_pos.append(sample.phrase_positions + text_offset)
            ground_samples.append(np.full(len(sample.phrase_positions), i, np.int64))
            ground_tgt.append(sample.phrase_regions)
            features = sample.features.copy()
            if sample.masking.startswith("random"):
                masked = np.flatnonzero(rng.random(len(features)) < self.region_mask_rate)
                mrm_feat.append(features[masked].copy())
                mrm_lab.append(sample.object_labels[masked])
                mrm_pos.append(masked + region_offset)
                features[masked] = 0.0
            feats.append(features)
            boxes.append(sample.boxes)
            text_offset += len(words)
            region_offset += len(features)
        layout = PackedLayout.from_lengths([len(w) for w in ids], [len(f) for f in feats])
        feature_dim = feats[0].shape[1]
        batch = PretrainingBatch(
            input_ids=torch.from_numpy(np.concatenate(ids)),
            region_features=torch.from_numpy(np.concatenate(feats)),
            region_boxes=box_features(torch.from_numpy(np.concatenate(boxes)), self.box_dim),
            layout=layout,
            mlm_positions=torch.from_numpy(np.concatenate(mlm_pos)).long(),
            mlm_targets=torch.from_numpy(np.concatenate(mlm_tgt)).long(),
            mrm_positions=torch.from_numpy(np.concatenate(mrm_pos) if mrm_pos else np.zeros(0, np.int64)).long(),
            mrm_feature_targets=torch.from_numpy(np.concatenate(mrm_feat) if mrm_feat
                                                 else np.zeros((0, feature_dim), np.float32)),
            mrm_label_targets=torch.from_numpy(np.concatenate(mrm_lab) if mrm_lab else np.zeros(0, np.int64)).long(),
            itm_labels=torch.tensor(itm, dtype=torch.int64),
            qa_labels=torch.tensor([s.qa_label for s in samples], dtype=torch.int64),
            grounding_positions=torch.from_numpy(np.concatenate(ground_pos)).long(),
            grounding_samples=torch.from_numpy(np.concatenate(ground_samples)).long(),
            grounding_targets=torch.from_numpy(np.concatenate(ground_tgt)).long(),
        )
        return batch if self.budget is None else pad_batch(batch, self.budget)
