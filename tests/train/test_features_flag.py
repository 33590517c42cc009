"""`--features`: the feature files of a run named by paths and glob patterns (LXMERT's several TSVs per split, with
COCO_<split>_<id> image ids) instead of the data folder's own, with errors that name the argument."""

import dataclasses
import re

import numpy as np
import pytest

from semvlp.cli import main
from semvlp.data.formats.hdf5 import write_hdf5
from semvlp.data.formats.lxmert_tsv import write_tsv
from semvlp.data.records import BadRecordError, BadRecords
from semvlp.data.synthetic import write_synthetic
from semvlp.train.options import PretrainOptions
from semvlp.train.run_data import expand_feature_files, load_run_data

from pretrain_runs import deepspeed_config, losses, pretrain_args, run, tiny_config

FEATURE_DIM = 64


def _coco(record, split: str):
    return dataclasses.replace(record, image_id=f"COCO_{split}_{int(record.image_id):012d}")


@pytest.fixture(scope="module")
def lxmert(tmp_path_factory):
    """(root, images): root/data holds captions and questions only (integer ids); root/feats holds
    train2014_0.tsv, train2014_1.tsv (the train images) and val2014.tsv (val and novel), with LXMERT's ids."""
    root = tmp_path_factory.mktemp("lxmert")
    splits = write_synthetic(root / "data", {"train": 24, "val": 6, "novel": 6}, seed=5, feature_dim=FEATURE_DIM)
    (root / "data" / "features.tsv").unlink()
    for index in (root / "data").glob("features.tsv*"):
        index.unlink()
    (root / "feats").mkdir()
    train = [_coco(im.record, "train2014") for im in splits["train"]]
    write_tsv(root / "feats" / "train2014_0.tsv", train[:12])
    write_tsv(root / "feats" / "train2014_1.tsv", train[12:])
    write_tsv(root / "feats" / "val2014.tsv", [_coco(im.record, "val2014") for im in splits["val"] + splits["novel"]])
    return root, {im.record.image_id: im.record for images in splits.values() for im in images}


def test_split_tsvs_with_lxmert_ids_are_one_store_relative_to_the_working_directory(lxmert, monkeypatch):
    root, images = lxmert
    monkeypatch.chdir(root)
    data = load_run_data(str(root / "data"), BadRecords(), FEATURE_DIM,
                         feature_files=["feats/train2014_*.tsv", "feats/val2014.tsv"])
    features = data.train.features
    assert sorted(features.ids()) == sorted(images)
    assert sorted(data.held_out) == ["novel", "val"]
    for image_id in ("0", "23", sorted(images)[-1]):
        np.testing.assert_array_equal(features[image_id].features, images[image_id].features)
    # Without the flag the folder's own features are looked for, and it has none.
    with pytest.raises(ValueError, match="expected region features in"):
        load_run_data(str(root / "data"), BadRecords(), FEATURE_DIM)


def test_the_matches_of_a_pattern_come_sorted_and_in_the_order_given(lxmert):
    root, _ = lxmert
    feats = root / "feats"
    assert expand_feature_files([str(feats / "val2014.tsv"), str(feats / "train2014_?.tsv")]) == \
        [feats / "val2014.tsv", feats / "train2014_0.tsv", feats / "train2014_1.tsv"]


@pytest.mark.parametrize("entries,fmt,message", [
    (["feats/test2015_*.tsv"], None, "--features: 'feats/test2015_*.tsv' matches no file"),
    (["feats/test2015.tsv"], None, "--features: 'feats/test2015.tsv' does not exist"),
    (["feats/*.tsv", "feats/val2014.tsv"], None, "val2014.tsv is named twice (by 'feats/*.tsv' and "
                                                 "'feats/val2014.tsv')"),
    (["feats/*"], None, "notes.txt (from 'feats/*') is not a feature file: expected .tsv, .h5/.hdf5"),
    (["feats/val2014.tsv"], "h5", "val2014.tsv (from 'feats/val2014.tsv') is a tsv feature file, but "
                                  "--feature-format h5 reads every file as h5"),
    ([], None, "--features: expected at least one feature file"),
])
def test_bad_entries_are_errors_naming_the_argument(lxmert, tmp_path, monkeypatch, entries, fmt, message):
    root, _ = lxmert
    (tmp_path / "feats").mkdir()
    for path in (root / "feats").glob("*.tsv"):
        (tmp_path / "feats" / path.name).symlink_to(path)
    (tmp_path / "feats" / "notes.txt").write_text("not features\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=re.escape(message)):
        expand_feature_files(entries, fmt)


def test_an_image_in_two_files_is_a_bad_record_naming_both(lxmert, tmp_path):
    root, images = lxmert
    # The same image as an integer id in another file: one image by the id rule (formats/image_ids.py).
    other = dataclasses.replace(images["3"], features=images["3"].features + 1)
    write_tsv(tmp_path / "extra.tsv", [other])
    files = [str(root / "feats" / "train2014_*.tsv"), str(tmp_path / "extra.tsv")]
    with pytest.raises(BadRecordError, match="image id '3' appears in .*train2014_0.tsv too") as raised:
        load_run_data(str(root / "data"), BadRecords(), FEATURE_DIM, feature_files=files)
    assert raised.value.path == str(tmp_path / "extra.tsv")
    bad = BadRecords(skip=True)
    data = load_run_data(str(root / "data"), bad, FEATURE_DIM, feature_files=files + [str(root / "feats/val*.tsv")])
    assert bad.total == 1 and len(data.train.features) == len(images)
    # The first file's record is the one read.
    np.testing.assert_array_equal(data.train.features["3"].features, images["3"].features)


def test_tsv_and_hdf5_files_are_read_together(lxmert, tmp_path):
    root, images = lxmert
    held_out = [r for image_id, r in images.items() if int(image_id) >= 10000000]
    write_hdf5(tmp_path / "val2014.h5", held_out)
    data = load_run_data(str(root / "data"), BadRecords(), FEATURE_DIM,
                         feature_files=[str(root / "feats" / "train2014_*.tsv"), str(tmp_path / "val2014.h5")])
    assert sorted(data.train.features.ids()) == sorted(images)
    np.testing.assert_array_equal(data.train.features[held_out[0].image_id].features, held_out[0].features)


def test_synthetic_data_take_no_feature_files(capsys):
    with pytest.raises(ValueError, match="features: the synthetic data are generated with their features"):
        PretrainOptions("m.json", "d.json", "out", 5, features=["f.tsv"])
    argv = ["pretrain", "--model-config", "tiny", "--deepspeed-config", "zero2_fp32", "--output", "out",
            "--max-steps", "1", "--features", "f.tsv"]
    assert main(argv) == 2
    assert "semvlp: error: features: the synthetic data" in capsys.readouterr().err


@pytest.mark.slow
def test_pretrain_reads_the_files_the_flag_names(lxmert, tmp_path):
    root, _ = lxmert
    out = tmp_path / "run"
    args = pretrain_args(root / "data", tiny_config(tmp_path), deepspeed_config(tmp_path, "zero2_fp32"), out, 2, 1,
                         "--features", str(root / "feats" / "train2014_*.tsv"), str(root / "feats" / "val2014.tsv"),
                         "--export")
    done = run("plain", 1, args)
    assert f"features: 3 files ({root / 'feats' / 'train2014_0.tsv'}, " in done.stderr
    assert "(--num-workers auto: file-backed data" in done.stderr
    assert [r["step"] for r in losses(out)] == [1, 2]
    assert (out / "results.json").is_file()  # held-out evaluation on val and novel, whose images are in val2014.tsv
    assert str(root / "feats" / "train2014_*.tsv") in (out / "export" / "README.md").read_text()  # the model card
