"""One pretraining batch for every model of the end-to-end benchmark, and the FLOPs a step needs.

`semvlp.data.random_batch` builds the packed batch semvlp trains on; `hf_inputs` turns the very same text,
regions, masks and targets into the padded keyword arguments of Hugging Face's LxmertForPreTraining,
VisualBertForPreTraining and BertForPreTraining.

FLOPs (`step_flops`) are the matmul work the step *needs*: real tokens only, the MLM and region heads on
the masked positions only, forward x 3 for forward + backward. A benchmark quotes the same number for
all its providers, so TFLOP/s and MFU are useful work per second (model FLOPs utilisation), and a model
that spends work on padding or on unmasked positions shows a lower figure, not a higher one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from semvlp.data import PretrainingBatch
from semvlp.model import SemVLPConfig

FORWARD_AND_BACKWARD = 3  # backward = 2 x forward (gradients of inputs and of weights)


@dataclass
class PaddedBatch:
    """The packed batch in padded (batch, length, ...) form; positions outside a sample hold padding."""

    input_ids: torch.Tensor         # (B, T) int64, 0 = padding
    text_mask: torch.Tensor         # (B, T) int64, 1 = real token
    mlm_labels: torch.Tensor        # (B, T) int64, -100 = not masked
    features: torch.Tensor          # (B, R, visual_feat_dim), masked regions zeroed
    boxes: torch.Tensor             # (B, R, visual_pos_dim)
    region_mask: torch.Tensor       # (B, R) int64, 1 = real region
    region_masked: torch.Tensor     # (B, R) float, 1 = masked region (a region-modelling target)
    region_labels: torch.Tensor     # (B, R) int64 object labels, -100 = not masked
    feature_targets: torch.Tensor   # (B, R, visual_feat_dim) original features of the masked regions
    itm_labels: torch.Tensor        # (B,) 1 = caption matches
    qa_labels: torch.Tensor         # (B,) answer index, -100 = none


def _scatter(values: torch.Tensor, lengths: list[int], fill, width: int):
    """Packed rows -> (B, width, ...) padded with `fill`, plus the (sample, position) of every packed row."""
    counts = torch.tensor(lengths)
    sample = torch.repeat_interleave(torch.arange(len(lengths)), counts)
    position = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    out = torch.full((len(lengths), width) + tuple(values.shape[1:]), fill, dtype=values.dtype)
    out[sample, position] = values
    return out, sample, position


def padded(batch: PretrainingBatch) -> PaddedBatch:
    layout = batch.layout
    text_lengths, region_counts = layout.text_lengths(), layout.region_counts()
    width_t, width_r = max(text_lengths), max(region_counts)
    ids, t_sample, t_pos = _scatter(batch.input_ids, text_lengths, 0, width_t)
    text_mask, _, _ = _scatter(torch.ones_like(batch.input_ids), text_lengths, 0, width_t)
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels[t_sample[batch.mlm_positions], t_pos[batch.mlm_positions]] = batch.mlm_targets
    features, r_sample, r_pos = _scatter(batch.region_features, region_counts, 0.0, width_r)
    boxes, _, _ = _scatter(batch.region_boxes, region_counts, 0.0, width_r)
    region_mask, _, _ = _scatter(torch.ones(layout.total_regions, dtype=torch.int64), region_counts, 0, width_r)
    where = (r_sample[batch.mrm_positions], r_pos[batch.mrm_positions])
    region_masked = torch.zeros(region_mask.shape)
    region_masked[where] = 1.0
    region_labels = torch.full(region_mask.shape, -100, dtype=torch.int64)
    region_labels[where] = batch.mrm_label_targets
    feature_targets = torch.zeros_like(features)
    feature_targets[where] = batch.mrm_feature_targets
    return PaddedBatch(ids, text_mask, mlm_labels, features, boxes, region_mask, region_masked, region_labels,
                       feature_targets, batch.itm_labels, batch.qa_labels)


def lxmert_inputs(p: PaddedBatch) -> dict:
    """LxmertForPreTraining keywords: MLM, object labels and feature regression on the masked regions, ITM, QA."""
    return dict(input_ids=p.input_ids, attention_mask=p.text_mask, token_type_ids=torch.zeros_like(p.input_ids),
                visual_feats=p.features, visual_pos=p.boxes, visual_attention_mask=p.region_mask,
                labels=p.mlm_labels, matched_label=p.itm_labels, ans=p.qa_labels,
                obj_labels={"obj": (p.region_labels, p.region_masked), "feat": (p.feature_targets, p.region_masked)})


def visual_bert_inputs(p: PaddedBatch) -> dict:
    """VisualBertForPreTraining keywords: MLM over the text part, sentence-image matching (its two tasks)."""
    region_labels = torch.full(p.region_mask.shape, -100, dtype=torch.int64)
    return dict(input_ids=p.input_ids, attention_mask=p.text_mask, token_type_ids=torch.zeros_like(p.input_ids),
                visual_embeds=p.features, visual_attention_mask=p.region_mask,
                labels=torch.cat([p.mlm_labels, region_labels], dim=1), sentence_image_labels=p.itm_labels)


def bert_inputs(p: PaddedBatch) -> dict:
    """BertForPreTraining keywords on the text alone: MLM and next-sentence prediction (the ITM labels)."""
    return dict(input_ids=p.input_ids, attention_mask=p.text_mask, token_type_ids=torch.zeros_like(p.input_ids),
                labels=p.mlm_labels, next_sentence_label=p.itm_labels)


def to_device(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    return value


# ---- FLOPs --------------------------------------------------------------------------------------------------

def _layer_dense(tokens: int, c: SemVLPConfig) -> int:
    """QKV, output projection and the two feed-forward matmuls of one layer."""
    h, f = c.hidden_size, c.intermediate_size
    return 2 * tokens * (4 * h * h + 2 * h * f)


def _attention(pairs: int, c: SemVLPConfig) -> int:
    """Scores and weighted sum over `pairs` (query, key) pairs: 2 matmuls of 2 * pairs * hidden each."""
    return 4 * pairs * c.hidden_size


def _cross(tokens: int, pairs: int, c: SemVLPConfig) -> int:
    """A cross-attention block: query, key/value and output projections, plus attention over `pairs`."""
    return 2 * tokens * 4 * c.hidden_size ** 2 + _attention(pairs, c)


def step_flops(batch: PretrainingBatch, c: SemVLPConfig, mode: str) -> int:
    """Model FLOPs of one SemVLP pretraining step (forward + backward) in "single" or "two" stream mode."""
    layout, h = batch.layout, c.hidden_size
    t = torch.tensor(layout.text_lengths(), dtype=torch.int64)
    r = torch.tensor(layout.region_counts(), dtype=torch.int64)
    n_text, n_regions = int(t.sum()), int(r.sum())
    tokens = n_text + n_regions
    forward = 2 * n_regions * h * (c.visual_feat_dim + c.visual_pos_dim)
    for i in range(c.num_hidden_layers):
        forward += _layer_dense(tokens, c)
        if mode == "single":
            forward += _attention(int(((t + r) ** 2).sum()), c)
        else:
            forward += _attention(int((t ** 2 + r ** 2).sum()), c)
            if i in c.cross_layers:
                forward += _cross(tokens, int(2 * (t * r).sum()), c)
    n_mlm, n_mrm, b = batch.mlm_positions.numel(), batch.mrm_positions.numel(), layout.batch_size
    forward += 2 * n_mlm * (h * h + h * c.vocab_size)
    forward += 2 * n_mrm * (h * h + h * c.visual_feat_dim + h * c.num_region_labels)
    forward += 2 * b * (h * h + 2 * h + 2 * h * h + 2 * h * c.num_qa_labels)
    return FORWARD_AND_BACKWARD * forward


def text_step_flops(batch: PretrainingBatch, c: SemVLPConfig) -> int:
    """Model FLOPs of a BERT pretraining step (MLM on the masked tokens, NSP) over the batch's text alone."""
    t = torch.tensor(batch.layout.text_lengths(), dtype=torch.int64)
    h, n_text = c.hidden_size, int(t.sum())
    forward = c.num_hidden_layers * (_layer_dense(n_text, c) + _attention(int((t ** 2).sum()), c))
    forward += 2 * batch.mlm_positions.numel() * (h * h + h * c.vocab_size)
    forward += 2 * batch.layout.batch_size * (h * h + 2 * h)
    return FORWARD_AND_BACKWARD * forward
