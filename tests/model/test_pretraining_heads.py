"""Each pretraining head reads the right rows of the encoder output, and each loss is computed from targets
placed at known (sample, offset) positions, independently of the model's own gathering.

The encoder's packed output is in joint order (sample 0's text, its regions, sample 1's text, ...), so the row
of a sample's text token or region is worked out here from the lengths alone.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from semvlp import SemVLPForPretraining
from semvlp.data import random_batch

TEXT_LENGTHS = [6, 9, 5, 8]
REGION_COUNTS = [3, 5, 1, 4]
MLM = [(0, 2, 11), (1, 7, 40), (2, 1, 23), (3, 3, 5), (3, 6, 63)]      # (sample, text offset, target token)
MRM = [(0, 1, 4), (1, 4, -100), (2, 0, 6), (3, 2, 0)]                  # (sample, region, object label)
ITM = [1, 0, 1, 0]
QA = [3, -100, 0, -100]


def _joint_start(sample: int) -> int:
    return sum(TEXT_LENGTHS[s] + REGION_COUNTS[s] for s in range(sample))


def _text_row(sample: int, offset: int) -> int:
    return _joint_start(sample) + offset


def _region_row(sample: int, region: int) -> int:
    return _joint_start(sample) + TEXT_LENGTHS[sample] + region


def _known_batch(config):
    """A batch with the lengths above and targets at the listed positions (packed-text / packed-region indices)."""
    base = random_batch(config, len(TEXT_LENGTHS), seed=7, text_len=9, num_regions=5)
    layout = base.layout.__class__.from_lengths(TEXT_LENGTHS, REGION_COUNTS)
    g = torch.Generator().manual_seed(8)
    total_text, total_regions = sum(TEXT_LENGTHS), sum(REGION_COUNTS)
    text_start = [sum(TEXT_LENGTHS[:s]) for s in range(len(TEXT_LENGTHS))]
    region_start = [sum(REGION_COUNTS[:s]) for s in range(len(REGION_COUNTS))]
    return dataclasses.replace(
        base, layout=layout,
        input_ids=torch.randint(5, config.vocab_size, (total_text,), generator=g),
        region_features=torch.rand(total_regions, config.visual_feat_dim, generator=g),
        region_boxes=torch.rand(total_regions, config.visual_pos_dim, generator=g),
        mlm_positions=torch.tensor([text_start[s] + o for s, o, _ in MLM]),
        mlm_targets=torch.tensor([t for _, _, t in MLM]),
        mrm_positions=torch.tensor([region_start[s] + r for s, r, _ in MRM]),
        mrm_feature_targets=torch.randn(len(MRM), config.visual_feat_dim, generator=g) * 2,
        mrm_label_targets=torch.tensor([label for _, _, label in MRM]),
        itm_labels=torch.tensor(ITM), qa_labels=torch.tensor(QA),
        grounding_positions=torch.zeros(0, dtype=torch.int64), grounding_samples=torch.zeros(0, dtype=torch.int64),
        grounding_targets=torch.zeros(0, dtype=torch.int64), token_type_ids=None)


@pytest.mark.parametrize("mode", ["single", "two"])
def test_losses_from_known_positions_and_labels(tiny_config, mode):
    config = dataclasses.replace(tiny_config, tasks={**tiny_config.tasks, "grounding": False})
    torch.manual_seed(0)
    model = SemVLPForPretraining(config).eval()
    batch = _known_batch(config)
    with torch.no_grad():
        out = model(batch, mode=mode)
        hidden = model.semvlp(batch.input_ids, batch.region_features, batch.region_boxes, batch.layout, mode=mode)

    words = hidden[[_text_row(s, o) for s, o, _ in MLM]]
    mlm_logits = model.mlm_head(words, model.semvlp.text_embeddings.word_embeddings.weight)
    mlm = torch.stack([-F.log_softmax(row, -1)[t] for row, (_, _, t) in zip(mlm_logits, MLM)]).mean()
    torch.testing.assert_close(out.losses["mlm"], mlm)

    regions = model.region_head.transform(hidden[[_region_row(s, r) for s, r, _ in MRM]])
    features, labels = model.region_head.feature(regions), model.region_head.label(regions)
    diff = (features - batch.mrm_feature_targets).abs()
    smooth_l1 = torch.where(diff < 1, 0.5 * diff * diff, diff - 0.5)
    torch.testing.assert_close(out.losses["mrm_feat"], smooth_l1.mean())
    known = [(row, label) for row, (_, _, label) in zip(labels, MRM) if label != -100]
    torch.testing.assert_close(out.losses["mrm_label"],
                               torch.stack([-F.log_softmax(row, -1)[label] for row, label in known]).mean())

    pooled = torch.tanh(model.pooler.dense(hidden[[_text_row(s, 0) for s in range(len(TEXT_LENGTHS))]]))
    itm_logits = model.itm_head(pooled)
    itm = torch.stack([-F.log_softmax(row, -1)[label] for row, label in zip(itm_logits, ITM)]).mean()
    torch.testing.assert_close(out.losses["itm"], itm)
    qa_logits = model.qa_head(pooled)
    qa = torch.stack([-F.log_softmax(row, -1)[label] for row, label in zip(qa_logits, QA) if label != -100]).mean()
    torch.testing.assert_close(out.losses["qa"], qa)


def test_region_feature_loss_is_zero_only_at_its_targets(tiny_config):
    """The regression pulls the predicted features to `mrm_feature_targets` (not the zeroed inputs)."""
    config = dataclasses.replace(tiny_config, tasks={t: t == "mrm_feat" for t in tiny_config.tasks})
    torch.manual_seed(0)
    model = SemVLPForPretraining(config).eval()
    batch = _known_batch(config)
    with torch.no_grad():
        hidden = model.semvlp(batch.input_ids, batch.region_features, batch.region_boxes, batch.layout)
        predicted = model.region_head(hidden[[_region_row(s, r) for s, r, _ in MRM]])[0]
        assert model(dataclasses.replace(batch, mrm_feature_targets=predicted)).losses["mrm_feat"].item() < 1e-10
        shifted = model(dataclasses.replace(batch, mrm_feature_targets=predicted + 3.0)).losses["mrm_feat"]
    torch.testing.assert_close(shifted, torch.tensor(2.5))  # smooth L1 of a difference of 3 is 3 - 0.5
