"""The packed sub-blocks against explicit per-sample computations with torch.nn.functional."""

import torch
import torch.nn.functional as F

from semvlp.data import PackedLayout
from semvlp.nn import FeedForward, LayerNorm, PackedCrossAttention, PackedSelfAttention
from tolerances import FP32_ATOL

HIDDEN, HEADS = 24, 3
# Far from every default (1e-12, 1e-5) and comparable to the unit variance of the rows, so a block that drops
# its eps misses the expected output by orders of magnitude more than the tolerance.
EPS = 0.25


def _attend(q, k, v):
    """(n, hidden) x (m, hidden) -> (n, hidden) multi-head attention by SDPA; zeros when there is no key."""
    if k.shape[0] == 0 or q.shape[0] == 0:
        return torch.zeros_like(q)
    split = lambda t: t.view(t.shape[0], HEADS, -1).transpose(0, 1)  # noqa: E731
    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(0, 1).reshape(q.shape)


def _post_ln(block_out, residual, dense, norm):
    return F.layer_norm(residual + F.linear(block_out, dense.weight, dense.bias), (HIDDEN,), norm.weight, norm.bias,
                        norm.eps)


def _layout_and_hidden():
    layout = PackedLayout.from_lengths([3, 5, 2], [4, 0, 3])
    return layout, torch.randn(layout.total_tokens, HIDDEN, generator=torch.Generator().manual_seed(0))


def test_self_attention_within_each_modality():
    torch.manual_seed(0)
    block = PackedSelfAttention(HIDDEN, HEADS, eps=EPS).eval()
    layout, hidden = _layout_and_hidden()
    out = block(hidden, layout.stream_cu_seqlens, layout.max_stream_len)
    q, k, v = block.qkv(hidden).chunk(3, dim=-1)
    offsets = layout.stream_cu_seqlens.tolist()
    for a, b in zip(offsets, offsets[1:]):
        expected = _post_ln(_attend(q[a:b], k[a:b], v[a:b]), hidden[a:b], block.output.dense, block.output.norm)
        torch.testing.assert_close(out[a:b], expected, atol=FP32_ATOL, rtol=0)


def test_cross_attention_pairs_each_modality_with_the_other_of_its_sample():
    torch.manual_seed(0)
    block = PackedCrossAttention(HIDDEN, HEADS, eps=EPS).eval()
    layout, hidden = _layout_and_hidden()
    out = block(hidden, layout.cross_kv_index, layout.stream_cu_seqlens, layout.cross_cu_seqlens_k,
                layout.max_stream_len, layout.max_stream_len)
    q = block.query(hidden)
    k, v = block.key_value(hidden).chunk(2, dim=-1)
    for s in range(layout.batch_size):
        text = layout.text_index[layout.text_cu_seqlens[s]:layout.text_cu_seqlens[s + 1]]
        regions = layout.region_index[layout.region_cu_seqlens[s]:layout.region_cu_seqlens[s + 1]]
        for queries, keys in ((text, regions), (regions, text)):
            expected = _post_ln(_attend(q[queries], k[keys], v[keys]), hidden[queries], block.output.dense,
                                block.output.norm)
            torch.testing.assert_close(out[queries], expected, atol=FP32_ATOL, rtol=0)


def test_feed_forward_matches_the_unfused_chain():
    torch.manual_seed(0)
    for approximate in ("none", "tanh"):
        block = FeedForward(HIDDEN, 40, approximate=approximate, eps=EPS).eval()
        x = torch.randn(7, HIDDEN)
        inner = F.gelu(block.intermediate(x), approximate=approximate)
        expected = F.layer_norm(x + block.output(inner), (HIDDEN,), block.norm.weight, block.norm.bias, EPS)
        torch.testing.assert_close(block(x), expected, atol=FP32_ATOL, rtol=0)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    block = FeedForward(HIDDEN, 40, dropout=0.5)
    x = torch.randn(7, HIDDEN)
    assert not torch.equal(block.train()(x), block.train()(x))
    assert torch.equal(block.eval()(x), block.eval()(x))


def test_layer_norm_is_a_drop_in_for_torch():
    for shape in (16, (3, 5)):
        ours, theirs = LayerNorm(shape, eps=EPS), torch.nn.LayerNorm(shape, eps=EPS)
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        with torch.no_grad():
            theirs.weight.normal_()
            theirs.bias.normal_()
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(4, *((shape,) if isinstance(shape, int) else shape))
        torch.testing.assert_close(ours(x), theirs(x), atol=FP32_ATOL, rtol=0)
    assert LayerNorm(8, elementwise_affine=False).weight is None
    assert LayerNorm(8, bias=False).bias is None
