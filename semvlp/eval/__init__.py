"""Evaluation: VQA accuracy, retrieval recall."""

from .retrieval import recall_at_k, score_all_pairs
from .vqa import normalize_answer, soft_scores, vqa_accuracy, vqa_score

__all__ = ["normalize_answer", "vqa_score", "vqa_accuracy", "soft_scores", "recall_at_k", "score_all_pairs"]
