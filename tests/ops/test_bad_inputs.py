"""Every documented bad input raises ValueError naming the argument, what it got and what was expected."""

import pytest
import torch

from semvlp import ops

Q = torch.randn(2, 5, 3, 16)
K = torch.randn(2, 7, 3, 16)
PACKED = torch.randn(10, 3, 16)
CU = torch.tensor([0, 4, 10], dtype=torch.int32)


def _attention(**overrides):
    args = dict(q=Q, k=K, v=K)
    args.update(overrides)
    return lambda: ops.attention(args.pop("q"), args.pop("k"), args.pop("v"), **args)


def _varlen(**overrides):
    args = dict(q=PACKED, k=PACKED, v=PACKED, cu_seqlens_q=CU, cu_seqlens_k=CU, max_seqlen_q=6, max_seqlen_k=6)
    args.update(overrides)
    return lambda: ops.varlen_attention(**args)


CASES = {
    "q not a tensor": (_attention(q=[[1.0]]), r"q: expected a torch.Tensor, got list"),
    "q of wrong rank": (_attention(q=torch.randn(5, 3, 16)), r"q: expected a 4-d tensor, got shape \(5, 3, 16\)"),
    "integer q": (_attention(q=Q.long()), r"q: expected dtype in .*got torch.int64"),
    "dtype mismatch": (_attention(k=K.half(), v=K.half()), r"q/k/v: expected one dtype for all, got q=torch.float32"),
    "device mismatch": (_attention(k=K.to("meta"), v=K.to("meta")), r"q/k/v: expected one device for all"),
    "heads mismatch": (_attention(k=torch.randn(2, 7, 2, 16), v=torch.randn(2, 7, 2, 16)),
                       r"k: number of heads is 2, expected 3"),
    "head dim mismatch": (_attention(k=torch.randn(2, 7, 3, 8), v=torch.randn(2, 7, 3, 8)), r"k: head dim is 8, expected 16"),
    "batch mismatch": (_attention(k=torch.randn(1, 7, 3, 16), v=torch.randn(1, 7, 3, 16)), r"k: batch size is 1, expected 2"),
    "k/v length mismatch": (_attention(v=torch.randn(2, 6, 3, 16)), r"v: number of keys \(dim -3\) is 6, expected 7"),
    "mask of wrong shape": (_attention(attention_mask=torch.ones(2, 5, dtype=torch.bool)),
                            r"attention_mask: expected shape \(batch, seqlen_k\) = \(2, 7\), got \(2, 5\)"),
    "mask with other values": (_attention(attention_mask=torch.full((2, 7), 2)),
                               r"attention_mask: expected only 0 \(padding\) and 1"),
    "float mask": (_attention(attention_mask=torch.ones(2, 7)), r"attention_mask: expected bool or integer 0/1"),
    "dropout out of range": (_attention(dropout_p=1.0), r"dropout_p: expected a float in \[0, 1\), got 1.0"),
    "bad softmax_scale": (_attention(softmax_scale=-1.0), r"softmax_scale: expected None or a finite positive float"),
    "nan softmax_scale": (_attention(softmax_scale=float("nan")), r"softmax_scale: expected .*finite positive.*nan"),
    "inf softmax_scale": (_attention(softmax_scale=float("inf")), r"softmax_scale: expected .*finite positive.*inf"),
    "bool softmax_scale": (_attention(softmax_scale=True), r"softmax_scale: expected .*, got True"),
    "varlen nan softmax_scale": (_varlen(softmax_scale=float("nan")), r"softmax_scale: expected .*finite positive"),
    "cu_seqlens not int32": (_varlen(cu_seqlens_q=CU.long()), r"cu_seqlens_q: expected dtype torch.int32, got torch.int64"),
    "cu_seqlens not increasing": (_varlen(cu_seqlens_k=torch.tensor([0, 6, 4, 10], dtype=torch.int32),
                                          cu_seqlens_q=torch.tensor([0, 3, 4, 10], dtype=torch.int32)),
                                  r"cu_seqlens_k: expected non-decreasing offsets"),
    "cu_seqlens not from zero": (_varlen(cu_seqlens_q=torch.tensor([1, 4, 10], dtype=torch.int32)),
                                 r"cu_seqlens_q: expected the first offset to be 0, got 1"),
    "cu_seqlens inconsistent with tokens": (_varlen(cu_seqlens_q=torch.tensor([0, 4, 9], dtype=torch.int32)),
                                            r"cu_seqlens_q: last offset is 9, expected the token count 10"),
    "cu_seqlens of wrong rank": (_varlen(cu_seqlens_q=CU[None]), r"cu_seqlens_q: expected a 1-d tensor"),
    "segment count mismatch": (_varlen(cu_seqlens_k=torch.tensor([0, 4, 7, 10], dtype=torch.int32)),
                               r"cu_seqlens_k: holds 3 segments, expected 2"),
    "max_seqlen too small": (_varlen(max_seqlen_q=5), r"max_seqlen_q: is 5, but cu_seqlens_q holds a segment of length 6"),
    "max_seqlen not an int": (_varlen(max_seqlen_k=6.0), r"max_seqlen_k: expected a non-negative int, got 6.0"),
    "varlen q of wrong rank": (_varlen(q=Q), r"q: expected a 3-d tensor"),
    "layer_norm weight of wrong length": (lambda: ops.layer_norm(torch.randn(4, 8), torch.ones(7), None),
                                          r"weight: length \(the last dim of x\) is 7, expected 8"),
    "layer_norm non-positive eps": (lambda: ops.layer_norm(torch.randn(4, 8), None, None, eps=0.0),
                                    r"eps: expected a finite positive float, got 0.0"),
    "layer_norm nan eps": (lambda: ops.layer_norm(torch.randn(4, 8), None, None, eps=float("nan")),
                           r"eps: expected a finite positive float, got nan"),
    "add_layer_norm inf eps": (lambda: ops.add_layer_norm(torch.randn(4, 8), torch.randn(4, 8), None, None,
                                                          eps=float("inf")),
                               r"eps: expected a finite positive float, got inf"),
    "add_layer_norm residual shape": (lambda: ops.add_layer_norm(torch.randn(4, 8), torch.randn(3, 8), None, None),
                                      r"residual: expected shape \(4, 8\) \(that of x\), got \(3, 8\)"),
    "add_layer_norm integer residual": (lambda: ops.add_layer_norm(torch.randn(4, 8), torch.ones(4, 8, dtype=torch.long),
                                                                   None, None),
                                        r"residual: expected dtype in .*got torch.int64"),
    "add_layer_norm x_bias length": (lambda: ops.add_layer_norm(torch.randn(4, 8), torch.randn(4, 8), None, None,
                                                                x_bias=torch.randn(5)),
                                     r"x_bias: length \(the last dim of x\) is 5, expected 8"),
    "bias_gelu bias length": (lambda: ops.bias_gelu(torch.randn(4, 8), torch.randn(9)),
                              r"bias: length \(the last dim of x\) is 9, expected 8"),
    "bias_gelu approximation": (lambda: ops.bias_gelu(torch.randn(4, 8), torch.randn(8), approximate="sigmoid"),
                                r"approximate: expected one of \('none', 'tanh'\), got 'sigmoid'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_a_named_value_error(case):
    call, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        call()
