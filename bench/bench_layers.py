"""The drop-in layers against their originals, forward + backward on one input each:
  layer_norm      semvlp.nn.LayerNorm                      vs torch.nn.LayerNorm
  bert_layer      semvlp.nn.TransformerLayer.from_hf       vs Hugging Face BertLayer (padded batch, key padding)
  bert_model      BertModel + semvlp.patch_hf_model        vs BertModel
Providers: original (baseline) and semvlp.

    python -m bench.bench_layers [--quick]
"""

from __future__ import annotations

import torch

import semvlp
from bench import harness
from semvlp.integrations.hf import TransformerLayer
from semvlp.nn import LayerNorm


def _sizes(args) -> dict:
    if args.quick:
        return dict(rows=512, hidden=64, heads=4, ffn=256, batch=4, seqlen=32, layers=2)
    if args.device.type == "cuda":
        return dict(rows=16384, hidden=768, heads=12, ffn=3072, batch=64, seqlen=128, layers=12)
    return dict(rows=4096, hidden=256, heads=4, ffn=1024, batch=8, seqlen=64, layers=4)


def _lengths(batch: int, seqlen: int) -> torch.Tensor:
    """Sequence lengths between half and all of seqlen, as in a padded batch of real text."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(seqlen // 2, seqlen + 1, (batch,), generator=g)


def _bert_config(s: dict):
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                      num_attention_heads=s["heads"], intermediate_size=s["ffn"], hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def _backward_step(module_fn, inputs, grad):
    def step():
        out = module_fn(*inputs)
        out.backward(grad)
    return step


def build(args) -> harness.Benchmark:
    """The drop-in layers (LayerNorm, TransformerLayer, patched BertModel) against their originals."""
    s = _sizes(args)
    dtype = torch.bfloat16 if args.device.type == "cuda" else torch.float32
    size = torch.finfo(dtype).bits // 8
    h, rows = s["hidden"], s["rows"]
    lengths = _lengths(s["batch"], s["seqlen"])
    real_tokens = int(lengths.sum())

    def norm_inputs(device):
        x = torch.randn(rows, h, device=device, dtype=dtype, requires_grad=True)
        return {"kind": "layer_norm", "x": x, "dy": torch.randn_like(x)}

    def padded_inputs(kind):
        def make(device):
            mask = torch.arange(s["seqlen"])[None, :] < lengths[:, None]
            x = torch.randn(s["batch"], s["seqlen"], h, device=device, dtype=dtype, requires_grad=True)
            ids = torch.randint(4, 30522, (s["batch"], s["seqlen"]), device=device)
            return {"kind": kind, "x": x, "ids": ids, "mask": mask.to(device), "dy": torch.randn_like(x)}
        return make

    def original(inp):
        torch.manual_seed(0)
        device = inp["x"].device
        if inp["kind"] == "layer_norm":
            norm = torch.nn.LayerNorm(h, device=device, dtype=dtype)
            return _backward_step(norm, (inp["x"],), inp["dy"])
        config = _bert_config(s)
        if inp["kind"] == "bert_layer":
            from transformers.models.bert.modeling_bert import BertLayer

            config._attn_implementation = "sdpa"
            layer = BertLayer(config).to(device, dtype)
            keep = torch.zeros(inp["mask"].shape, device=device, dtype=dtype)
            additive = keep.masked_fill(~inp["mask"], torch.finfo(dtype).min)[:, None, None, :]
            return _backward_step(lambda x: layer(x, additive), (inp["x"],), inp["dy"])
        from transformers import BertModel

        model = BertModel(config).to(device, dtype)
        return _backward_step(lambda ids: model(ids, attention_mask=inp["mask"]).last_hidden_state.float().sum(),
                              (inp["ids"],), None)

    def ours(inp):
        torch.manual_seed(0)
        device = inp["x"].device
        if inp["kind"] == "layer_norm":
            norm = LayerNorm(h, device=device, dtype=dtype)
            return _backward_step(norm, (inp["x"],), inp["dy"])
        config = _bert_config(s)
        if inp["kind"] == "bert_layer":
            from transformers.models.bert.modeling_bert import BertLayer

            layer = TransformerLayer.from_hf(BertLayer(config).to(device, dtype))
            return _backward_step(lambda x: layer(x, inp["mask"]), (inp["x"],), inp["dy"])
        from transformers import BertModel

        model = BertModel(config).to(device, dtype)
        semvlp.patch_hf_model(model)
        return _backward_step(lambda ids: model(ids, attention_mask=inp["mask"]).last_hidden_state.float().sum(),
                              (inp["ids"],), None)

    ffn = s["ffn"]
    padded = s["batch"] * s["seqlen"]
    layer_flops = 3 * (2 * padded * (4 * h * h + 2 * h * ffn) + 4 * int((lengths ** 2).sum()) * h)
    cases = [
        harness.Case("layer_norm", norm_inputs, params={"rows": rows, "hidden": h, "dtype": str(dtype)},
                     bytes=5 * rows * h * size),  # forward reads x, writes y; backward reads x, dy, writes dx
        # FLOPs as the original computes them: every padded position through the dense layers
        harness.Case("bert_layer", padded_inputs("bert_layer"),
                     params={**s, "dtype": str(dtype), "real_tokens": real_tokens}, flops=layer_flops,
                     items={"tokens": real_tokens}),
        harness.Case("bert_model", padded_inputs("bert_model"),
                     params={**s, "dtype": str(dtype), "real_tokens": real_tokens}, flops=s["layers"] * layer_flops,
                     items={"tokens": real_tokens}),
    ]
    return harness.Benchmark("layers", cases, {"original": original, "semvlp": ours}, baseline="original",
                             budget_s=10 if args.quick else 60, rounds=1 if args.quick else 3,
                             description=build.__doc__)


if __name__ == "__main__":
    raise SystemExit(harness.main(build))
