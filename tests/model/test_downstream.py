"""Downstream models: shapes, the paired layout, the soft-target loss and loading pretrained weights."""

import pytest
import torch

from semvlp import SemVLPForPretraining
from semvlp.data import random_batch
from semvlp.model import (SemVLPForImageTextMatching, SemVLPForPairedReasoning, SemVLPForQuestionAnswering,
                          load_backbone, soft_target_loss)


def _inputs(batch):
    return batch.input_ids, batch.region_features, batch.region_boxes, batch.layout


@pytest.mark.parametrize("mode", ["single", "two"])
def test_output_shapes(tiny_config, mode):
    batch = random_batch(tiny_config, 4, text_len=9, num_regions=4)
    assert SemVLPForQuestionAnswering(tiny_config, 11)(*_inputs(batch), mode=mode).shape == (4, 11)
    assert SemVLPForImageTextMatching(tiny_config)(*_inputs(batch), mode=mode).shape == (4, 2)
    assert SemVLPForPairedReasoning(tiny_config)(*_inputs(batch), mode=mode).shape == (2, 2)


def test_paired_reasoning_sees_both_images_of_its_statement(tiny_config):
    model = SemVLPForPairedReasoning(tiny_config).eval()
    batch = random_batch(tiny_config, 4, text_len=9, num_regions=4)
    changed = batch.region_features.clone()
    changed[batch.layout.region_cu_seqlens[3]:] += 1.0  # the right image of example 1
    a = model(*_inputs(batch))
    b = model(batch.input_ids, changed, batch.region_boxes, batch.layout)
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)
    assert not torch.allclose(a[1], b[1])


def test_paired_reasoning_needs_pairs(tiny_config):
    batch = random_batch(tiny_config, 3, text_len=9, num_regions=4)
    with pytest.raises(ValueError, match="layout: expected an even number of samples"):
        SemVLPForPairedReasoning(tiny_config)(*_inputs(batch))


def test_soft_target_loss_is_bce_times_answer_count():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 0.3]])
    expected = -sum(t * torch.log(torch.sigmoid(x)) + (1 - t) * torch.log(1 - torch.sigmoid(x))
                    for x, t in zip(logits[0], targets[0]))
    torch.testing.assert_close(soft_target_loss(logits, targets), expected)
    with pytest.raises(ValueError, match="targets: expected shape"):
        soft_target_loss(logits, targets[:, :2])


def test_load_backbone_copies_backbone_pooler_and_itm_head(tiny_config):
    pretrained = SemVLPForPretraining(tiny_config)
    matching = SemVLPForImageTextMatching(tiny_config)
    missing = load_backbone(matching, pretrained.state_dict())
    assert missing == []
    assert torch.equal(matching.itm_head.weight, pretrained.itm_head.weight)
    qa = SemVLPForQuestionAnswering(tiny_config, 7)
    missing = load_backbone(qa, pretrained.state_dict())
    assert missing and all(k.startswith("answer_head.") for k in missing)
    assert torch.equal(qa.semvlp.encoder.layers[1].cross_attention.query.weight,
                       pretrained.semvlp.encoder.layers[1].cross_attention.query.weight)
    with pytest.raises(ValueError, match="expected the 'semvlp.\\*' keys"):
        load_backbone(qa, {"pooler.dense.weight": torch.zeros(1)})
