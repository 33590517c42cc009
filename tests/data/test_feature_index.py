"""Feature files: the cached index (built once, rebuilt when stale, remembering skipped records), several files
per split, the canonical image id rule and `semvlp data convert`."""

import json
import logging
import os

import numpy as np
import pytest

from semvlp.cli import main
from semvlp.data.corpus import Corpus, load_corpus
from semvlp.data.dataset import AnswerVocab, PretrainingDataset
from semvlp.data.formats import lxmert_tsv, open_features, write_coco_captions
from semvlp.data.formats.hdf5 import write_hdf5
from semvlp.data.formats.image_ids import canonical_image_id
from semvlp.data.formats.lxmert_tsv import write_tsv
from semvlp.data.records import BadRecordError, BadRecords, ImageRecord
from semvlp.data.synthetic import generate_split, to_corpus, write_synthetic
from semvlp.data.tokenizer import WordPieceTokenizer


def _record(image_id, seed, regions=3, dim=4):
    rng = np.random.default_rng(seed)
    boxes = np.tile(np.array([[1, 2, 5, 6]], np.float32), (regions, 1))
    return ImageRecord(image_id, 10, 8, boxes, rng.normal(size=(regions, dim)).astype(np.float32),
                       np.zeros(regions, np.int64), np.zeros(regions, np.int64))


@pytest.fixture
def decodes(monkeypatch):
    """Counts the TSV lines decoded."""
    count = {"n": 0}
    parse = lxmert_tsv.parse_line

    def counting(line):
        count["n"] += 1
        return parse(line)

    monkeypatch.setattr(lxmert_tsv, "parse_line", counting)
    return count


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """The fallback cache lives under this test's own home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_the_index_is_built_once_and_reused(tmp_path, decodes):
    records = [_record(f"img{i}", i) for i in range(4)]
    write_tsv(tmp_path / "features.tsv", records)
    first = open_features(tmp_path)
    assert decodes["n"] == 4 and (tmp_path / "features.tsv.semvlp-index.json").is_file()
    second = open_features(tmp_path)
    assert decodes["n"] == 4  # nothing decoded: the index answered
    assert second.ids() == first.ids() == [r.image_id for r in records]
    assert [second.num_regions(i) for i in second.ids()] == [3] * 4 and second.feature_dim == 4
    assert np.array_equal(second["img2"].features, records[2].features) and decodes["n"] == 5


def test_an_index_whose_source_changed_is_rebuilt_even_at_the_same_size_and_time(tmp_path, decodes):
    path = tmp_path / "features.tsv"
    write_tsv(path, [_record("a", 0), _record("b", 1)])
    open_features(tmp_path)
    stat = path.stat()
    data = path.read_bytes()
    path.write_bytes(data.replace(b"\nb\t", b"\nc\t"))  # another id, same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    store = open_features(tmp_path)
    assert store.ids() == ["a", "c"] and decodes["n"] == 4
    write_tsv(path, [_record("d", 2)])
    assert open_features(tmp_path).ids() == ["d"] and decodes["n"] == 5


def test_an_index_built_with_other_checks_is_not_used(tmp_path, decodes):
    write_tsv(tmp_path / "features.tsv", [_record("a", 0), _record("b", 1)])
    open_features(tmp_path)
    with pytest.raises(BadRecordError, match="line 1"):
        open_features(tmp_path, feature_dim=8)  # the model's size differs: checked, not read from the index


def test_the_index_remembers_skipped_records(tmp_path, decodes, caplog):
    good, nan = _record("a", 0), _record("b", 1)
    nan.features[0, 0] = np.nan
    write_tsv(tmp_path / "features.tsv", [good, nan, _record("c", 2)])
    built = BadRecords(skip=True)
    assert open_features(tmp_path, bad=built).ids() == ["a", "c"]
    cached = BadRecords(skip=True)
    with caplog.at_level(logging.WARNING):
        assert open_features(tmp_path, bad=cached).ids() == ["a", "c"]
    assert decodes["n"] == 3 and cached.counts == built.counts and cached.total == 1
    assert "line 2 (image id 'b')" in caplog.text
    with pytest.raises(BadRecordError, match="line 2"):
        open_features(tmp_path)  # without --skip-bad-records the remembered record stops the run
    assert decodes["n"] == 3


def test_an_unwritable_data_folder_caches_the_index_under_home(tmp_path, decodes, home, caplog):
    write_tsv(tmp_path / "features.tsv", [_record("a", 0)])
    (tmp_path / "features.tsv.semvlp-index.json").mkdir()  # the index cannot be written beside the file
    with caplog.at_level(logging.WARNING):
        open_features(tmp_path)
    assert "cannot write the index" in caplog.text
    assert len(list((home / ".cache" / "semvlp" / "index").glob("*-features.tsv.json"))) == 1
    assert open_features(tmp_path).ids() == ["a"] and decodes["n"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_several_feature_files_are_one_store(tmp_path):
    write_tsv(tmp_path / "features_train0.tsv", [_record("a", 0), _record("b", 1)])
    write_tsv(tmp_path / "features_train1.tsv", [_record("c", 2)])
    store = open_features(tmp_path)
    assert sorted(store.ids()) == ["a", "b", "c"] and len(store) == 3 and store.num_regions("c") == 3
    assert np.array_equal(store["c"].features, _record("c", 2).features)
    assert open_features(tmp_path, files=["features_train1.tsv"]).ids() == ["c"]
    assert sorted(open_features(tmp_path, files="features_train*.tsv").ids()) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="features_val.tsv matches no feature file"):
        open_features(tmp_path, files=["features_val.tsv"])


def test_an_image_in_two_files_and_another_feature_size_are_bad_records(tmp_path):
    write_tsv(tmp_path / "features_0.tsv", [_record("a", 0), _record("b", 1)])
    write_tsv(tmp_path / "features_1.tsv", [_record("b", 3), _record("c", 2, dim=5)])
    with pytest.raises(BadRecordError, match="features_1.tsv"):
        open_features(tmp_path)
    bad = BadRecords(skip=True)
    assert sorted(open_features(tmp_path, bad=bad).ids()) == ["a", "b"]
    assert dict(bad.counts) == {(str(tmp_path / "features_1.tsv"), "duplicate image id"): 1,
                                (str(tmp_path / "features_1.tsv"), "wrong feature size"): 1}


@pytest.mark.parametrize("value, canonical", [
    (9, "9"), ("9", "9"), ("COCO_train2014_000000000009", "9"), ("COCO_val2014_000000123456", "123456"),
    ("000000000009", "000000000009"), ("img_9", "img_9"), ("COCO_train2014_9", "COCO_train2014_9")])
def test_the_image_id_rule(value, canonical):
    assert canonical_image_id(value) == canonical


def test_an_id_that_is_neither_int_nor_string_is_an_error():
    with pytest.raises(ValueError, match="image id"):
        canonical_image_id(True)


def _mixed_folder(folder):
    """LXMERT-style string ids in the features (in two files), COCO integer ids in the captions."""
    folder.mkdir()
    write_tsv(folder / "features_a.tsv", [_record("COCO_train2014_000000000009", 0), _record("img_x", 1)])
    write_hdf5(folder / "other.h5", [_record("COCO_train2014_000000000042", 2)])
    write_tsv(folder / "features_b.tsv", [_record("COCO_train2014_000000000042", 2)])
    write_coco_captions(folder / "captions_train.json", [{"id": 9}, {"id": 42}, {"id": "img_x"}],
                        [{"image_id": 9, "caption": "a red cube"}, {"image_id": 42, "caption": "a blue ball"},
                         {"image_id": "img_x", "caption": "a green cone"}])
    return folder


def test_string_feature_ids_meet_integer_caption_ids(tmp_path):
    corpus = load_corpus(_mixed_folder(tmp_path / "mixed"), "train")
    assert [t.image_id for t in corpus.texts] == ["9", "42", "img_x"]
    assert corpus.features["9"].image_id == "9"


def test_convert_rewrites_every_id_to_the_canonical_form(tmp_path, capsys):
    source = _mixed_folder(tmp_path / "mixed")
    load_corpus(source, "train")  # leaves indexes, which the copy does not take
    (source / "tokens-0123.npz").write_bytes(b"a cache")
    assert main(["data", "convert", "--data", str(source), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    ids = [line.split(b"\t", 1)[0] for line in (out / "features_a.tsv").read_bytes().splitlines()]
    assert ids == [b"9", b"img_x"] and not list(out.glob("*.semvlp-index.json")) + list(out.glob("tokens-*"))
    captions = json.loads((out / "captions_train.json").read_text())
    assert [a["image_id"] for a in captions["annotations"]] == [9, 42, "img_x"]
    assert open_features(out, files=["other.h5"]).ids() == ["42"]
    corpus = load_corpus(out, "train")
    assert np.array_equal(corpus.features["42"].features, _record("x", 2).features)
    assert main(["data", "convert", "--data", str(source), "--out", str(out)]) == 2
    assert "holds files" in capsys.readouterr().err


class _CountingReads:
    def __init__(self, features):
        self.features, self.reads = features, 0

    def __contains__(self, image_id):
        return image_id in self.features

    def num_regions(self, image_id):
        return self.features.num_regions(image_id)

    def __getitem__(self, image_id):
        self.reads += 1
        return self.features[image_id]


def test_a_sample_reads_its_image_once_even_when_its_text_is_a_mismatch():
    corpus = to_corpus(generate_split("train", 20, seed=4))
    counting = _CountingReads(corpus.features)
    dataset = PretrainingDataset(Corpus(counting, corpus.texts, corpus.twins), WordPieceTokenizer(max_length=64),
                                 AnswerVocab.from_texts(corpus.texts, 16), seed=1)
    labels = [dataset[(0, i)].itm_label for i in range(len(dataset))]
    assert 0 in labels and counting.reads == len(dataset)


def test_token_ids_are_computed_once_per_dataset_and_vocab(tmp_path, monkeypatch):
    write_synthetic(tmp_path / "data", {"train": 12}, seed=3, formats=("tsv",))
    corpus = load_corpus(tmp_path / "data", "train")
    tokenizer = WordPieceTokenizer(max_length=64)
    encoded = []
    encode_batch = tokenizer.encode_batch
    monkeypatch.setattr(tokenizer, "encode_batch", lambda texts: encoded.append(len(texts)) or encode_batch(texts))
    answers = AnswerVocab.from_texts(corpus.texts, 16)
    first = PretrainingDataset(corpus, tokenizer, answers, seed=1)
    assert max(encoded) == len(corpus.texts) and len(list((tmp_path / "data").glob("tokens-*.npz"))) == 2
    encoded.clear()
    second = PretrainingDataset(corpus, tokenizer, answers, seed=1)
    assert max(encoded) == 1  # only the probe of the truncation length: the texts came from the cache
    for name in ("token_ids", "grounded_positions", "attribute_positions"):
        assert all(np.array_equal(a, b) for a, b in zip(getattr(first, name), getattr(second, name)))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(first.phrase_tokens, second.phrase_tokens))
    assert [[x.tolist() for x in h] for h in first.hard_negative_ids] == \
        [[x.tolist() for x in h] for h in second.hard_negative_ids]
    shorter = WordPieceTokenizer(max_length=8)  # another truncation: tokenised again
    assert max(len(ids) for ids in PretrainingDataset(corpus, shorter, answers, seed=1).token_ids) == 8
    assert len(list((tmp_path / "data").glob("tokens-*.npz"))) == 4
