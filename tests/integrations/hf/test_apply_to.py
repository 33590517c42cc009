"""apply_to_bert / apply_to_visual_bert / apply_to_lxmert: the classes are patched before a model is built
(`from_pretrained` or the constructor), the built model holds the fused pieces and computes what transformers'
does, the flags choose the pieces, a second call does not stack, and revert restores transformers' classes."""

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForPreTraining, BertLMHeadModel
from transformers.models.bert import modeling_bert

import semvlp
from semvlp.integrations.hf import classes
from semvlp.integrations.hf.class_layer_norm import ClassLevelLayerNorm
from semvlp.nn import LayerNorm
from hf_models import FAMILIES, VOCAB, assert_outputs_close, bert

REVERT = {"bert": semvlp.revert_bert, "visual_bert": semvlp.revert_visual_bert, "lxmert": semvlp.revert_lxmert}
APPLY = {"bert": semvlp.apply_to_bert, "visual_bert": semvlp.apply_to_visual_bert, "lxmert": semvlp.apply_to_lxmert}


@pytest.fixture(autouse=True)
def reverted():
    """Every test leaves transformers' classes as it found them."""
    yield
    for revert in REVERT.values():
        revert()


def test_apply_to_bert_before_from_pretrained(tmp_path, op_calls):
    original, inputs = bert()
    original.eval()
    original.save_pretrained(tmp_path)

    handle = semvlp.apply_to_bert()
    patched = BertForPreTraining.from_pretrained(tmp_path).eval()
    layer = patched.bert.encoder.layer[0]
    assert type(layer.attention.self) is classes.SemvlpBertSelfAttention
    assert type(layer.attention.output) is classes.SemvlpBertSelfOutput
    assert type(layer.intermediate) is classes.SemvlpBertIntermediate
    assert type(layer.output) is classes.SemvlpBertOutput
    assert type(patched.bert.embeddings.LayerNorm) is ClassLevelLayerNorm
    assert patched.state_dict().keys() == original.state_dict().keys()

    assert_outputs_close(patched(**inputs), original(**inputs))
    assert op_calls["attention"] == 2 and op_calls["bias_gelu"] == 2 and op_calls["add_layer_norm"] == 4
    assert op_calls["layer_norm"] > 0

    handle.revert()
    rebuilt = BertForPreTraining.from_pretrained(tmp_path)
    assert type(rebuilt.bert.encoder.layer[0].attention.self) is modeling_bert.BertSelfAttention
    assert type(rebuilt.bert.embeddings.LayerNorm) is nn.LayerNorm
    assert modeling_bert.nn is nn


@pytest.mark.parametrize("family", ["visual_bert", "lxmert"])
def test_apply_to_other_families_matches_transformers(family, op_calls):
    original, inputs = FAMILIES[family]()
    original.eval()
    APPLY[family]()
    patched = type(original)(original.config).eval()
    patched.load_state_dict(original.state_dict())
    assert any(isinstance(m, LayerNorm) for m in patched.modules())
    assert_outputs_close(patched(**inputs), original(**inputs))
    assert op_calls["attention"] > 0 and op_calls["add_layer_norm"] > 0


def test_flags_choose_the_pieces():
    semvlp.apply_to_bert(attention=False, layer_norm=False)
    model, _ = bert()
    layer = model.bert.encoder.layer[0]
    assert type(layer.attention.self) is modeling_bert.BertSelfAttention
    assert type(layer.attention.output) is modeling_bert.BertSelfOutput
    assert type(layer.intermediate) is classes.SemvlpBertIntermediate
    assert type(model.bert.embeddings.LayerNorm) is nn.LayerNorm


def test_second_call_replaces_the_first_and_revert_restores_transformers():
    first = semvlp.apply_to_bert()
    semvlp.apply_to_bert(feed_forward=False)
    assert first.reverted
    assert modeling_bert.BertIntermediate is not classes.SemvlpBertIntermediate
    assert modeling_bert.BertSelfAttention is classes.SemvlpBertSelfAttention
    semvlp.revert_bert()
    assert modeling_bert.BertSelfAttention is classes.SemvlpBertSelfAttention.__bases__[1]
    assert modeling_bert.nn is nn
    semvlp.revert_bert()  # nothing active: does nothing


def test_backend_reaches_the_built_pieces_and_revert_clears_it():
    semvlp.apply_to_bert(backend="reference")
    model, _ = bert()
    assert model.bert.encoder.layer[0].attention.self._semvlp_backend == "reference"
    assert model.bert.embeddings.LayerNorm.backend == "reference"
    semvlp.revert_bert()
    assert classes.SemvlpBertSelfAttention._semvlp_backend == "auto"


def test_decoder_built_after_apply_runs_the_causal_original(op_calls):
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, is_decoder=True, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    original = BertLMHeadModel(config).eval()
    semvlp.apply_to_bert()
    patched = BertLMHeadModel(config).eval()
    patched.load_state_dict(original.state_dict())
    ids = torch.randint(4, VOCAB, (2, 9))
    assert_outputs_close(patched(input_ids=ids), original(input_ids=ids))
    assert op_calls["attention"] == 0  # causal self-attention is not served by the fused piece


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="attention"):
        semvlp.apply_to_bert(attention="yes")
    with pytest.raises(ValueError, match="backend"):
        semvlp.apply_to_bert(backend=3)
    with pytest.raises(ValueError, match="family"):
        semvlp.integrations.hf.apply.revert("gpt2")
