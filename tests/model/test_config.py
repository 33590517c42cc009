import json

import pytest

from semvlp import SemVLPConfig
from semvlp.model.config import PRETRAINING_TASKS


def test_defaults_are_bert_base_with_the_plug_in_the_top_half():
    config = SemVLPConfig()
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (30522, 768, 12)
    assert (config.num_attention_heads, config.intermediate_size, config.layer_norm_eps) == (12, 3072, 1e-12)
    assert config.cross_layers == [6, 7, 8, 9, 10, 11]
    assert set(config.loss_weights.values()) == {1.0}  # each loss is a mean over its own targets


def test_json_round_trip(tmp_path):
    config = SemVLPConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=3, cross_layers=[0, 2],
                          tasks={"mlm": True, "mrm_feat": False, "mrm_label": True, "itm": True, "qa": False,
                                 "grounding": True})
    config.save(tmp_path / "config.json")
    assert SemVLPConfig.load(tmp_path / "config.json") == config
    assert json.loads((tmp_path / "config.json").read_text())["cross_layers"] == [0, 2]


@pytest.mark.parametrize("fields,message", [
    (dict(hidden_size=100, num_attention_heads=12), r"hidden_size: 100 is not divisible by num_attention_heads \(12\)"),
    (dict(num_hidden_layers=2, cross_layers=[2]), r"cross_layers: expected distinct layer indices in \[0, 2\), got \[2\]"),
    (dict(cross_layers=[1, 1]), r"cross_layers: expected distinct layer indices"),
    (dict(hidden_act="relu"), r"hidden_act: expected one of"),
    (dict(vocab_size=0), r"vocab_size: expected a positive int, got 0"),
    (dict(hidden_dropout_prob=1.5), r"hidden_dropout_prob: expected a probability in \[0, 1\)"),
    (dict(tasks={"mlm": True}), r"tasks: expected exactly the keys"),
    (dict(tasks={t: False for t in PRETRAINING_TASKS}), r"tasks: expected at least one"),
])
def test_invalid_fields_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        SemVLPConfig(**fields)


def test_unknown_fields_in_json_are_rejected(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4, "colour": "red"}))
    with pytest.raises(ValueError, match=r"unknown fields \['colour'\]"):
        SemVLPConfig.load(tmp_path / "c.json")


def test_from_hf_bert_config_takes_sizes_and_overrides():
    hf = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
          "vocab_size": 30522, "model_type": "bert", "architectures": ["BertModel"], "position_embedding_type": "absolute"}
    config = SemVLPConfig.from_hf_bert_config(hf, visual_feat_dim=64)
    assert (config.hidden_size, config.num_hidden_layers, config.visual_feat_dim) == (384, 6, 64)
    assert config.cross_layers == [3, 4, 5]
    with pytest.raises(ValueError, match="position_embedding_type: only 'absolute'"):
        SemVLPConfig.from_hf_bert_config(dict(hf, position_embedding_type="relative_key"))
