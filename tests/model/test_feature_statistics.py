"""Region features are standardised with per-dimension statistics that travel with the weights."""

import dataclasses

import numpy as np
import pytest
import torch

from semvlp import SemVLPModel
from semvlp.data import random_batch
from semvlp.data.corpus import feature_statistics
from semvlp.data.synthetic import generate_split, to_corpus


def test_identity_until_statistics_are_set(tiny_config):
    embeddings = SemVLPModel(tiny_config).region_embeddings
    features, boxes = torch.randn(7, tiny_config.visual_feat_dim), torch.rand(7, tiny_config.visual_pos_dim)
    before = embeddings(features, boxes)
    mean, std = torch.randn(tiny_config.visual_feat_dim), torch.rand(tiny_config.visual_feat_dim) + 0.5
    embeddings.set_feature_statistics(mean, std)
    torch.testing.assert_close(embeddings(features * std + mean, boxes), before)


def test_statistics_are_saved_and_loaded_with_the_weights(tiny_config):
    model = SemVLPModel(tiny_config).eval()
    dim = tiny_config.visual_feat_dim
    model.region_embeddings.set_feature_statistics(torch.full((dim,), 2.0), torch.full((dim,), 3.0))
    fresh = SemVLPModel(tiny_config).eval()
    fresh.load_state_dict(model.state_dict())
    batch = random_batch(tiny_config, 3, text_len=6, num_regions=4)
    args = (batch.input_ids, batch.region_features, batch.region_boxes, batch.layout)
    torch.testing.assert_close(fresh(*args), model(*args))


def test_a_bf16_module_with_fp32_statistics_takes_bf16_features(tiny_config):
    embeddings = SemVLPModel(tiny_config).region_embeddings
    dim = tiny_config.visual_feat_dim
    embeddings.set_feature_statistics(torch.full((dim,), 0.5), torch.full((dim,), 2.0))
    for parameter in embeddings.parameters():
        parameter.data = parameter.data.bfloat16()  # as DeepSpeed's bf16 engine does: parameters only
    out = embeddings(torch.randn(4, dim).bfloat16(), torch.rand(4, tiny_config.visual_pos_dim).bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_constant_dimensions_stay_finite(tiny_config):
    embeddings = SemVLPModel(tiny_config).region_embeddings
    dim = tiny_config.visual_feat_dim
    embeddings.set_feature_statistics(torch.zeros(dim), torch.zeros(dim))
    out = embeddings(torch.randn(4, dim), torch.rand(4, tiny_config.visual_pos_dim))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,mean,std,message", [
    ("mean", torch.zeros(3), torch.ones(12), r"mean: expected shape \(12,\)"),
    ("std", torch.zeros(12), torch.ones(12, 1), r"std: expected shape \(12,\)"),
    ("mean", torch.full((12,), float("nan")), torch.ones(12), r"mean: expected finite values"),
])
def test_bad_statistics_are_refused(tiny_config, name, mean, std, message):
    embeddings = SemVLPModel(dataclasses.replace(tiny_config, visual_feat_dim=12)).region_embeddings
    with pytest.raises(ValueError, match=message):
        embeddings.set_feature_statistics(mean, std)


def test_corpus_statistics_match_numpy_over_the_split():
    corpus = to_corpus(generate_split("train", 12, seed=5))
    every = np.concatenate([corpus.features[i].features for i in sorted({t.image_id for t in corpus.texts})])
    mean, std = corpus.feature_statistics()
    np.testing.assert_allclose(mean, every.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, every.std(axis=0), rtol=1e-5, atol=1e-6)
    few_mean, _ = corpus.feature_statistics(max_images=4)
    assert not np.allclose(few_mean, mean)  # a subsample of the images, not all of them


def test_statistics_of_no_images_are_refused():
    corpus = to_corpus(generate_split("train", 2, seed=5))
    with pytest.raises(ValueError, match="image_ids: expected at least one image"):
        feature_statistics(corpus.features, [])
