"""The config's dropout rates and LayerNorm eps reach every block of the model."""

import dataclasses

from semvlp import SemVLPForPretraining
from semvlp.nn import FeedForward, LayerNorm, PackedCrossAttention, PackedSelfAttention


def test_every_block_gets_the_configured_dropout(tiny_config):
    config = dataclasses.replace(tiny_config, attention_probs_dropout_prob=0.23, hidden_dropout_prob=0.17)
    model = SemVLPForPretraining(config)
    attention = [m for m in model.modules() if isinstance(m, (PackedSelfAttention, PackedCrossAttention))]
    feed_forward = [m for m in model.modules() if isinstance(m, FeedForward)]
    assert len(attention) == config.num_hidden_layers + len(config.cross_layers)
    assert len(feed_forward) == config.num_hidden_layers
    assert all(m.attention_dropout == 0.23 and m.output.dropout == 0.17 for m in attention)
    assert all(m.dropout == 0.17 for m in feed_forward)


def test_every_layer_norm_gets_the_configured_eps(tiny_config):
    config = dataclasses.replace(tiny_config, layer_norm_eps=1e-3)
    norms = [m for m in SemVLPForPretraining(config).modules() if isinstance(m, LayerNorm)]
    assert len(norms) > 2 * config.num_hidden_layers and all(m.eps == 1e-3 for m in norms)
