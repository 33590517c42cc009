"""attn_implementation="semvlp": registered in transformers' AttentionInterface on import, BERT with padded
batches computes what eager does through semvlp.ops.attention with a 2D key-padding mask, dropout is applied
in training only, attention weights are still returned when asked for, and causal or custom masks are served."""

import copy

import pytest
import torch
from transformers import AttentionInterface, BertConfig, BertForPreTraining, BertLMHeadModel

import semvlp  # noqa: F401  (registers "semvlp")
from semvlp import ops
from semvlp.integrations.hf.attention_interface import semvlp_attention_forward
from hf_models import VOCAB, bert, output_tensors
from tolerances import PATCH_GRAD_ATOL, PATCH_OUTPUT_ATOL, max_error


@pytest.fixture
def attention_calls(monkeypatch):
    """The keyword arguments of every semvlp.ops.attention call."""
    calls = []
    original = ops.attention

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(ops, "attention", recorded)
    return calls


def _pair(**config):
    eager, inputs = bert(attn_implementation="eager", **config)
    ours = copy.deepcopy(eager)
    ours.set_attn_implementation("semvlp")
    return eager, ours, inputs


def _assert_close(actual: dict, expected: dict, atol: float = PATCH_OUTPUT_ATOL):
    assert actual.keys() == expected.keys() and expected
    for name in expected:
        err = max_error(actual[name], expected[name])
        assert err <= atol, f"{name}: max error {err:.2e}"


def test_registered_under_semvlp():
    assert AttentionInterface()["semvlp"] is semvlp_attention_forward


def test_padded_bert_matches_eager_outputs_and_gradients(attention_calls):
    eager, ours, inputs = _pair()
    ours.train()
    eager.train()
    expected, actual = eager(**inputs), ours(**inputs)
    _assert_close(output_tensors(actual), output_tensors(expected))
    assert len(attention_calls) == 2
    mask = attention_calls[0]["attention_mask"]
    assert mask.dtype == torch.bool and tuple(mask.shape) == tuple(inputs["attention_mask"].shape)
    assert torch.equal(mask, inputs["attention_mask"].bool())

    expected.loss.backward()
    actual.loss.backward()
    grads = {name: p.grad for name, p in eager.named_parameters()}
    for name, p in ours.named_parameters():
        assert (p.grad is None) == (grads[name] is None), name
        if p.grad is not None:
            assert max_error(p.grad, grads[name]) <= PATCH_GRAD_ATOL, name


def test_from_pretrained_with_attn_implementation_semvlp(tmp_path, attention_calls):
    eager, inputs = bert(attn_implementation="eager")
    eager.eval().save_pretrained(tmp_path)
    ours = BertForPreTraining.from_pretrained(tmp_path, attn_implementation="semvlp").eval()
    assert ours.config._attn_implementation == "semvlp"
    _assert_close(output_tensors(ours(**inputs)), output_tensors(eager(**inputs)))
    assert len(attention_calls) == 2


def test_dropout_applied_in_training_only(attention_calls):
    _, ours, inputs = _pair()
    for layer in ours.bert.encoder.layer:  # attention dropout only: any change below comes from it
        layer.attention.self.dropout.p = 0.5
    inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    ours.eval()
    first, second = ours(**inputs).prediction_logits, ours(**inputs).prediction_logits
    assert torch.equal(first, second)
    assert all(call["dropout_p"] == 0.0 for call in attention_calls)
    attention_calls.clear()
    ours.train()
    torch.manual_seed(1)
    dropped = ours(**inputs).prediction_logits
    assert all(call["dropout_p"] == 0.5 for call in attention_calls) and len(attention_calls) == 2
    assert not torch.allclose(dropped, first)


def test_attention_weights_returned_when_asked():
    eager, ours, inputs = _pair()
    eager.eval()
    ours.eval()
    expected = eager(**inputs, output_attentions=True)
    actual = ours(**inputs, output_attentions=True)
    assert len(actual.attentions) == 2
    _assert_close(output_tensors(actual), output_tensors(expected))


def test_causal_decoder_with_padding_matches_eager(attention_calls):
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, is_decoder=True, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, attn_implementation="eager")
    torch.manual_seed(0)
    eager = BertLMHeadModel(config).eval()
    ours = copy.deepcopy(eager)
    ours.set_attn_implementation("semvlp")
    ids = torch.randint(4, VOCAB, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    expected = eager(input_ids=ids, attention_mask=mask, use_cache=False).logits
    actual = ours(input_ids=ids, attention_mask=mask, use_cache=False).logits
    # Rows of padded queries see no key in the causal+padding mask; eager spreads them over every key, so only
    # the real positions are compared.
    real = mask.bool()
    assert max_error(actual[real], expected[real]) <= PATCH_OUTPUT_ATOL
    assert attention_calls and all(call["causal"] for call in attention_calls)


def test_function_serves_grouped_heads_and_falls_back_on_4d_masks(attention_calls):
    module = torch.nn.Module()
    module.is_causal = False
    module.eval()
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=g)
    k, v = torch.randn(2, 2, 7, 8, generator=g), torch.randn(2, 2, 7, 8, generator=g)
    keep = torch.ones(2, 7, dtype=torch.bool)
    keep[0, 4:] = False
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q @ kk.transpose(2, 3)) * 8 ** -0.5
    expected = scores.masked_fill(~keep[:, None, None, :], float("-inf")).softmax(-1) @ vv
    out, weights = semvlp_attention_forward(module, q, k, v, keep, scaling=8 ** -0.5)
    assert weights is None and len(attention_calls) == 1
    assert max_error(out, expected.transpose(1, 2)) <= PATCH_OUTPUT_ATOL

    out4d, _ = semvlp_attention_forward(module, q, kk, vv, keep[:, None, None, :].expand(2, 1, 5, 7),
                                        scaling=8 ** -0.5)
    assert len(attention_calls) == 1  # transformers' sdpa served the 4D mask
    assert max_error(out4d, expected.transpose(1, 2)) <= PATCH_OUTPUT_ATOL
