"""SemVLPConfig checks the type and range of every field, and its loader names the file it could not read."""

import json
import math
from pathlib import Path

import pytest

from semvlp import SemVLPConfig
from semvlp.model.config import OPTIONAL_TASKS, PRETRAINING_TASKS, config_differences

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=2)


def _tasks(**changes):
    return {**{t: t not in OPTIONAL_TASKS for t in PRETRAINING_TASKS}, **changes}  # the defaults, then changes


def _weights(**changes):
    return {**{t: 1.0 for t in PRETRAINING_TASKS}, **changes}


@pytest.mark.parametrize("fields,message", [
    (dict(num_hidden_layers=True), r"num_hidden_layers: expected a positive int, got True \(bool\)"),
    (dict(vocab_size=12.0), r"vocab_size: expected a positive int, got 12.0 \(float\)"),
    (dict(hidden_size="64"), r"hidden_size: expected a positive int, got '64' \(str\)"),
    (dict(max_regions=-3), r"max_regions: expected a positive int, got -3"),
    (dict(visual_feat_dim=None), r"visual_feat_dim: expected a positive int, got None"),
    (dict(hidden_dropout_prob="0.1"), r"hidden_dropout_prob: expected a finite number, got '0.1' \(str\)"),
    (dict(attention_probs_dropout_prob=False), r"attention_probs_dropout_prob: expected a finite number, got False"),
    (dict(hidden_dropout_prob=math.nan), r"hidden_dropout_prob: expected a finite number, got nan"),
    (dict(hidden_dropout_prob=1), r"hidden_dropout_prob: expected a probability in \[0, 1\), got 1"),
    (dict(layer_norm_eps=0.0), r"layer_norm_eps: expected a positive number, got 0.0"),
    (dict(layer_norm_eps=math.inf), r"layer_norm_eps: expected a finite number, got inf"),
    (dict(initializer_range=-0.02), r"initializer_range: expected a positive number, got -0.02"),
    (dict(hidden_act=None), r"hidden_act: expected one of \['gelu', 'gelu_new', 'gelu_pytorch_tanh'\], got None"),
    (dict(pad_token_id=30522), r"pad_token_id: expected a token id in \[0, vocab_size=30522\), got 30522"),
    (dict(pad_token_id=False), r"pad_token_id: expected a token id .*got False \(bool\)"),
    (dict(cross_layers=[True]), r"cross_layers: expected distinct layer indices in \[0, 2\), got \[True\]"),
    (dict(cross_layers="01"), r"cross_layers: expected a list of layer indices, got '01' \(str\)"),
    (dict(cross_layers=[-1]), r"cross_layers: expected distinct layer indices in \[0, 2\), got \[-1\]"),
    (dict(tasks=_tasks(itm="false")), r"tasks.itm: expected true or false, got 'false' \(str\)"),
    (dict(tasks=_tasks(qa=1)), r"tasks.qa: expected true or false, got 1 \(int\)"),
    (dict(tasks=list(PRETRAINING_TASKS)), r"tasks: expected an object with the keys \['mlm', .*got \['mlm'"),
    (dict(loss_weights=_weights(itm=-1.0)), r"loss_weights.itm: expected a finite number >= 0, got -1.0"),
    (dict(loss_weights=_weights(mlm=math.inf)), r"loss_weights.mlm: expected a finite number >= 0, got inf"),
    (dict(loss_weights=_weights(qa=math.nan)), r"loss_weights.qa: expected a finite number >= 0, got nan"),
    (dict(loss_weights=_weights(mrm_feat=True)), r"loss_weights.mrm_feat: expected a finite number >= 0, got True"),
    (dict(loss_weights=_weights(grounding="1")), r"loss_weights.grounding: expected a finite number >= 0, got '1'"),
    (dict(loss_weights={"mlm": 1.0}), r"loss_weights: expected exactly the keys"),
    (dict(backend=3), r"backend: expected \"auto\" or a backend name, got 3 \(int\)"),
])
def test_each_bad_field_is_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        SemVLPConfig(**{**SMALL, **fields})


def test_whole_numbers_are_taken_where_reals_are_expected_and_stored_as_floats(tmp_path):
    config = SemVLPConfig(**SMALL, hidden_dropout_prob=0, layer_norm_eps=1, loss_weights=_weights(itm=5),
                          cross_layers=(0, 1))
    assert type(config.hidden_dropout_prob) is float and type(config.layer_norm_eps) is float
    assert type(config.loss_weights["itm"]) is float and config.loss_weights["itm"] == 5.0
    assert config.cross_layers == [0, 1]
    config.save(tmp_path / "c.json")
    assert SemVLPConfig.load(tmp_path / "c.json") == config
    assert SemVLPConfig(**SMALL, loss_weights=_weights(mlm=0)).loss_weights["mlm"] == 0.0  # a weight may be 0


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "model").glob("*.json")), ids=lambda p: p.stem)
def test_the_shipped_model_configs_pass(path):
    SemVLPConfig.load(path)


def _write(tmp_path, content) -> Path:
    path = tmp_path / "model.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("content,message", [
    ("[1, 2]", r"model.json holds a JSON list, expected an object of fields"),
    ("null", r"model.json holds a JSON NoneType, expected an object of fields"),
    ('"tiny"', r"model.json holds a JSON str, expected an object of fields"),
    ('{"hidden_size": 64,', r"model.json is not valid JSON"),
    ("", r"model.json is not valid JSON"),
    (b'{"hidden_act": "gel\xff"}', r"model.json is not UTF-8 text"),
    ('{"num_hidden_layers": true}', r"model.json: num_hidden_layers: expected a positive int, got True"),
    (json.dumps({"tasks": _tasks(mlm="false")}), r"model.json: tasks.mlm: expected true or false, got 'false'"),
    ('{"tasks": {"mlm": false}}', r"model.json: tasks: expected exactly the keys"),
    ('{"colour": "red"}', r"model.json: SemVLPConfig: unknown fields \['colour'\]"),
])
def test_load_names_the_file_it_cannot_read(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        SemVLPConfig.load(_write(tmp_path, content))


def test_load_names_a_missing_file_and_a_directory(tmp_path):
    with pytest.raises(ValueError, match=r"config: .*absent.json does not exist"):
        SemVLPConfig.load(tmp_path / "absent.json")
    with pytest.raises(ValueError, match=rf"config: {tmp_path} is a directory, expected a JSON file"):
        SemVLPConfig.load(tmp_path)


def test_from_dict_refuses_a_non_object():
    with pytest.raises(ValueError, match="SemVLPConfig: expected an object of fields, got list"):
        SemVLPConfig.from_dict([("hidden_size", 64)])


def test_a_hugging_face_null_means_our_default():
    config = SemVLPConfig.from_hf_bert_config({"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                                               "pad_token_id": None})
    assert config.pad_token_id == 0


def test_config_differences_name_each_changed_field_and_task():
    saved = SemVLPConfig(**SMALL).to_dict()
    current = SemVLPConfig(**{**SMALL, "num_hidden_layers": 4}, loss_weights=_weights(itm=5.0),
                           tasks=_tasks(qa=False)).to_dict()
    assert config_differences(saved, current) == [
        "cross_layers: [1] -> [2, 3]", "loss_weights.itm: 1.0 -> 5.0", "num_hidden_layers: 2 -> 4",
        "tasks.qa: True -> False"]
    assert config_differences(saved, json.loads(json.dumps(saved))) == []
