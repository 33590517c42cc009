import pytest

from semvlp import SemVLPConfig
from semvlp.model.config import PRETRAINING_TASKS


@pytest.fixture
def tiny_config():
    """A 3-layer model with the plug in layers 1 and 2, no dropout (deterministic comparisons), every task on, the
    ITM per-token score on."""
    return SemVLPConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32, cross_layers=[1, 2], visual_feat_dim=12,
                        visual_pos_dim=5, max_regions=10, num_region_labels=7, num_qa_labels=5,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        tasks={task: True for task in PRETRAINING_TASKS}, itm_token_score=True)
