"""ITM's per-token score (config.itm_token_score): the logits against a sample-by-sample computation in both modes,
with gradients; the downstream matching model scores as pretraining does; configs without the field."""

import dataclasses

import pytest
import torch

from semvlp import SemVLPConfig, SemVLPForPretraining
from semvlp.data import random_batch
from semvlp.model import SemVLPForImageTextMatching
from semvlp.model.finetuning import load_backbone
from semvlp.model.inputs import TokenBudget, pad_batch


def _expected_logits(model, batch, mode):
    """itm_head(pooled first token) plus, per sample, the column-wise highest token score over its own text."""
    hidden = model.semvlp(batch.input_ids, batch.region_features, batch.region_boxes, batch.layout,
                          token_type_ids=batch.token_type_ids, mode=mode)
    layout, rows = batch.layout, []
    cu = layout.text_cu_seqlens.tolist()
    for sample in range(layout.batch_size):
        text = hidden[layout.text_index[cu[sample]:cu[sample + 1]]]
        pooled = model.itm_head(model.pooler(text[:1]))[0]
        rows.append(pooled + model.itm_token_head.score(text).max(dim=0).values)
    return torch.stack(rows)


@pytest.mark.parametrize("mode", ["single", "two"])
def test_logits_and_gradients_match_a_sample_by_sample_computation(tiny_config, mode):
    torch.manual_seed(0)
    model = SemVLPForPretraining(tiny_config).eval()
    with torch.no_grad():  # a trained head; every "no match" token score below 0: a max counting a 0 start shows
        model.itm_token_head.score.weight.normal_(std=0.5)
        model.itm_token_head.score.bias.copy_(torch.tensor([-5.0, 5.0]))
    batch = random_batch(tiny_config, 7, seed=5, text_len=7, num_regions=3)
    assert min(batch.layout.text_lengths()) == 3  # a text of one word between [CLS] and [SEP]
    out = model(batch, mode=mode)
    grads = torch.autograd.grad(out.itm_logits.square().sum(), list(model.itm_token_head.parameters()))
    expected = _expected_logits(model, batch, mode)
    expected_grads = torch.autograd.grad(expected.square().sum(), list(model.itm_token_head.parameters()))
    torch.testing.assert_close(out.itm_logits, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        assert grad.abs().sum() > 0
        torch.testing.assert_close(grad, expected_grad)


def test_a_new_head_starts_at_zero_so_itm_starts_from_the_pooled_score(tiny_config):
    torch.manual_seed(0)
    for model in (SemVLPForPretraining(tiny_config), SemVLPForImageTextMatching(tiny_config)):
        assert not any(p.any() for p in model.itm_token_head.parameters())


def test_an_empty_sample_slot_scores_zero_and_leaves_the_others_alone(tiny_config):
    torch.manual_seed(0)
    model = SemVLPForPretraining(tiny_config).eval()
    batch = random_batch(tiny_config, 3, seed=0, text_len=9, num_regions=5)
    padded = pad_batch(batch, TokenBudget(tokens=60, max_samples=5, max_text_len=9, max_regions=5))
    lengths = padded.layout.text_lengths()
    assert 0 in lengths[3:]
    with torch.no_grad():
        model.itm_token_head.score.weight.normal_(std=0.5)
    hidden = model.semvlp(padded.input_ids, padded.region_features, padded.region_boxes, padded.layout)
    scores = model.itm_token_head(hidden, padded.layout)
    assert torch.equal(scores[[i for i, n in enumerate(lengths) if n == 0]], torch.zeros(lengths.count(0), 2))
    torch.testing.assert_close(model(padded).itm_logits[:3], model(batch).itm_logits)


@pytest.mark.parametrize("mode", ["single", "two"])
def test_the_matching_model_scores_as_pretraining_does(tiny_config, mode):
    torch.manual_seed(0)
    pretrained = SemVLPForPretraining(tiny_config).eval()
    matching = SemVLPForImageTextMatching(tiny_config).eval()
    with torch.no_grad():
        pretrained.itm_token_head.score.weight.normal_(std=0.5)
    assert load_backbone(matching, pretrained.state_dict()) == []
    assert torch.equal(matching.itm_token_head.score.weight, pretrained.itm_token_head.score.weight)
    batch = random_batch(tiny_config, 4, seed=1, text_len=9, num_regions=5)
    logits = matching(batch.input_ids, batch.region_features, batch.region_boxes, batch.layout, mode=mode)
    torch.testing.assert_close(logits, pretrained(batch, mode=mode).itm_logits)


def test_configs_without_the_field_keep_the_pooled_head_alone(tiny_config):
    saved = {k: v for k, v in tiny_config.to_dict().items() if k != "itm_token_score"}
    config = SemVLPConfig(**saved)
    assert config.itm_token_score is False
    for model in (SemVLPForPretraining(config), SemVLPForImageTextMatching(config)):
        assert model.itm_token_head is None
        assert not any(k.startswith("itm_token_head") for k in model.state_dict())
    torch.manual_seed(0)
    model = SemVLPForPretraining(config).eval()
    batch = random_batch(config, 3, seed=0, text_len=9, num_regions=5)
    hidden = model.semvlp(batch.input_ids, batch.region_features, batch.region_boxes, batch.layout)
    pooled = model.pooler(hidden.index_select(0, batch.layout.cls_index))
    torch.testing.assert_close(model(batch).itm_logits, model.itm_head(pooled))


@pytest.mark.parametrize("value", [1, "yes", None])
def test_itm_token_score_must_be_a_bool(tiny_config, value):
    with pytest.raises(ValueError, match="itm_token_score: expected true or false"):
        dataclasses.replace(tiny_config, itm_token_score=value)
