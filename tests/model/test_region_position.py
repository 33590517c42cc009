"""The region_position task: position bins, its loss against a by-hand computation in both modes (words read the
configured layer's output), its config field, and configs saved before the task existed."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from semvlp import SemVLPConfig, SemVLPForPretraining
from semvlp.data import random_batch
from semvlp.model.heads import POSITION_BINS, position_bins


def test_position_bins_of_centres_at_the_edges_and_of_boxes_without_area():
    boxes = torch.tensor([[0.0, 0.0, 0.1, 0.1, 0.01],     # centre 0.05: bin 0 on both axes
                          [0.5, 0.0, 0.74, 0.2, 0.05],    # centre x 0.62: bin 4 (of 8); y 0.1: bin 0
                          [0.9, 0.9, 1.0, 1.0, 0.01],     # centre 0.95: the last bin
                          [0.98, 0.98, 1.04, 1.04, 0.0],  # centre past the edge (rounded boxes): the last bin
                          [1.0, 1.0, 1.0, 1.0, 0.0],      # no area: no target
                          [0.0, 0.0, 0.0, 0.0, 0.0]])     # padding
    expected = torch.tensor([[0, 0], [4, 0], [POSITION_BINS - 1] * 2, [POSITION_BINS - 1] * 2, [-100, -100],
                             [-100, -100]])
    assert torch.equal(position_bins(boxes), expected)


def _expected_loss(model, batch, mode, source):
    """The loss computed word by word: the states of the grounded words after layer `source` (from a hook on it)
    against the box centres of the regions they name."""
    kept = {}
    hook = model.semvlp.encoder.layers[source].register_forward_hook(lambda m, a, out: kept.setdefault("h", out))
    try:
        model.semvlp(batch.input_ids, batch.region_features, batch.region_boxes, batch.layout,
                     token_type_ids=batch.token_type_ids, mode=mode)
    finally:
        hook.remove()
    layout, boxes, starts = batch.layout, batch.region_boxes.tolist(), batch.layout.region_cu_seqlens.tolist()
    logits, bins = [], []
    for position, sample, target in zip(batch.grounding_positions.tolist(), batch.grounding_samples.tolist(),
                                        batch.grounding_targets.tolist()):
        if target != -100:
            box = boxes[starts[sample] + target]
            logits.append(model.position_head(kept["h"][layout.text_index[position]]))
            bins.append([min(int((box[a] + box[a + 2]) / 2 * POSITION_BINS), POSITION_BINS - 1) for a in (0, 1)])
    assert logits, "the batch grounds no word"
    logits, bins = torch.stack(logits), torch.tensor(bins)
    return sum(F.cross_entropy(logits[:, a * POSITION_BINS:(a + 1) * POSITION_BINS], bins[:, a]) for a in (0, 1))


@pytest.mark.parametrize("layer", [None, 0])
@pytest.mark.parametrize("mode", ["single", "two"])
def test_loss_matches_its_definition(tiny_config, mode, layer):
    config = dataclasses.replace(tiny_config, region_position_layer=layer)
    assert config.region_position_source == (tiny_config.num_hidden_layers - 2 if layer is None else layer)
    torch.manual_seed(0)
    model = SemVLPForPretraining(config).eval()
    batch = random_batch(config, 5, seed=4, text_len=9, num_regions=5)
    out = model(batch, mode=mode)
    expected = _expected_loss(model, batch, mode, config.region_position_source)
    torch.testing.assert_close(out.losses["region_position"], expected)


def test_a_config_saved_before_the_task_existed_loads_with_it_off():
    old = {"tasks": {t: True for t in ("mlm", "mrm_feat", "mrm_label", "itm", "qa", "grounding")},
           "loss_weights": {t: 2.0 for t in ("mlm", "mrm_feat", "mrm_label", "itm", "qa", "grounding")}}
    config = SemVLPConfig.from_dict(old)
    assert config.tasks["region_position"] is False and config.loss_weights["region_position"] == 1.0
    assert SemVLPConfig().tasks["region_position"] is False
    with pytest.raises(ValueError, match="tasks: expected exactly the keys"):
        SemVLPConfig.from_dict({"tasks": {**old["tasks"], "region_positions": True}})


@pytest.mark.parametrize("value", [3, -1, True, 1.0])
def test_region_position_layer_must_be_a_layer_index(tiny_config, value):
    with pytest.raises(ValueError, match=r"region_position_layer: expected null or a layer index in \[0, 3\)"):
        dataclasses.replace(tiny_config, region_position_layer=value)


def test_encoder_output_layer_must_be_a_layer_index(tiny_config):
    model = SemVLPForPretraining(tiny_config)
    batch = random_batch(tiny_config, 2, seed=0, text_len=5, num_regions=3)
    with pytest.raises(ValueError, match=r"output_layer: expected a layer index in \[0, 3\), got 3"):
        model.semvlp(batch.input_ids, batch.region_features, batch.region_boxes, batch.layout, output_layer=3)
