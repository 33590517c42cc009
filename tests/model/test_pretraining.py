"""SemVLPForPretraining: every task's loss, task switches, empty targets, and that it learns."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from semvlp import SemVLPForPretraining
from semvlp.data import random_batch

TASKS = ("mlm", "mrm_feat", "mrm_label", "itm", "qa", "grounding", "region_position")


@pytest.mark.parametrize("mode", ["single", "two"])
def test_every_task_gives_a_finite_loss_and_the_total_is_their_weighted_sum(tiny_config, mode):
    model = SemVLPForPretraining(tiny_config)
    out = model(random_batch(tiny_config, 4, text_len=9, num_regions=5), mode=mode)
    assert set(out.losses) == set(TASKS)
    assert all(torch.isfinite(v) for v in out.losses.values())
    expected = sum(tiny_config.loss_weights[t] * out.losses[t] for t in TASKS)
    torch.testing.assert_close(out.loss, expected)


def test_losses_match_their_definitions(tiny_config):
    model = SemVLPForPretraining(tiny_config).eval()
    batch = random_batch(tiny_config, 5, seed=3, text_len=9, num_regions=5)
    out = model(batch, mode="two")
    assert out.mlm_logits.shape == (batch.mlm_positions.numel(), tiny_config.vocab_size)
    torch.testing.assert_close(out.losses["mlm"], F.cross_entropy(out.mlm_logits, batch.mlm_targets))
    torch.testing.assert_close(out.losses["itm"], F.cross_entropy(out.itm_logits, batch.itm_labels))
    answered = batch.qa_labels != -100
    torch.testing.assert_close(out.losses["qa"], F.cross_entropy(out.qa_logits[answered], batch.qa_labels[answered]))
    torch.testing.assert_close(out.losses["mrm_label"], F.cross_entropy(out.mrm_label_logits, batch.mrm_label_targets))


def test_grounding_scores_each_phrase_word_against_its_own_samples_regions(tiny_config):
    model = SemVLPForPretraining(tiny_config).eval()
    batch = random_batch(tiny_config, 5, seed=4, text_len=9, num_regions=5)
    # Samples with 1, 3 and 5 regions: each word's softmax runs over its own sample's regions only.
    layout = batch.layout.__class__.from_lengths(batch.layout.text_lengths(), [1, 3, 5, 2, 4])
    boxes = batch.region_boxes[:layout.total_regions]
    batch = dataclasses.replace(batch, layout=layout, region_features=batch.region_features[:layout.total_regions],
                                region_boxes=boxes, mrm_positions=batch.mrm_positions[:0],
                                mrm_feature_targets=batch.mrm_feature_targets[:0],
                                mrm_label_targets=batch.mrm_label_targets[:0])
    starts = layout.text_cu_seqlens[:-1].long()
    samples = torch.tensor([0, 1, 1, 2, 4, 4])
    positions = starts[samples] + torch.tensor([1, 1, 2, 1, 1, 2])
    targets = torch.tensor([0, 2, 1, 4, 3, 0])
    batch = dataclasses.replace(batch, grounding_positions=positions, grounding_samples=samples,
                                grounding_targets=targets)
    with torch.no_grad():
        out = model(batch, mode="two")
        hidden = model.semvlp(batch.input_ids, batch.region_features, batch.region_boxes, layout, mode="two")
    head = model.grounding_head
    counts = layout.region_counts()
    losses = []
    for word, sample, target in zip(positions.tolist(), samples.tolist(), targets.tolist()):
        first = layout.region_cu_seqlens[sample].item()
        regions = hidden[layout.region_index[first:first + counts[sample]]]
        scores = head.region(regions) @ head.word(hidden[layout.text_index[word]]) / tiny_config.hidden_size ** 0.5
        torch.testing.assert_close(out.grounding_logits[len(losses), :counts[sample]], scores)
        assert torch.isneginf(out.grounding_logits[len(losses), counts[sample]:]).all()
        losses.append(F.cross_entropy(scores[None], torch.tensor([target])))
    torch.testing.assert_close(out.losses["grounding"], torch.stack(losses).mean())


def test_switched_off_tasks_are_not_computed(tiny_config):
    config = dataclasses.replace(tiny_config, tasks={t: t in ("mlm", "itm") for t in TASKS})
    out = SemVLPForPretraining(config)(random_batch(config, 3, text_len=9, num_regions=4))
    assert set(out.losses) == {"mlm", "itm"}
    assert out.qa_logits is None and out.mrm_label_logits is None


def test_batch_without_masked_words_or_questions_has_zero_loss_not_nan(tiny_config):
    batch = random_batch(tiny_config, 3, text_len=9, num_regions=4)
    empty = torch.zeros(0, dtype=torch.int64)
    batch = dataclasses.replace(batch, mlm_positions=empty, mlm_targets=empty, qa_labels=torch.full((3,), -100),
                                grounding_positions=empty, grounding_samples=empty, grounding_targets=empty)
    model = SemVLPForPretraining(tiny_config)
    out = model(batch)
    assert out.losses["mlm"].item() == 0.0 and out.losses["qa"].item() == 0.0 and out.losses["grounding"].item() == 0.0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_alternating_modes_fits_a_fixed_batch(tiny_config):
    torch.manual_seed(0)
    model = SemVLPForPretraining(tiny_config)
    batch = random_batch(tiny_config, 4, seed=1, text_len=9, num_regions=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = {mode: model(batch, mode=mode).loss.item() for mode in ("single", "two")}
    for step in range(40):
        optimizer.zero_grad()
        model(batch, mode=("single", "two")[step % 2]).loss.backward()
        optimizer.step()
    for mode in ("single", "two"):
        assert model(batch, mode=mode).loss.item() < 0.5 * first[mode]


def test_unknown_mode_is_rejected(tiny_config):
    with pytest.raises(ValueError, match=r"mode: expected one of \('single', 'two'\), got 'joint'"):
        SemVLPForPretraining(tiny_config)(random_batch(tiny_config, 2, text_len=9, num_regions=4), mode="joint")


def test_inputs_that_disagree_with_the_layout_are_rejected(tiny_config):
    batch = random_batch(tiny_config, 2, text_len=9, num_regions=4)
    model = SemVLPForPretraining(tiny_config)
    with pytest.raises(ValueError, match=r"region_features: expected shape \(8, 12\)"):
        model(dataclasses.replace(batch, region_features=batch.region_features[:, :10]))
    with pytest.raises(ValueError, match=r"input_ids: expected shape"):
        model(dataclasses.replace(batch, input_ids=batch.input_ids[:-1]))


def test_random_batch_is_valid_and_seeded(tiny_config):
    a, b = (random_batch(tiny_config, 6, seed=4, num_regions=7) for _ in range(2))
    assert torch.equal(a.input_ids, b.input_ids)
    lengths = a.layout.text_lengths()
    assert all(10 <= n <= 20 for n in lengths)
    assert a.mlm_positions.numel() >= 1 and a.mrm_positions.numel() >= 1
    assert torch.all(a.region_features[a.mrm_positions] == 0)
    assert torch.all((a.qa_labels == -100) == (a.itm_labels == 0))
