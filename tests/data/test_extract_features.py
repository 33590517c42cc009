"""`semvlp data features`: grid features of tiny random Hugging Face backbones and regions of a random Faster
R-CNN, written as TSV/HDF5 and read back with the readers; resuming skips the images already written."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from semvlp.cli import main
from semvlp.data.extract_features import (DetectorExtractor, GridExtractor, cell_boxes, extract_features,
                                          list_images)
from semvlp.data.formats import open_features

transformers = pytest.importorskip("transformers")

SIZES = {"wide": (50, 30), "tall": (20, 60), "square": (33, 33)}  # id -> (width, height)
PATCH, SIDE = 8, 32  # tiny ViT: 32 x 32 input, 4 x 4 patches


def _write_images(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (image_id, (width, height)) in enumerate(sizes.items()):
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{image_id}.{'png' if i % 2 else 'jpg'}")
    return folder


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=SIDE, patch_size=PATCH)
    transformers.ViTModel(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": SIDE, "width": SIDE}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    transformers.ResNetModel(config).save_pretrained(folder)
    transformers.ConvNextImageProcessor(size={"shortest_edge": 64}).save_pretrained(folder)
    return folder


def _close(store):
    if store._handle is not None:
        store._handle.close()


def _check_inside(record):
    boxes = record.boxes
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= record.width + 1e-4).all() and (boxes[:, 3] <= record.height + 1e-4).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


@pytest.mark.parametrize("fmt", ["tsv", "h5"])
def test_grid_features_read_back_per_patch(tmp_path, vit, fmt):
    images = _write_images(tmp_path / "images", SIZES)
    summary = extract_features(images, tmp_path / "out", GridExtractor(vit), fmt=fmt, batch_size=2, progress=False)
    assert (summary.written, summary.skipped) == (3, 0)
    store = open_features(tmp_path / "out", fmt, feature_dim=16, num_region_labels=1)
    assert sorted(store.ids()) == sorted(SIZES)
    for image_id, (width, height) in SIZES.items():
        record = store[image_id]
        assert (record.width, record.height) == (width, height)
        assert record.features.shape == (16, 16)
        assert (record.object_ids == -1).all() and (record.attr_ids == -1).all()
        _check_inside(record)
        # the boxes tile the whole image: 4 x 4 cells
        np.testing.assert_allclose(record.boxes[-1], [width * 3 / 4, height * 3 / 4, width, height], rtol=1e-6)
    _close(store)


def test_grid_features_are_the_patch_tokens_in_box_order(tmp_path, vit):
    """Region k is patch token k (row-major, after the class token) of the whole image resized to the input."""
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    regions = GridExtractor(vit)([("a", image)])[0]
    processor = transformers.AutoImageProcessor.from_pretrained(vit)
    model = transformers.AutoModel.from_pretrained(vit).eval()
    resized = image.resize((SIDE, SIDE), Image.BICUBIC)
    pixels = processor(images=[resized], do_resize=False, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tokens = model(pixel_values=pixels).last_hidden_state[0, 1:]
    np.testing.assert_allclose(regions.features, tokens.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(regions.boxes[5], [12.5, 7.5, 25.0, 15.0])  # row 1, column 1 of a 50 x 30 image


def test_grid_option_average_pools_cells(tmp_path, vit):
    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (60, 20, 3), dtype=np.uint8))
    patches = GridExtractor(vit)([("a", image)])[0]
    pooled = GridExtractor(vit, grid=2)([("a", image)])[0]
    assert pooled.features.shape == (4, 16)
    top_left = patches.features.reshape(4, 4, 16)[:2, :2].mean(axis=(0, 1))
    np.testing.assert_allclose(pooled.features[0], top_left, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled.boxes, cell_boxes(2, 2, 20, 60))
    np.testing.assert_allclose(pooled.boxes[3], [10, 30, 20, 60])


def test_convolutional_backbone_gives_one_region_per_map_cell(tmp_path, resnet):
    images = _write_images(tmp_path / "images", SIZES)
    extract_features(images, tmp_path / "out", GridExtractor(resnet, grid=3), progress=False)
    store = open_features(tmp_path / "out", "tsv")
    for image_id in SIZES:
        record = store[image_id]
        assert record.features.shape == (9, 16)
        _check_inside(record)


class _Counting:
    def __init__(self, extractor):
        self.extractor, self.images = extractor, []

    def __call__(self, batch):
        self.images += [image_id for image_id, _ in batch]
        return self.extractor(batch)


@pytest.mark.parametrize("fmt", ["tsv", "h5"])
def test_rerun_extracts_only_new_images(tmp_path, vit, fmt):
    images = _write_images(tmp_path / "images", {k: SIZES[k] for k in ("wide", "tall")})
    extractor = _Counting(GridExtractor(vit))
    extract_features(images, tmp_path / "out", extractor, fmt=fmt, progress=False)
    store = open_features(tmp_path / "out", fmt)
    first = store["wide"].features
    _close(store)
    _write_images(images, SIZES)  # adds "square"
    summary = extract_features(images, tmp_path / "out", extractor, fmt=fmt, progress=False)
    assert (summary.written, summary.skipped) == (1, 2)
    assert sorted(extractor.images) == ["square", "tall", "wide"]
    store = open_features(tmp_path / "out", fmt)
    assert len(store) == 3
    np.testing.assert_array_equal(store["wide"].features, first)
    _close(store)


def test_rerun_redoes_a_tsv_line_cut_off(tmp_path, vit):
    images = _write_images(tmp_path / "images", SIZES)
    extract_features(images, tmp_path / "out", GridExtractor(vit), progress=False)
    path = tmp_path / "out" / "features.tsv"
    lines = path.read_bytes().splitlines(keepends=True)
    cut = lines[-1].split(b"\t")[0].decode()
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:40])
    extractor = _Counting(GridExtractor(vit))
    extract_features(images, tmp_path / "out", extractor, progress=False)
    assert extractor.images == [cut]
    assert sorted(open_features(tmp_path / "out", "tsv").ids()) == sorted(SIZES)


def test_rerun_redoes_an_incomplete_hdf5_group(tmp_path, vit):
    import h5py

    images = _write_images(tmp_path / "images", SIZES)
    extract_features(images, tmp_path / "out", GridExtractor(vit), fmt="h5", progress=False)
    with h5py.File(tmp_path / "out" / "features.h5", "a") as f:
        del f["tall"].attrs["img_w"]
    extractor = _Counting(GridExtractor(vit))
    extract_features(images, tmp_path / "out", extractor, fmt="h5", progress=False)
    assert extractor.images == ["tall"]
    assert open_features(tmp_path / "out", "h5")["tall"].width == SIZES["tall"][0]


def test_bad_inputs_are_named(tmp_path, vit):
    with pytest.raises(ValueError, match="images: no"):
        list_images(tmp_path)
    _write_images(tmp_path / "dup", {"a": (8, 8), "b": (8, 8)})
    (tmp_path / "dup" / "a.png").write_bytes((tmp_path / "dup" / "b.png").read_bytes())
    with pytest.raises(ValueError, match="'a'"):
        list_images(tmp_path / "dup")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="x.jpg"):
        extract_features(tmp_path / "broken", tmp_path / "out", GridExtractor(vit), progress=False)
    with pytest.raises(ValueError, match="backbone"):
        GridExtractor(tmp_path / "no-model")
    with pytest.raises(ValueError, match="grid"):
        GridExtractor(vit, grid=0)
    with pytest.raises(ValueError, match="fmt"):
        extract_features(tmp_path / "dup", tmp_path / "out", GridExtractor(vit), fmt="npz")


def test_cli_writes_grid_features(tmp_path, vit, capsys):
    images = _write_images(tmp_path / "images", SIZES)
    out = tmp_path / "out"
    argv = ["data", "features", "--images", str(images), "--out", str(out), "--backbone", str(vit), "--grid", "2",
            "--format", "h5", "--batch-size", "2", "--workers", "0"]
    assert main(argv) == 0
    assert "3 images" in capsys.readouterr().out
    store = open_features(out, "h5")
    assert store["tall"].features.shape == (4, 16)
    _close(store)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "0 images" in printed and "3 already" in printed


@pytest.fixture(scope="module")
def detector_weights(tmp_path_factory):
    detection = pytest.importorskip("torchvision.models.detection")
    torch.manual_seed(0)
    model = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5)
    path = tmp_path_factory.mktemp("frcnn") / "frcnn.pt"
    torch.save(model.state_dict(), path)
    return path


def _detector(weights, **kwargs):
    return DetectorExtractor(weights, min_size=64, max_size=128, **kwargs)


def test_detector_regions_read_back(tmp_path, detector_weights):
    images = _write_images(tmp_path / "images", SIZES)
    extract_features(images, tmp_path / "out", _detector(detector_weights, max_regions=4, score_threshold=0.0),
                     batch_size=2, progress=False)
    store = open_features(tmp_path / "out", "tsv", feature_dim=1024, num_region_labels=5)
    for image_id, (width, height) in SIZES.items():
        record = store[image_id]
        assert (record.width, record.height) == (width, height)
        assert record.features.shape == (4, 1024)
        assert ((record.object_ids >= 1) & (record.object_ids < 5)).all()  # 0 is background
        _check_inside(record)


def test_detector_features_belong_to_their_boxes(detector_weights):
    extractor = _detector(detector_weights, max_regions=3, score_threshold=0.0)
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    regions = extractor([("a", image)])[0]
    assert np.all(np.diff(regions.scores) <= 0)
    with torch.no_grad():
        again = extractor._box_features(image, torch.from_numpy(regions.boxes))
    np.testing.assert_allclose(regions.features, again, rtol=1e-3, atol=1e-3)


def test_detector_without_detections_keeps_the_whole_image(detector_weights):
    extractor = _detector(detector_weights)
    extractor.model.roi_heads.score_thresh = 1.0  # nothing passes
    regions = extractor([("a", Image.new("RGB", (40, 24)))])[0]
    np.testing.assert_array_equal(regions.boxes, [[0, 0, 40, 24]])
    assert regions.object_ids.tolist() == [-1] and regions.features.shape == (1, 1024)


def test_detector_bad_weights_are_named(tmp_path, detector_weights):
    with pytest.raises(ValueError, match="does not exist"):
        _detector(tmp_path / "missing.pt")
    torch.save({"other": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a fasterrcnn_resnet50_fpn"):
        _detector(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="max_regions"):
        _detector(detector_weights, max_regions=0)


def test_missing_torchvision_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchvision.models.detection", None)  # as if torchvision were not installed
    with pytest.raises(ImportError, match=r"semvlp\[features\]"):
        DetectorExtractor(tmp_path / "frcnn.pt")
    images = _write_images(tmp_path / "images", {"a": (8, 8)})
    assert main(["data", "features", "--images", str(images), "--out", str(tmp_path / "out"),
                 "--detector", str(tmp_path / "frcnn.pt")]) == 1
    assert "torchvision" in capsys.readouterr().err
