"""Evaluation: every metric (VQA accuracy, retrieval recall) and every evaluation loop (held-out pretraining
accuracy, the downstream tasks)."""

from ..data.answers import normalize_answer, soft_scores, vqa_score
from .retrieval import recall_at_k, score_all_pairs
from .vqa import vqa_accuracy

__all__ = ["normalize_answer", "vqa_score", "vqa_accuracy", "soft_scores", "recall_at_k", "score_all_pairs"]
