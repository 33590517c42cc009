"""The patched pieces honour the Hugging Face model's own settings: attention-probability dropout in training
(replayed exactly through the `reference` backend) and a non-default `layer_norm_eps`.

The eps checks use eps=1e-3 on rows of variance about 1e-4, where the eps dominates: a patch that falls back to
another eps misses the original by orders of magnitude more than the tolerance (each test checks that margin).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import semvlp
from semvlp.nn import LayerNorm
from semvlp.ops.backends import reference
from hf_models import BATCH, FAMILIES, HEADS, HIDDEN, bert, output_tensors
from tolerances import PATCH_OUTPUT_ATOL, max_error

ATTENTION_PATHS = {  # a self-attention of each family, and LXMERT's cross-attention
    "bert": "bert.encoder.layer.1.attention.self",
    "visual_bert": "visual_bert.encoder.layer.0.attention.self",
    "lxmert": "lxmert.encoder.x_layers.0.visual_attention.att",
}
P, EPS = 0.3, 1e-3


def _call(module, hidden, context, mask):
    if type(module).__name__ == "SemvlpLxmertAttention":
        return module(hidden, context, mask)[0]
    return module(hidden, mask)[0]


@pytest.mark.parametrize("family", sorted(ATTENTION_PATHS))
def test_patched_attention_applies_the_models_attention_dropout(family):
    model, _ = FAMILIES[family]()
    semvlp.patch_hf_model(model, backend="reference")
    attention = model.get_submodule(ATTENTION_PATHS[family])
    attention.dropout.p = P
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(BATCH, 6, HIDDEN, generator=g)
    context = hidden if family != "lxmert" else torch.randn(BATCH, 9, HIDDEN, generator=g)
    mask = torch.ones(BATCH, context.shape[1], dtype=torch.long)
    mask[1, 4:] = 0

    def heads(t):
        return t.view(*t.shape[:-1], HEADS, -1)

    q, k, v = heads(attention.query(hidden)), heads(attention.key(context)), heads(attention.value(context))
    with torch.no_grad():
        torch.manual_seed(7)
        trained = _call(attention.train(), hidden, context, mask)
        torch.manual_seed(7)
        expected = reference.attention(q, k, v, attention_mask=mask.bool(), dropout_p=P).flatten(-2)
        without = reference.attention(q, k, v, attention_mask=mask.bool()).flatten(-2)
        torch.testing.assert_close(trained, expected, atol=PATCH_OUTPUT_ATOL, rtol=0)
        assert max_error(trained, without) > 0.1, "the dropout made no visible difference"
        torch.testing.assert_close(_call(attention.eval(), hidden, context, mask), without,
                                   atol=PATCH_OUTPUT_ATOL, rtol=0)


def _eps_bert():
    original, inputs = bert(layer_norm_eps=EPS)
    original.eval()
    patched = copy.deepcopy(original)
    semvlp.patch_hf_model(patched)
    return original, patched, inputs


def _low_variance(*shape, seed):
    return 0.01 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_patched_dense_add_norm_blocks_use_the_models_layer_norm_eps():
    original, patched, _ = _eps_bert()
    blocks = [(name, m) for name, m in patched.named_modules() if hasattr(m, "_semvlp_backend") and hasattr(m, "dense")
              and hasattr(m, "LayerNorm")]
    assert len(blocks) == 4  # attention output and feed-forward output of both layers
    originals = dict(original.named_modules())
    for i, (name, block) in enumerate(blocks):
        with torch.no_grad():
            for dense in (block.dense, originals[name].dense):  # keeps the projected part of the sum small too
                dense.weight.mul_(0.01)
            x = _low_variance(BATCH, 5, block.dense.in_features, seed=i)
            residual = _low_variance(BATCH, 5, HIDDEN, seed=100 + i)
            ours, theirs = block(x, residual), originals[name](x, residual)
            norm = block.LayerNorm
            other_eps = F.layer_norm(block.dense(x) + residual, (HIDDEN,), norm.weight, norm.bias, 1e-12)
        assert max_error(ours, theirs) <= PATCH_OUTPUT_ATOL, name
        assert max_error(other_eps, theirs) > 1000 * PATCH_OUTPUT_ATOL, f"{name}: eps makes no difference here"


def test_swapped_layer_norms_keep_the_models_layer_norm_eps():
    original, patched, inputs = _eps_bert()
    originals = dict(original.named_modules())
    swapped = [(name, m) for name, m in patched.named_modules() if isinstance(m, LayerNorm)]
    assert "bert.embeddings.LayerNorm" in dict(swapped)
    for i, (name, norm) in enumerate(swapped):
        assert isinstance(originals[name], nn.LayerNorm) and norm.eps == EPS
        x = _low_variance(BATCH, 5, HIDDEN, seed=i)
        with torch.no_grad():
            ours, theirs = norm(x), originals[name](x)
            other_eps = F.layer_norm(x, (HIDDEN,), norm.weight, norm.bias, 1e-12)
        assert max_error(ours, theirs) <= PATCH_OUTPUT_ATOL, name
        assert max_error(other_eps, theirs) > 1000 * PATCH_OUTPUT_ATOL
    # and through the whole model (the embeddings' sum has a variance of about 1e-3, near the eps)
    got, want = output_tensors(patched(**inputs)), output_tensors(original(**inputs))
    for name in want:
        assert max_error(got[name], want[name]) <= PATCH_OUTPUT_ATOL, name
