"""random_batch: a valid packed pretraining batch of random content, for tests, demos and benchmarks."""

from __future__ import annotations

import torch

from ..model.config import SemVLPConfig
from ..model.inputs import PackedLayout, PretrainingBatch, TokenBudget, pad_batch
from .boxes import box_features

MASK_RATE = 0.15
# Token ids 0-3 stand for [PAD], [CLS], [SEP], [MASK] in a random batch; words are drawn above them.
_PAD, _CLS, _SEP, _MASK, _FIRST_WORD = 0, 1, 2, 3, 4


def _pick_masked(n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of about 15% of n positions, at least one when n > 0."""
    chosen = torch.rand(n, generator=generator) < MASK_RATE
    if n and not chosen.any():
        chosen[torch.randint(n, (1,), generator=generator)] = True
    return chosen.nonzero().flatten()


def random_batch(config: SemVLPConfig, batch_size: int, seed: int = 0, text_len: int = 20,
                 num_regions: int = 36, token_budget: int | None = None) -> PretrainingBatch:
    """A packed batch with every pretraining target, on the CPU.

    Text lengths vary uniformly in [text_len // 2, text_len] ([CLS] and [SEP] included); every sample has
    `num_regions` regions. About 15% of words and regions are masked (at least one of each), half the
    samples are image-text mismatches, and the matching ones carry a QA label and ground about 15% of their
    words in one of their regions.

    `token_budget` N: a static-shape batch (see `semvlp.model.inputs.TokenBudget`): the first of the `batch_size`
    drawn samples that fit in N text tokens and regions, padded to N tokens and `batch_size` sample slots.
    """
    if config.vocab_size <= _FIRST_WORD:
        raise ValueError(f"config.vocab_size: expected more than {_FIRST_WORD} tokens, got {config.vocab_size}")
    if not 3 <= text_len <= config.max_position_embeddings:
        raise ValueError(f"text_len: expected 3..{config.max_position_embeddings}, got {text_len}")
    if not 1 <= num_regions <= config.max_regions:
        raise ValueError(f"num_regions: expected 1..{config.max_regions}, got {num_regions}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size}")
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(text_len // 2, 3), text_len + 1, (batch_size,), generator=g).tolist()
    budget = None
    if token_budget is not None:
        budget = TokenBudget(token_budget, batch_size, text_len, num_regions)
        while not budget.fits(lengths, [num_regions] * len(lengths)):
            lengths.pop()
        batch_size = len(lengths)
    layout = PackedLayout.from_lengths(lengths, [num_regions] * batch_size)

    words = [torch.randint(_FIRST_WORD, config.vocab_size, (n - 2,), generator=g) for n in lengths]
    input_ids = torch.cat([torch.cat([torch.tensor([_CLS]), w, torch.tensor([_SEP])]) for w in words])
    is_word = torch.ones_like(input_ids, dtype=torch.bool)
    is_word[layout.text_cu_seqlens[:-1].long()] = False
    is_word[layout.text_cu_seqlens[1:].long() - 1] = False
    word_positions = is_word.nonzero().flatten()
    mlm_positions = word_positions[_pick_masked(word_positions.numel(), g)]
    mlm_targets = input_ids[mlm_positions].clone()
    # BERT's 80/10/10: [MASK], a random word, or the word itself.
    action = torch.rand(mlm_positions.numel(), generator=g)
    replaced = input_ids.clone()
    replaced[mlm_positions[action < 0.8]] = _MASK
    random_words = mlm_positions[(action >= 0.8) & (action < 0.9)]
    replaced[random_words] = torch.randint(_FIRST_WORD, config.vocab_size, (random_words.numel(),), generator=g)

    total_regions = layout.total_regions
    features = torch.rand(total_regions, config.visual_feat_dim, generator=g)
    corner = torch.rand(total_regions, 2, generator=g) * 0.7
    size = torch.rand(total_regions, 2, generator=g) * 0.3 + 0.05
    boxes = box_features(torch.cat([corner, corner + size], dim=1), config.visual_pos_dim)
    mrm_positions = _pick_masked(total_regions, g)
    mrm_feature_targets = features[mrm_positions].clone()
    features[mrm_positions] = 0.0

    itm_labels = torch.randint(0, 2, (batch_size,), generator=g)
    qa_labels = torch.randint(0, config.num_qa_labels, (batch_size,), generator=g)
    qa_labels[itm_labels == 0] = -100
    # Phrase grounding on about 15% of the matching samples' words, each naming one of its sample's regions.
    word_samples = torch.searchsorted(layout.text_cu_seqlens[1:].long(), word_positions, right=True)
    matching = (itm_labels[word_samples] == 1).nonzero().flatten()
    picked = matching[_pick_masked(matching.numel(), g)]
    grounding_positions, grounding_samples = word_positions[picked], word_samples[picked]
    batch = PretrainingBatch(
        input_ids=replaced,
        region_features=features,
        region_boxes=boxes,
        layout=layout,
        mlm_positions=mlm_positions,
        mlm_targets=mlm_targets,
        mrm_positions=mrm_positions,
        mrm_feature_targets=mrm_feature_targets,
        mrm_label_targets=torch.randint(0, config.num_region_labels, (mrm_positions.numel(),), generator=g),
        itm_labels=itm_labels,
        qa_labels=qa_labels,
        grounding_positions=grounding_positions,
        grounding_samples=grounding_samples,
        grounding_targets=torch.randint(0, num_regions, (grounding_positions.numel(),), generator=g),
    )
    return batch if budget is None else pad_batch(batch, budget)
