"""transformers' AutoConfig and AutoModel read saved semvlp folders once semvlp.integrations.hf is imported."""

import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from semvlp import SemVLPConfig, SemVLPForPretraining  # noqa: E402
from semvlp.data import random_batch  # noqa: E402
from semvlp.integrations.hf import register_auto_classes  # noqa: E402
from semvlp.integrations.hf.auto import semvlp_config  # noqa: E402
from semvlp.model import (SemVLPForImageTextMatching, SemVLPForPairedReasoning,  # noqa: E402
                          SemVLPForQuestionAnswering)

TINY = SemVLPConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                    max_position_embeddings=32, visual_feat_dim=12, max_regions=10, num_region_labels=7,
                    num_qa_labels=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
MODELS = {
    "SemVLPForPretraining": lambda: SemVLPForPretraining(TINY),
    "SemVLPForQuestionAnswering": lambda: SemVLPForQuestionAnswering(TINY, 4),
    "SemVLPForImageTextMatching": lambda: SemVLPForImageTextMatching(TINY),
    "SemVLPForPairedReasoning": lambda: SemVLPForPairedReasoning(TINY),
}


def test_auto_config_reads_a_saved_folder(tmp_path):
    SemVLPForQuestionAnswering(TINY, 4).save_pretrained(tmp_path)
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(config) is register_auto_classes() and config.model_type == "semvlp"
    assert config.architectures == ["SemVLPForQuestionAnswering"] and config.num_answers == 4
    assert semvlp_config(config) == TINY


@pytest.mark.parametrize("name", sorted(MODELS))
def test_auto_model_returns_the_saved_semvlp_model(tmp_path, name):
    torch.manual_seed(3)
    model = MODELS[name]().eval()
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
    batch = random_batch(TINY, 4, text_len=9, num_regions=4)
    with torch.no_grad():
        if name == "SemVLPForPretraining":
            assert torch.equal(model(batch, mode="two").loss, loaded(batch, mode="two").loss)
        else:
            inputs = batch.input_ids, batch.region_features, batch.region_boxes, batch.layout
            assert torch.equal(model(*inputs, mode="two"), loaded(*inputs, mode="two"))


def test_registration_is_done_once_and_names_semvlp():
    config_class = register_auto_classes()
    assert register_auto_classes() is config_class
    assert transformers.CONFIG_MAPPING["semvlp"] is config_class


def test_without_transformers_registration_does_nothing(monkeypatch):
    from semvlp.integrations.hf import auto

    monkeypatch.setattr(auto, "_registered", None)
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    assert auto.register_auto_classes() is None
