"""patch_hf_model on small random BERT, VisualBERT and LXMERT pretraining models: same outputs and gradients as
the original on padded batches, the fused path really runs, same state_dict, undo, training, and the
configurations it must leave alone."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertLMHeadModel

import semvlp
from semvlp.nn import LayerNorm
from hf_models import FAMILIES, assert_outputs_close, bert, output_tensors
from tolerances import PATCH_GRAD_ATOL, max_error

# Fused calls per forward: attention modules (LXMERT: l + r + 4 per cross layer), and add_layer_norm calls
# (two per layer: attention output and feed-forward output; LXMERT's cross layer has six).
EXPECTED_CALLS = {"bert": {"attention": 2, "bias_gelu": 2, "add_layer_norm": 4},
                  "visual_bert": {"attention": 2, "bias_gelu": 2, "add_layer_norm": 4},
                  "lxmert": {"attention": 2 + 1 + 2 * 4, "bias_gelu": 2 + 1 + 2 * 2, "add_layer_norm": 6 + 2 * 6}}


def _assert_grads_close(patched: nn.Module, original: nn.Module):
    grads = dict(original.named_parameters())
    checked = 0
    for name, p in patched.named_parameters():
        ref = grads[name].grad
        assert (p.grad is None) == (ref is None), name
        if ref is not None:
            err = max_error(p.grad, ref)
            assert err <= PATCH_GRAD_ATOL, f"grad of {name}: max error {err:.2e}"
            checked += 1
    assert checked > 10


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_patched_outputs_and_gradients_match(family, training, op_calls):
    original, inputs = FAMILIES[family]()
    original.train(training)
    patched = copy.deepcopy(original)
    record = semvlp.patch_hf_model(patched)
    assert not record.skipped, record.summary()

    expected = original(**inputs)
    for name in op_calls:
        op_calls[name] = 0
    actual = patched(**inputs)
    for name, count in EXPECTED_CALLS[family].items():
        assert op_calls[name] == count, f"{name}: {op_calls[name]} calls, expected {count}"
    assert op_calls["layer_norm"] > 0
    assert_outputs_close(actual, expected)

    expected.loss.backward()
    actual.loss.backward()
    _assert_grads_close(patched, original)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_bert_masks_of_each_attention_implementation(implementation, op_calls):
    original, inputs = bert(attn_implementation=implementation)
    original.eval()
    patched = copy.deepcopy(original)
    semvlp.patch_hf_model(patched)
    assert_outputs_close(patched(**inputs), original(**inputs))
    assert op_calls["attention"] == 2


def test_custom_4d_mask_runs_the_original_attention(op_calls):
    original, inputs = bert()
    original.eval()
    patched = copy.deepcopy(original)
    semvlp.patch_hf_model(patched)
    # A per-query mask (each token sees itself and the first two tokens) is not key padding.
    seqlen = inputs["input_ids"].shape[1]
    allowed = torch.eye(seqlen, dtype=torch.bool)
    allowed[:, :2] = True
    inputs["attention_mask"] = allowed.expand(inputs["input_ids"].shape[0], 1, seqlen, seqlen)
    assert_outputs_close(patched(**inputs), original(**inputs))
    assert op_calls["attention"] == 0 and op_calls["add_layer_norm"] == 4


def test_state_dict_is_unchanged_and_round_trips():
    original, inputs = bert()
    original.eval()
    patched = copy.deepcopy(original)
    before = {name: p.data_ptr() for name, p in patched.named_parameters()}
    semvlp.patch_hf_model(patched)
    assert {name: p.data_ptr() for name, p in patched.named_parameters()} == before  # the same tensors, no copy
    state, reference = patched.state_dict(), original.state_dict()
    assert list(state) == list(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh, _ = bert(seed=1)
    fresh.eval()
    semvlp.patch_hf_model(fresh)
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    assert_outputs_close(fresh(**inputs), original(**inputs))
    # and the other way: a patched model's state_dict loads strictly into a plain Hugging Face model
    plain, _ = bert(seed=2)
    plain.eval()
    plain.load_state_dict(fresh.state_dict(), strict=True)
    assert_outputs_close(plain(**inputs), original(**inputs))


def test_undo_restores_every_module_and_keeps_trained_weights():
    model, inputs = bert()
    model.eval()
    classes = {name: type(m) for name, m in model.named_modules()}
    record = semvlp.patch_hf_model(model)
    assert any(isinstance(m, LayerNorm) for m in model.modules())
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight.add_(0.5)  # a "training" change while patched
    expected = model(**inputs)
    record.undo()
    assert {name: type(m) for name, m in model.named_modules()} == classes
    assert not any(hasattr(m, "_semvlp_backend") for m in model.modules())
    assert_outputs_close(model(**inputs), expected)
    with pytest.raises(RuntimeError, match="undone already"):
        record.undo()


def test_patched_model_trains():
    model, inputs = bert(dropout=0.1)
    semvlp.patch_hf_model(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_output_attentions_and_hidden_states_requests_still_work(op_calls):
    original, inputs = bert(attn_implementation="eager")  # sdpa returns no attention weights
    original.eval()
    patched = copy.deepcopy(original)
    semvlp.patch_hf_model(patched)
    expected = original(**inputs, output_attentions=True, output_hidden_states=True)
    actual = patched(**inputs, output_attentions=True, output_hidden_states=True)
    assert len(actual.attentions) == 2 and len(actual.hidden_states) == 3
    assert_outputs_close(actual, expected)
    assert op_calls["attention"] == 0  # the weights come from the original attention


def test_unsupported_configurations_are_left_alone_and_reported():
    config = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, is_decoder=True, add_cross_attention=True, hidden_act="relu",
                        output_attentions=True)
    config.position_embedding_type = "relative_key"
    model = BertLMHeadModel(config).eval()
    reference = copy.deepcopy(model)
    record = semvlp.patch_hf_model(model)
    reasons = {s.path: s.reason for s in record.skipped}
    attention = reasons["bert.encoder.layer.0.attention.self"]
    for words in ("decoder", "cross-attention", "relative position", "output_attentions"):
        assert words in attention
    assert "activation" in reasons["bert.encoder.layer.0.intermediate"]
    assert type(model.bert.encoder.layer[0].attention.self) is type(reference.bert.encoder.layer[0].attention.self)
    assert "left" in record.summary() and "relative position" in record.summary()
    ids = torch.randint(4, 97, (2, 6))
    encoder_states = torch.randn(2, 4, 32)
    kwargs = dict(input_ids=ids, encoder_hidden_states=encoder_states, use_cache=True)
    assert_outputs_close(model(**kwargs), reference(**kwargs))


def test_patching_twice_and_non_hf_models():
    model, _ = bert()
    first = semvlp.patch_hf_model(model)
    second = semvlp.patch_hf_model(model)
    assert not second.patched and {s.reason for s in second.skipped} == {"already patched"}
    assert len(first.patched) == 14
    nothing = semvlp.patch_hf_model(nn.Sequential(nn.Linear(3, 3)))
    assert not nothing.patched and "no Hugging Face" in nothing.skipped[0].reason
    with pytest.raises(ValueError, match="model"):
        semvlp.patch_hf_model("bert")


def test_patched_model_pickles():
    model, inputs = bert()
    model.eval()
    semvlp.patch_hf_model(model)
    clone = pickle.loads(pickle.dumps(model))
    assert_outputs_close(clone(**inputs), model(**inputs))


@pytest.mark.gpu
def test_patched_bert_on_gpu_float32_and_bfloat16():
    from tolerances import OUTPUT_FACTOR, PATCH_GPU_FP32_ATOL, assert_within_rule

    original, inputs = bert()
    original = original.cuda().eval()
    inputs = {k: v.cuda() for k, v in inputs.items()}
    patched = copy.deepcopy(original)
    semvlp.patch_hf_model(patched)
    expected, actual = original(**inputs), patched(**inputs)
    for name, tensor in output_tensors(expected).items():
        assert max_error(output_tensors(actual)[name], tensor) <= PATCH_GPU_FP32_ATOL, name
    expected.loss.backward()
    actual.loss.backward()
    grads = dict(original.named_parameters())
    for name, p in patched.named_parameters():
        if p.grad is not None:
            assert max_error(p.grad, grads[name].grad) <= PATCH_GPU_FP32_ATOL, name
    # bfloat16: within the low-precision rule against the float32 original, the plain bf16 original the baseline
    low_original, low_patched = copy.deepcopy(original).bfloat16(), copy.deepcopy(patched).bfloat16()
    logits = low_patched(**inputs).prediction_logits
    assert_within_rule("prediction_logits", logits, expected.prediction_logits.detach(),
                       low_original(**inputs).prediction_logits, factor=OUTPUT_FACTOR)


def test_output_attentions_passed_down_is_served_without_the_capture_hook(monkeypatch, op_calls):
    from semvlp.integrations.hf import fused

    monkeypatch.setattr(fused, "output_collector", lambda: None)  # a transformers that keeps it elsewhere
    original, inputs = bert(attn_implementation="eager")
    original.eval()
    patched = copy.deepcopy(original)
    semvlp.patch_hf_model(patched)
    assert_outputs_close(patched(**inputs, output_attentions=True), original(**inputs, output_attentions=True))
    assert op_calls["attention"] == 0
