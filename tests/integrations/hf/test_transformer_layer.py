"""TransformerLayer.from_hf against Hugging Face BERT-style layers, padded and packed, outputs and gradients."""

import pytest
import torch
from torch import nn
from transformers import BertConfig, LxmertConfig, VisualBertConfig
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.lxmert.modeling_lxmert import LxmertLayer
from transformers.models.visual_bert.modeling_visual_bert import VisualBertLayer

from semvlp.integrations.hf import TransformerLayer
from tolerances import TRANSFORMER_LAYER_ATOL, max_error

HIDDEN, HEADS, FFN = 40, 5, 72


def _bert_layer(hidden_act="gelu", dropout=0.0):
    config = BertConfig(hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=FFN, hidden_act=hidden_act,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        attn_implementation="eager")
    return BertLayer(config)


def _additive(mask: torch.Tensor) -> torch.Tensor:
    """A (batch, seqlen) keep-mask as Hugging Face's additive (batch, 1, 1, seqlen) float mask."""
    additive = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    additive = additive.masked_fill(~mask, torch.finfo(torch.float32).min)
    return additive[:, None, None]


def _batch(lengths, seqlen, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(seqlen)[None, :] < torch.tensor(lengths)[:, None]
    return torch.randn(len(lengths), seqlen, HIDDEN, generator=g), mask


def _unwrap(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("lengths,seqlen", [([13, 7, 1], 13), ([1], 1), ([5, 5], 5)], ids=["prime", "one", "full"])
@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_from_hf_bert_layer_padded_and_packed(lengths, seqlen, hidden_act):
    torch.manual_seed(0)
    hf = _bert_layer(hidden_act).eval()
    ours = TransformerLayer.from_hf(hf).eval()
    x, mask = _batch(lengths, seqlen)
    expected = hf(x, _additive(mask))
    padded = ours(x, mask)
    assert max_error(padded[mask], expected[mask]) <= TRANSFORMER_LAYER_ATOL
    assert not padded[~mask].any()  # padding rows are zero
    cu = torch.nn.functional.pad(torch.tensor(lengths).cumsum(0), (1, 0)).int()
    packed = ours(x[mask], cu_seqlens=cu, max_seqlen=max(lengths))
    assert max_error(packed, expected[mask]) <= TRANSFORMER_LAYER_ATOL
    if all(n == seqlen for n in lengths):
        assert max_error(ours(x), expected.reshape_as(x)) <= TRANSFORMER_LAYER_ATOL


def test_from_hf_gradients_in_training_mode():
    torch.manual_seed(0)
    hf = _bert_layer(dropout=0.0).train()
    ours = TransformerLayer.from_hf(hf).train()
    x, mask = _batch([9, 4, 6], 9)
    dy = torch.randn_like(x) * mask[..., None]
    x_hf, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    hf(x_hf, _additive(mask)).backward(dy)
    ours(x_ours, mask).backward(dy)
    assert max_error(x_ours.grad[mask], x_hf.grad[mask]) <= TRANSFORMER_LAYER_ATOL
    sa, ff = ours.self_attention, ours.feed_forward
    attn, out = hf.attention, hf.output
    pairs = [
        (sa.qkv.weight.grad, torch.cat([attn.self.query.weight.grad, attn.self.key.weight.grad,
                                        attn.self.value.weight.grad])),
        (sa.qkv.bias.grad, torch.cat([attn.self.query.bias.grad, attn.self.key.bias.grad, attn.self.value.bias.grad])),
        (sa.output.dense.weight.grad, attn.output.dense.weight.grad),
        (sa.output.norm.weight.grad, attn.output.LayerNorm.weight.grad),
        (ff.intermediate.weight.grad, hf.intermediate.dense.weight.grad),
        (ff.intermediate.bias.grad, hf.intermediate.dense.bias.grad),
        (ff.output.bias.grad, out.dense.bias.grad),
        (ff.norm.bias.grad, out.LayerNorm.bias.grad),
    ]
    for actual, expected in pairs:
        assert max_error(actual, expected) <= TRANSFORMER_LAYER_ATOL


@pytest.mark.parametrize("kind", ["visual_bert", "lxmert"])
def test_from_hf_other_bert_style_layers(kind):
    torch.manual_seed(0)
    if kind == "visual_bert":
        hf = VisualBertLayer(VisualBertConfig(hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=FFN))
    else:
        hf = LxmertLayer(LxmertConfig(hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=FFN))
    hf.eval()
    ours = TransformerLayer.from_hf(hf).eval()
    x, mask = _batch([6, 3], 6)
    expected = _unwrap(hf(x, _additive(mask)))
    assert max_error(ours(x, mask)[mask], expected[mask]) <= TRANSFORMER_LAYER_ATOL


def test_from_hf_copies_rather_than_shares():
    hf = _bert_layer()
    ours = TransformerLayer.from_hf(hf)
    with torch.no_grad():
        hf.output.dense.weight.add_(1.0)
    assert not torch.equal(ours.feed_forward.output.weight, hf.output.dense.weight)


def test_bad_layers_and_inputs():
    with pytest.raises(ValueError, match="activation"):
        TransformerLayer.from_hf(_bert_layer(hidden_act="relu"))
    with pytest.raises(ValueError, match="BERT-style layer"):
        TransformerLayer.from_hf(nn.Linear(4, 4))
    layer = TransformerLayer(HIDDEN, HEADS, FFN)
    with pytest.raises(ValueError, match="cu_seqlens"):
        layer(torch.randn(7, HIDDEN))
    with pytest.raises(ValueError, match="attention_mask"):
        layer(torch.randn(2, 3, HIDDEN), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="hidden"):
        layer(torch.randn(HIDDEN))


@pytest.mark.gpu
def test_from_hf_on_gpu_bfloat16_within_the_rule():
    from tolerances import OUTPUT_FACTOR, assert_within_rule

    torch.manual_seed(0)
    hf = _bert_layer().cuda().eval()
    x, mask = _batch([64, 17, 1, 40], 64)
    x, mask = x.cuda(), mask.cuda()
    expected = _unwrap(hf(x, _additive(mask).cuda()))
    low_hf = _bert_layer().cuda().eval().bfloat16()
    low_hf.load_state_dict(hf.state_dict())
    plain = _unwrap(low_hf(x.bfloat16(), _additive(mask).cuda().bfloat16()))
    ours = TransformerLayer.from_hf(hf).cuda().eval().bfloat16()
    actual = ours(x.bfloat16(), mask)
    assert_within_rule("out", actual[mask], expected[mask].detach(), plain[mask], factor=OUTPUT_FACTOR)


@pytest.mark.parametrize("name", ["TransformerLayer", "patch_hf_model", "PatchRecord"])
def test_the_old_import_path_still_works_with_a_warning(name):
    import semvlp.integrations.hf
    import semvlp.nn

    with pytest.warns(FutureWarning, match=f"semvlp.nn.{name} moved to semvlp.integrations.hf.{name}"):
        moved = getattr(semvlp.nn, name)
    assert moved is getattr(semvlp.integrations.hf, name)
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        semvlp.nn.Nothing


def test_from_hf_takes_the_layers_dropouts_and_layer_norm_eps():
    torch.manual_seed(0)
    config = BertConfig(hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=FFN,
                        hidden_dropout_prob=0.15, attention_probs_dropout_prob=0.3, layer_norm_eps=1e-3,
                        attn_implementation="eager")
    hf = BertLayer(config).eval()
    ours = TransformerLayer.from_hf(hf).eval()
    assert ours.self_attention.attention_dropout == 0.3
    assert ours.self_attention.output.dropout == 0.15 and ours.feed_forward.dropout == 0.15
    # Rows of variance about 1e-4 against eps=1e-3: the output shows whether the eps came across.
    with torch.no_grad():
        for dense in (hf.attention.output.dense, hf.output.dense):
            dense.weight.mul_(0.01)
        ours = TransformerLayer.from_hf(hf).eval()
        x, mask = _batch([6, 4], 6)
        x = 0.01 * x
        assert max_error(ours(x, mask)[mask], hf(x, _additive(mask))[mask]) <= TRANSFORMER_LAYER_ATOL
        hf.attention.output.LayerNorm.eps = hf.output.LayerNorm.eps = 1e-12
        assert max_error(ours(x, mask)[mask], hf(x, _additive(mask))[mask]) > 100 * TRANSFORMER_LAYER_ATOL
