"""Image-text retrieval recall from a score matrix, and batched scoring of every (text, image) pair."""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def recall_at_k(scores: torch.Tensor, text_to_image: Sequence[int] | torch.Tensor,
                ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k in both directions.

    Args:
        scores: (num_texts, num_images), higher = better match.
        text_to_image: (num_texts,) index of the ground-truth image of each text (an image may have several
            texts).
        ks: cut-offs.

    Returns:
        {"text_to_image/R@k": ..., "image_to_text/R@k": ...}: a text is found when its image ranks in the
        top k images; an image is found when any of its texts ranks in the top k texts.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores: expected (num_texts, num_images), got shape {tuple(scores.shape)}")
    target = torch.as_tensor(text_to_image, dtype=torch.long, device=scores.device)
    num_texts, num_images = scores.shape
    if target.shape != (num_texts,):
        raise ValueError(f"text_to_image: expected {num_texts} entries, got shape {tuple(target.shape)}")
    if num_texts and (target.min() < 0 or target.max() >= num_images):
        raise ValueError(f"text_to_image: expected image indices in [0, {num_images}), "
                         f"got values in [{int(target.min())}, {int(target.max())}]")
    has_text = torch.zeros(num_images, dtype=torch.bool, device=scores.device)
    has_text[target] = True
    if not has_text.all():
        raise ValueError(f"text_to_image: images {(~has_text).nonzero().flatten().tolist()} have no text")
    # Rank of the true image for each text: how many images score strictly higher.
    true_scores = scores.gather(1, target[:, None])
    text_rank = (scores > true_scores).sum(dim=1)
    # For each text, the rank of that text within its image's column; an image takes its best text.
    column_of_true_image = scores.t().index_select(0, target)          # (num_texts, num_texts)
    rank_within_image = (column_of_true_image > true_scores).sum(dim=1)
    image_rank = torch.full((num_images,), num_texts, dtype=rank_within_image.dtype, device=scores.device)
    image_rank = image_rank.scatter_reduce(0, target, rank_within_image, reduce="amin")
    result = {}
    for k in ks:
        result[f"text_to_image/R@{k}"] = (text_rank < k).float().mean().item()
        result[f"image_to_text/R@{k}"] = (image_rank < k).float().mean().item()
    return result


def score_all_pairs(score_pairs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], num_texts: int,
                    num_images: int, batch_size: int = 256) -> torch.Tensor:
    """(num_texts, num_images) scores, computed `batch_size` pairs at a time.

    `score_pairs(text_indices, image_indices)` gets two equally long int64 tensors and returns one score per
    pair (e.g. the ITM head's matching logit over a packed batch of those pairs).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size}")
    texts = torch.arange(num_texts).repeat_interleave(num_images)
    images = torch.arange(num_images).repeat(num_texts)
    chunks = [score_pairs(texts[i:i + batch_size], images[i:i + batch_size]).detach().float().cpu()
              for i in range(0, texts.numel(), batch_size)]
    return torch.cat(chunks).view(num_texts, num_images)
