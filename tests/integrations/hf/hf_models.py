"""Small random Hugging Face BERT, VisualBERT and LXMERT pretraining models with padded batches and labels."""

from __future__ import annotations

import torch
from transformers import (BertConfig, BertForPreTraining, LxmertConfig, LxmertForPreTraining, VisualBertConfig,
                          VisualBertForPreTraining)

VOCAB, HIDDEN, HEADS, FFN = 97, 32, 4, 64
BATCH, TEXT, REGIONS, FEAT = 3, 11, 5, 16


def _text(g: torch.Generator):
    ids = torch.randint(4, VOCAB, (BATCH, TEXT), generator=g)
    mask = torch.ones(BATCH, TEXT, dtype=torch.long)
    mask[1, 7:] = 0   # padded text
    mask[2, 1:] = 0   # a single real token
    labels = torch.where(torch.rand(BATCH, TEXT, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    labels[0, 1] = ids[0, 1]
    return ids, mask, labels


def _regions(g: torch.Generator):
    feats = torch.randn(BATCH, REGIONS, FEAT, generator=g)
    mask = torch.ones(BATCH, REGIONS, dtype=torch.long)
    mask[0, 3:] = 0   # padded regions
    return feats, mask


def bert(dropout: float = 0.0, seed: int = 0, **config):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                     intermediate_size=FFN, max_position_embeddings=32, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout, **config)
    ids, mask, labels = _text(g)
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=(torch.arange(TEXT) > 5).long().expand(BATCH, -1),
                  labels=labels, next_sentence_label=torch.tensor([0, 1, 0]))
    return BertForPreTraining(cfg), inputs


def visual_bert(dropout: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    cfg = VisualBertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                           intermediate_size=FFN, max_position_embeddings=32, visual_embedding_dim=FEAT,
                           hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    ids, mask, labels = _text(g)
    feats, vmask = _regions(g)
    labels = torch.cat([labels, torch.full((BATCH, REGIONS), -100)], dim=1)
    inputs = dict(input_ids=ids, attention_mask=mask, visual_embeds=feats, visual_attention_mask=vmask,
                  labels=labels, sentence_image_labels=torch.tensor([1, 0, 1]))
    return VisualBertForPreTraining(cfg), inputs


def lxmert(dropout: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    cfg = LxmertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=FFN,
                       l_layers=2, x_layers=2, r_layers=1, visual_feat_dim=FEAT, visual_pos_dim=4, num_qa_labels=7,
                       num_object_labels=11, num_attr_labels=5, hidden_dropout_prob=dropout,
                       attention_probs_dropout_prob=dropout)
    ids, mask, labels = _text(g)
    feats, vmask = _regions(g)
    conf = vmask.float()
    obj_labels = {"obj": (torch.randint(0, 11, (BATCH, REGIONS), generator=g), conf),
                  "attr": (torch.randint(0, 5, (BATCH, REGIONS), generator=g), conf),
                  "feat": (torch.randn(BATCH, REGIONS, FEAT, generator=g), conf)}
    inputs = dict(input_ids=ids, attention_mask=mask, visual_feats=feats, visual_pos=torch.rand(BATCH, REGIONS, 4),
                  visual_attention_mask=vmask, labels=labels, obj_labels=obj_labels,
                  matched_label=torch.tensor([1, 0, 1]), ans=torch.tensor([2, 0, 6]))
    return LxmertForPreTraining(cfg), inputs


FAMILIES = {"bert": bert, "visual_bert": visual_bert, "lxmert": lxmert}


def output_tensors(output) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face model output, by field name (nested tuples flattened)."""
    found = {}

    def visit(name, value):
        if isinstance(value, torch.Tensor):
            found[name] = value
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                visit(f"{name}.{i}", item)

    for key, value in output.items():
        visit(key, value)
    return found


def assert_outputs_close(actual, expected) -> None:
    """Every output tensor of two model outputs within the drop-in's tolerance (tests/tolerances.py)."""
    from tolerances import PATCH_OUTPUT_ATOL, max_error

    got, want = output_tensors(actual), output_tensors(expected)
    assert got.keys() == want.keys() and want
    for name in want:
        err = max_error(got[name], want[name])
        assert err <= PATCH_OUTPUT_ATOL, f"{name}: max error {err:.2e}"
