"""Retrieval recall against a brute-force computation, and batched pair scoring."""

import pytest
import torch

from semvlp.eval import recall_at_k, score_all_pairs


def _brute_force(scores, target, k):
    num_texts, num_images = len(scores), len(scores[0])
    t2i = sum(sorted(range(num_images), key=lambda i: -scores[t][i])[:k].count(target[t]) > 0 for t in range(num_texts))
    i2t = 0
    for image in range(num_images):
        top = sorted(range(num_texts), key=lambda t: -scores[t][image])[:k]
        i2t += any(target[t] == image for t in top)
    return t2i / num_texts, i2t / num_images


@pytest.mark.parametrize("seed", range(4))
def test_recall_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    num_images = 13
    target = torch.cat([torch.arange(num_images), torch.randint(0, num_images, (20,), generator=g)]).tolist()
    scores = torch.randn(len(target), num_images, generator=g)
    scores[torch.arange(len(target)), torch.tensor(target)] += 1.0
    result = recall_at_k(scores, target, ks=(1, 5, 10))
    for k in (1, 5, 10):
        t2i, i2t = _brute_force(scores.tolist(), target, k)
        assert result[f"text_to_image/R@{k}"] == pytest.approx(t2i)
        assert result[f"image_to_text/R@{k}"] == pytest.approx(i2t)


def test_perfect_scores_give_full_recall():
    result = recall_at_k(torch.eye(5), list(range(5)))
    assert all(v == 1.0 for v in result.values())


def test_bad_targets_are_named():
    with pytest.raises(ValueError, match=r"text_to_image: expected image indices in \[0, 3\)"):
        recall_at_k(torch.zeros(2, 3), [0, 3])
    with pytest.raises(ValueError, match=r"images \[2\] have no text"):
        recall_at_k(torch.zeros(2, 3), [0, 1])


def test_score_all_pairs_batches_every_pair_once():
    seen = []

    def score(texts, images):
        seen.append(len(texts))
        return texts.float() * 10 + images.float()

    scores = score_all_pairs(score, num_texts=4, num_images=3, batch_size=5)
    assert torch.equal(scores, torch.arange(4)[:, None] * 10.0 + torch.arange(3)[None, :])
    assert seen == [5, 5, 2]
