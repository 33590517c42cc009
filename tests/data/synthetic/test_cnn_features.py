"""Pooled CNN region features: seeded, sized, telling colours apart, and written by `semvlp data synth`."""

import numpy as np
import pytest

from semvlp.cli import main
from semvlp.data.corpus import load_corpus
from semvlp.data.synthetic.cnn_features import RegionCNN
from semvlp.data.synthetic import generate_split
from semvlp.data.synthetic.scenes import BACKGROUND


def _image_with_square(colour, corner, size=64):
    image = np.full((size, size, 3), BACKGROUND, np.uint8)
    image[corner:corner + 12, corner:corner + 12] = colour
    return image, np.array([[corner, corner, corner + 12, corner + 12]], np.float32)


def test_features_are_seeded_and_sized():
    image, box = _image_with_square((220, 40, 40), 20)
    boxes = np.concatenate([box, [[0, 0, 1, 1], [50, 60, 64, 64]]])  # a one-pixel box and one at the border
    features = RegionCNN(64, seed=1)(image, boxes)
    assert features.shape == (3, 64) and features.dtype == np.float32 and np.isfinite(features).all()
    np.testing.assert_array_equal(features, RegionCNN(64, seed=1)(image, boxes))
    assert not np.allclose(features, RegionCNN(64, seed=2)(image, boxes))
    assert np.abs(features[0] - features[1]).max() > 0.05  # the square's box and a box of background


def test_features_tell_colours_apart_but_not_positions():
    cnn = RegionCNN(32)
    red_here, red_there, blue = (cnn(*_image_with_square(c, corner)) for c, corner in
                                 (((220, 40, 40), 16), ((220, 40, 40), 32), ((40, 40, 220), 16)))
    # A shift by a multiple of the feature map's stride (4) moves the pooled cells with the square.
    np.testing.assert_allclose(red_here, red_there, rtol=1e-5, atol=1e-6)
    assert np.abs(red_here - blue).max() > 0.05


def test_boxes_of_a_non_square_image_pool_their_own_cells():
    """A square far to the right of a wide image (x beyond its height) pools the same cells as the same square
    in a small square image: x indexes the width of the feature map, y its height."""
    cnn = RegionCNN(32)
    colour, y, x_wide, x_small = (220, 40, 40), 20, 160, 20  # the shift, 140, is a multiple of the stride
    wide, small = np.full((48, 224, 3), BACKGROUND, np.uint8), np.full((48, 48, 3), BACKGROUND, np.uint8)
    wide[y:y + 12, x_wide:x_wide + 12] = colour
    small[y:y + 12, x_small:x_small + 12] = colour
    box = lambda x: np.array([[x, y, x + 12, y + 12]], np.float32)  # noqa: E731
    np.testing.assert_allclose(cnn(wide, box(x_wide)), cnn(small, box(x_small)), rtol=1e-5, atol=1e-6)


def test_feature_dim_must_divide_into_the_pooled_grid():
    with pytest.raises(ValueError, match="feature_dim: expected a positive multiple of 4 for pooled CNN features, "
                                         "got 30"):
        RegionCNN(30)


def test_data_synth_writes_cnn_features(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--train", "3", "--val", "1", "--novel", "1",
                 "--region-features", "cnn", "--feature-dim", "32"]) == 0
    assert "cnn features" in capsys.readouterr().out
    expected = generate_split("val", 1, seed=0, feature_dim=32, features="cnn")[0].record
    written = load_corpus(tmp_path, "val").features[expected.image_id]
    np.testing.assert_allclose(written.features, expected.features, rtol=1e-6)
    hand = generate_split("val", 1, seed=0, feature_dim=32 * 2)[0].record
    assert not np.allclose(hand.features[:, :32], written.features)


def test_unknown_region_features_are_an_error():
    with pytest.raises(ValueError, match=r"features: expected one of \('hand', 'cnn'\), got 'sift'"):
        generate_split("val", 1, features="sift")
