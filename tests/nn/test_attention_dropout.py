"""Attention-probability dropout of the packed attention blocks: applied in training, replayed exactly.

With the `reference` backend the keep-mask is drawn from torch's default generator, so re-seeding and running
the reference attention with the same dropout_p reproduces the block's output; a block that ignored its
`attention_dropout` would instead match the dropout-free output.
"""

import pytest
import torch
import torch.nn.functional as F

from semvlp.data import PackedLayout
from semvlp.nn import PackedCrossAttention, PackedSelfAttention
from semvlp.ops.backends import reference
from tolerances import FP32_ATOL

HIDDEN, HEADS, P = 24, 3, 0.4


def _post_ln(context, residual, output):
    return F.layer_norm(residual + output.dense(context), (HIDDEN,), output.norm.weight, output.norm.bias,
                        output.norm.eps)


def _layout_and_hidden():
    layout = PackedLayout.from_lengths([3, 5, 2], [4, 1, 3])
    return layout, torch.randn(layout.total_tokens, HIDDEN, generator=torch.Generator().manual_seed(0))


def _self_attention(layout, hidden):
    block = PackedSelfAttention(HIDDEN, HEADS, attention_dropout=P, eps=1e-5, backend="reference")
    run = lambda: block(hidden, layout.stream_cu_seqlens, layout.max_stream_len)  # noqa: E731
    q, k, v = block.qkv(hidden).view(-1, 3, HEADS, HIDDEN // HEADS).unbind(1)
    cu, n = layout.stream_cu_seqlens, layout.max_stream_len
    context = lambda p: reference.varlen_attention(q, k, v, cu, cu, n, n, dropout_p=p)  # noqa: E731
    return block, run, context


def _cross_attention(layout, hidden):
    block = PackedCrossAttention(HIDDEN, HEADS, attention_dropout=P, eps=1e-5, backend="reference")
    cu_q, cu_k, n = layout.stream_cu_seqlens, layout.cross_cu_seqlens_k, layout.max_stream_len
    run = lambda: block(hidden, layout.cross_kv_index, cu_q, cu_k, n, n)  # noqa: E731
    q = block.query(hidden).view(-1, HEADS, HIDDEN // HEADS)
    k, v = block.key_value(hidden)[layout.cross_kv_index].view(-1, 2, HEADS, HIDDEN // HEADS).unbind(1)
    context = lambda p: reference.varlen_attention(q, k, v, cu_q, cu_k, n, n, dropout_p=p)  # noqa: E731
    return block, run, context


@pytest.mark.parametrize("make", [_self_attention, _cross_attention], ids=["self", "cross"])
def test_attention_dropout_is_applied_in_training_only(make):
    torch.manual_seed(0)
    layout, hidden = _layout_and_hidden()
    block, run, context = make(layout, hidden)
    with torch.no_grad():
        torch.manual_seed(5)
        trained = run()
        torch.manual_seed(5)
        expected = _post_ln(context(P).reshape(hidden.shape), hidden, block.output)
        without = _post_ln(context(0.0).reshape(hidden.shape), hidden, block.output)
        torch.testing.assert_close(trained, expected, atol=FP32_ATOL, rtol=0)
        assert (trained - without).abs().max() > 0.1, "the dropout made no visible difference"
        block.eval()
        torch.testing.assert_close(run(), without, atol=FP32_ATOL, rtol=0)
