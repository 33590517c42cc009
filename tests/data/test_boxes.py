"""Box features of non-square images: x goes with the width, y with the height, all the way from the feature
files through ImageRecord.normalised_boxes and box_features to a collated batch.

Every synthetic image is square, so these tests use images of 200 x 80 pixels (width x height), where a swap of
width and height changes every number.
"""

import base64
import csv

import h5py
import numpy as np
import pytest
import torch

from semvlp.data.boxes import box_features
from semvlp.data.collate import Collator
from semvlp.data.dataset import Sample
from semvlp.data.formats import open_features
from semvlp.data.formats.features import write_features
from semvlp.data.formats.lxmert_tsv import FIELDS
from semvlp.data.records import ImageRecord
from semvlp.data.tokenizer import WordPieceTokenizer

WIDTH, HEIGHT = 200, 80
PIXEL_BOXES = np.array([[20, 8, 100, 72], [150, 0, 200, 40]], np.float32)
# Each corner divided by the image side of its own axis.
NORMALISED = np.array([[0.1, 0.1, 0.5, 0.9], [0.75, 0.0, 1.0, 0.5]], np.float32)
# xyxy, then width, height and area of each normalised box.
FEATURES_7 = np.array([[0.1, 0.1, 0.5, 0.9, 0.4, 0.8, 0.32], [0.75, 0.0, 1.0, 0.5, 0.25, 0.5, 0.125]], np.float32)


def _record(image_id="wide"):
    rng = np.random.default_rng(0)
    return ImageRecord(image_id, WIDTH, HEIGHT, PIXEL_BOXES.copy(), rng.random((2, 8), dtype=np.float32),
                       np.array([3, -1]), np.array([-1, 2]))


def test_box_features_of_non_square_boxes():
    columns = {4: [0, 1, 2, 3], 5: [0, 1, 2, 3, 6], 7: [0, 1, 2, 3, 4, 5, 6]}  # 5 = xyxy + area
    for dim, kept in columns.items():
        expected = torch.from_numpy(FEATURES_7[:, kept])
        torch.testing.assert_close(box_features(torch.from_numpy(NORMALISED), dim), expected)


def test_normalised_boxes_divide_x_by_the_width_and_y_by_the_height():
    np.testing.assert_allclose(_record().normalised_boxes(), NORMALISED, rtol=0, atol=1e-7)


def _write_by_hand(folder, fmt, record):
    """The record in each format as its own specification lays it out (not through our writers)."""
    ints = lambda a: base64.b64encode(np.asarray(a, "<i8").tobytes()).decode()  # noqa: E731
    floats = lambda a: base64.b64encode(np.asarray(a, "<f4").tobytes()).decode()  # noqa: E731
    n = len(record.boxes)
    if fmt == "tsv":
        row = dict(img_id=record.image_id, img_h=HEIGHT, img_w=WIDTH, objects_id=ints(record.object_ids),
                   objects_conf=floats(np.ones(n)), attrs_id=ints(record.attr_ids), attrs_conf=floats(np.ones(n)),
                   num_boxes=n, boxes=floats(record.boxes), features=floats(record.features))
        with open(folder / "features.tsv", "w", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerow([row[name] for name in FIELDS])
    elif fmt == "h5":
        with h5py.File(folder / "features.h5", "w") as f:
            group = f.create_group(record.image_id)
            group.attrs["img_w"], group.attrs["img_h"] = WIDTH, HEIGHT
            group["features"], group["boxes"] = record.features, record.boxes
            group["objects_id"], group["attrs_id"] = record.object_ids, record.attr_ids
    else:
        (folder / "features_npz").mkdir()
        np.savez(folder / "features_npz" / f"{record.image_id}.npz", img_w=WIDTH, img_h=HEIGHT,
                 features=record.features, boxes=record.boxes, objects_id=record.object_ids,
                 attrs_id=record.attr_ids)


@pytest.mark.parametrize("fmt", ["tsv", "h5", "npz"])
def test_readers_take_width_and_height_from_their_own_fields(tmp_path, fmt):
    _write_by_hand(tmp_path, fmt, _record())
    got = open_features(tmp_path, fmt)["wide"]
    assert (got.width, got.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(got.normalised_boxes(), NORMALISED, rtol=0, atol=1e-7)


@pytest.mark.parametrize("fmt", ["tsv", "h5", "npz"])
def test_writers_put_width_and_height_in_their_own_fields(tmp_path, fmt):
    path = write_features(tmp_path, fmt, [_record()])
    if fmt == "tsv":
        with open(path, newline="") as f:
            row = dict(zip(FIELDS, next(csv.reader(f, delimiter="\t"))))
        stored = int(row["img_w"]), int(row["img_h"])
    elif fmt == "h5":
        with h5py.File(path, "r") as f:
            stored = int(f["wide"].attrs["img_w"]), int(f["wide"].attrs["img_h"])
    else:
        with np.load(path / "wide.npz") as data:
            stored = int(data["img_w"]), int(data["img_h"])
    assert stored == (WIDTH, HEIGHT)


def test_collated_region_boxes_of_a_non_square_image():
    tokenizer = WordPieceTokenizer(max_length=16)
    record = _record()
    sample = Sample(np.array([tokenizer.cls_id, tokenizer.first_word_id, tokenizer.sep_id]), np.zeros(0, np.int64),
                    record.features, record.normalised_boxes(), record.object_ids, 1, -100, (0,), "none")
    collator = Collator(tokenizer.mask_id, tokenizer.first_word_id, tokenizer.vocab_size, box_dim=7)
    batch = collator([sample])
    torch.testing.assert_close(batch.region_boxes, torch.from_numpy(FEATURES_7))
