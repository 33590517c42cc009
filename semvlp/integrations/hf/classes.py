"""The fused classes patched into Hugging Face BERT, VisualBERT and LXMERT models (transformers 5.x).

Each is the mixin from `fused.py` in front of the exact Hugging Face class it replaces, defined at module
level so a patched model still pickles. FUSED maps Hugging Face class -> (fused class, piece).
"""

from __future__ import annotations

from transformers.models.bert import modeling_bert as bert
from transformers.models.lxmert import modeling_lxmert as lxmert
from transformers.models.visual_bert import modeling_visual_bert as visual_bert

from .fused import (FusedBertSelfAttention, FusedDenseAddNorm, FusedIntermediate, FusedLxmertAttention,
                    FusedVisualBertSelfAttention)
from .wrappers import ATTENTION_CHILDREN, DENSE_ADD_NORM_CHILDREN, INTERMEDIATE_CHILDREN

ATTENTION, FEED_FORWARD, ATTENTION_OUTPUT = "self-attention", "feed-forward", "attention output"


class SemvlpBertSelfAttention(FusedBertSelfAttention, bert.BertSelfAttention):
    pass


class SemvlpBertSelfOutput(FusedDenseAddNorm, bert.BertSelfOutput):
    pass


class SemvlpBertIntermediate(FusedIntermediate, bert.BertIntermediate):
    pass


class SemvlpBertOutput(FusedDenseAddNorm, bert.BertOutput):
    pass


class SemvlpVisualBertSelfAttention(FusedVisualBertSelfAttention, visual_bert.VisualBertSelfAttention):
    pass


class SemvlpVisualBertSelfOutput(FusedDenseAddNorm, visual_bert.VisualBertSelfOutput):
    pass


class SemvlpVisualBertIntermediate(FusedIntermediate, visual_bert.VisualBertIntermediate):
    pass


class SemvlpVisualBertOutput(FusedDenseAddNorm, visual_bert.VisualBertOutput):
    pass


class SemvlpLxmertAttention(FusedLxmertAttention, lxmert.LxmertAttention):
    pass


class SemvlpLxmertAttentionOutput(FusedDenseAddNorm, lxmert.LxmertAttentionOutput):
    pass


class SemvlpLxmertIntermediate(FusedIntermediate, lxmert.LxmertIntermediate):
    pass


class SemvlpLxmertOutput(FusedDenseAddNorm, lxmert.LxmertOutput):
    pass


FUSED = {
    bert.BertSelfAttention: (SemvlpBertSelfAttention, ATTENTION),
    bert.BertSelfOutput: (SemvlpBertSelfOutput, ATTENTION_OUTPUT),
    bert.BertIntermediate: (SemvlpBertIntermediate, FEED_FORWARD),
    bert.BertOutput: (SemvlpBertOutput, FEED_FORWARD),
    visual_bert.VisualBertSelfAttention: (SemvlpVisualBertSelfAttention, ATTENTION),
    visual_bert.VisualBertSelfOutput: (SemvlpVisualBertSelfOutput, ATTENTION_OUTPUT),
    visual_bert.VisualBertIntermediate: (SemvlpVisualBertIntermediate, FEED_FORWARD),
    visual_bert.VisualBertOutput: (SemvlpVisualBertOutput, FEED_FORWARD),
    lxmert.LxmertAttention: (SemvlpLxmertAttention, ATTENTION),
    lxmert.LxmertAttentionOutput: (SemvlpLxmertAttentionOutput, ATTENTION_OUTPUT),
    lxmert.LxmertIntermediate: (SemvlpLxmertIntermediate, FEED_FORWARD),
    lxmert.LxmertOutput: (SemvlpLxmertOutput, FEED_FORWARD),
}


def children_read(fused_class: type) -> dict[str, tuple[type, ...]]:
    """The children a fused class reads directly (name -> the plain classes it can read)."""
    if issubclass(fused_class, FusedDenseAddNorm):
        return DENSE_ADD_NORM_CHILDREN
    if issubclass(fused_class, FusedIntermediate):
        return INTERMEDIATE_CHILDREN
    return ATTENTION_CHILDREN
