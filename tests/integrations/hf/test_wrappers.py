"""patch_hf_model honours wrappers, never computes around them: PEFT/LoRA, forward hooks, dynamically quantized
linears, accelerate offloading and meta parameters leave the affected module unpatched with the reason (or,
when they arrive after patching, make that call run the original code); and a patched model exports with
torch.export and compiles with fullgraph=True."""

import copy

import pytest
import torch
from torch import nn

import semvlp
from semvlp import ops
from hf_models import assert_outputs_close, bert
from tolerances import PATCH_OUTPUT_ATOL, max_error


def _lora(model):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, target_modules=["query", "value", "intermediate.dense"], lora_dropout=0.0,
                             init_lora_weights=False)  # random B: the LoRA terms change the outputs
    return peft.get_peft_model(model, config)


def _assert_lora_matches(patched, reference, inputs):
    actual, expected = patched(**inputs), reference(**inputs)
    assert_outputs_close(actual, expected)
    actual.loss.backward()
    lora = {name: p for name, p in patched.named_parameters() if "lora_" in name}
    assert len(lora) == 12  # 2 layers x 3 targets x (A, B)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values()), \
        [name for name, p in lora.items() if p.grad is None]


def test_lora_layers_left_unpatched_with_the_reason():
    model, inputs = bert()
    model.eval()
    wrapped = _lora(model)
    reference = copy.deepcopy(wrapped)
    record = semvlp.patch_hf_model(wrapped)
    skipped = {s.path: s.reason for s in record.skipped}
    assert "peft" in skipped["base_model.model.bert.encoder.layer.0.attention.self"]
    assert "peft" in skipped["base_model.model.bert.encoder.layer.1.intermediate"]
    assert any(p.path.endswith("layer.0.output") for p in record.patched)  # unwrapped pieces still fused
    _assert_lora_matches(wrapped, reference, inputs)


def test_lora_added_after_patching_runs_the_original_code():
    model, inputs = bert()
    model.eval()
    reference = _lora(copy.deepcopy(model))
    semvlp.patch_hf_model(model)
    wrapped = _lora(model)
    wrapped.load_state_dict(reference.state_dict())
    _assert_lora_matches(wrapped, reference, inputs)


@pytest.mark.parametrize("when", ["before", "after"])
def test_forward_hooks_on_children_fire(when):
    model, inputs = bert()
    model.eval()
    reference = copy.deepcopy(model)
    fired = []

    def add_hooks():
        layer = model.bert.encoder.layer[0]
        for name in ("attention.self.query", "intermediate.dense", "output.dense", "output.LayerNorm"):
            layer.get_submodule(name).register_forward_hook(lambda *_, name=name: fired.append(name))

    if when == "before":
        add_hooks()
        record = semvlp.patch_hf_model(model)
        assert any("forward hooks" in s.reason for s in record.skipped)
    else:
        semvlp.patch_hf_model(model)
        add_hooks()
    assert_outputs_close(model(**inputs), reference(**inputs))
    assert sorted(fired) == sorted(["attention.self.query", "intermediate.dense", "output.dense", "output.LayerNorm"])


def test_dynamically_quantized_model_runs_unpatched_with_the_reason():
    model, inputs = bert()
    model.eval()
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    reference = copy.deepcopy(quantized)
    record = semvlp.patch_hf_model(quantized)
    reasons = [s.reason for s in record.skipped]
    assert len(reasons) == 8 and all("quantized" in r for r in reasons)
    with torch.no_grad():
        assert_outputs_close(quantized(**inputs), reference(**inputs))


def test_accelerate_cpu_offload_is_honoured():
    accelerate = pytest.importorskip("accelerate")
    model, inputs = bert()
    model.eval()
    reference = copy.deepcopy(model)
    accelerate.cpu_offload(model, execution_device=torch.device("cpu"))
    record = semvlp.patch_hf_model(model)
    assert record.skipped and all("accelerate hook" in s.reason for s in record.skipped)
    assert_outputs_close(model(**inputs), reference(**inputs))


def test_meta_parameters_are_not_patched():
    with torch.device("meta"):
        model, _ = bert()
    record = semvlp.patch_hf_model(model)
    assert not record.patched
    assert all("meta device" in s.reason for s in record.skipped)


class _Logits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).prediction_logits


@pytest.mark.parametrize("implementation,patched", [("sdpa", True), ("semvlp", True), ("semvlp", False)])
def test_model_exports(implementation, patched, monkeypatch):
    model, inputs = bert(attn_implementation=implementation)
    model.eval()
    reference = copy.deepcopy(model)
    if patched:
        semvlp.patch_hf_model(model)
    calls = []
    original = ops.attention
    monkeypatch.setattr(ops, "attention", lambda *a, **k: calls.append(1) or original(*a, **k))
    args = (inputs["input_ids"], inputs["attention_mask"])
    exported = torch.export.export(_Logits(model), args)
    if implementation == "semvlp":  # 2D masks: the fused attention is in the graph
        assert len(calls) == 2
    assert max_error(exported.module()(*args), _Logits(reference)(*args)) <= PATCH_OUTPUT_ATOL


@pytest.mark.slow
@pytest.mark.parametrize("patched", [True, False])
def test_model_compiles_fullgraph(patched):
    model, inputs = bert(attn_implementation="semvlp")
    model.eval()
    reference = copy.deepcopy(model)
    if patched:
        semvlp.patch_hf_model(model)
    args = (inputs["input_ids"], inputs["attention_mask"])
    compiled = torch.compile(_Logits(model), fullgraph=True)
    assert max_error(compiled(*args), _Logits(reference)(*args)) <= PATCH_OUTPUT_ATOL
