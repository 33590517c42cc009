"""Every reader round-trips what the synthetic generator wrote; every bad-record case gives an error naming
the file and the record, or with skip=True a counted skip; NLVR2 statements without labels are read for
predictions only; VQA keeps every human answer."""

import base64
import json

import h5py
import numpy as np
import pytest

from semvlp.data.corpus import load_corpus
from semvlp.data.formats import open_features, read_nlvr2, read_vqa, write_nlvr2
from semvlp.data.formats.lxmert_tsv import FIELDS
from semvlp.data.records import BadRecordError, BadRecords, PairRecord
from semvlp.data.synthetic import to_corpus, write_synthetic

COUNTS = {"train": 16, "val": 4, "novel": 4}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    return folder, write_synthetic(folder, COUNTS, seed=11, formats=("tsv", "h5", "npz"))


@pytest.mark.parametrize("fmt", ["tsv", "h5", "npz"])
def test_feature_readers_round_trip(written, fmt):
    folder, splits = written
    store = open_features(folder, fmt)
    images = [im for split in splits.values() for im in split]
    assert sorted(store.ids()) == sorted(im.record.image_id for im in images)
    assert store.feature_dim == 64
    for im in images:
        got, want = store[im.record.image_id], im.record
        assert (got.width, got.height) == (want.width, want.height)
        for name in ("boxes", "features", "object_ids", "attr_ids"):
            assert np.array_equal(getattr(got, name), getattr(want, name)), name
            assert getattr(got, name).dtype == getattr(want, name).dtype, name


@pytest.mark.parametrize("split", ["train", "val", "novel"])
def test_caption_and_question_readers_round_trip(written, split):
    folder, splits = written
    corpus = load_corpus(folder, split)
    assert corpus.texts == to_corpus(splits[split]).texts
    assert corpus.twins == to_corpus(splits[split]).twins


def test_the_store_reads_lazily_after_pickling(written):
    import pickle

    folder, splits = written
    store = open_features(folder, "tsv")
    store[store.ids()[0]]
    clone = pickle.loads(pickle.dumps(store))  # what a DataLoader worker gets: an index, no open file
    assert clone._handle is None
    first = splits["train"][0].record
    assert np.array_equal(clone[first.image_id].features, first.features)


# --- bad records -------------------------------------------------------------------------------------------

def _tsv_lines(folder):
    return (folder / "features.tsv").read_text().splitlines(keepends=True)


def _set_field(line, name, value):
    values = line.rstrip("\n").split("\t")
    values[FIELDS.index(name)] = value
    return "\t".join(values) + "\n"


def _b64(array, dtype):
    return base64.b64encode(np.asarray(array, dtype=dtype).tobytes()).decode()


def _features_of(line):
    values = line.rstrip("\n").split("\t")
    return np.frombuffer(base64.b64decode(values[FIELDS.index("features")]), dtype=np.float32).copy()


TSV_CASES = {
    "truncated line": lambda lines: lines[:-1] + [lines[-1][:len(lines[-1]) // 2]],
    "corrupt line": lambda lines: lines[:2] + [_set_field(lines[2], "boxes", "@@not base64@@")] + lines[3:],
    "wrong feature size": lambda lines: lines[:2] + [_set_field(lines[2], "features",
                                                                _b64(_features_of(lines[2])[:-3], np.float32))]
    + lines[3:],
    "non-finite features": lambda lines: lines[:2] + [_set_field(lines[2], "features", _b64(
        np.where(np.arange(_features_of(lines[2]).size) == 5, np.nan, _features_of(lines[2])), np.float32))]
    + lines[3:],
    "missing image id": lambda lines: lines[:2] + [_set_field(lines[2], "img_id", "")] + lines[3:],
}


@pytest.mark.parametrize("kind", sorted(TSV_CASES))
def test_bad_tsv_record_is_named_or_counted(written, tmp_path, kind):
    folder, _ = written
    lines = _tsv_lines(folder)
    bad_lines = TSV_CASES[kind](lines)
    (tmp_path / "features.tsv").write_text("".join(bad_lines))
    expected_line = len(lines) if kind == "truncated line" else 3
    with pytest.raises(BadRecordError, match=rf"features.tsv: line {expected_line}( \(image id '\w+'\))?: ") as err:
        open_features(tmp_path, "tsv")
    assert err.value.path.endswith("features.tsv")
    bad = BadRecords(skip=True)
    store = open_features(tmp_path, "tsv", bad=bad)
    assert bad.counts == {(str(tmp_path / "features.tsv"), kind): 1}
    assert len(store) == len(lines) - 1
    assert "features.tsv" in bad.summary() and f"1 {kind}" in bad.summary()


def _copy_h5(src, dst, edit):
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        for key in fin:
            fin.copy(key, fout)
        edit(fout)


def _victim(f):
    return sorted(f)[1]  # not the first record, which sets the feature size of a store opened without one


def _h5_nan(f):
    first = _victim(f)
    data = f[first]["features"][()]
    data[0, 0] = np.nan
    del f[first]["features"]
    f[first]["features"] = data


def _h5_wrong_size(f):
    first = _victim(f)
    data = f[first]["features"][()]
    del f[first]["features"]
    f[first]["features"] = data[:, :10]


def _h5_missing(f):
    del f[_victim(f)]["boxes"]


@pytest.mark.parametrize("kind,edit", [("non-finite features", _h5_nan), ("wrong feature size", _h5_wrong_size),
                                       ("missing field", _h5_missing)])
def test_bad_hdf5_record_is_named_or_counted(written, tmp_path, kind, edit):
    folder, _ = written
    _copy_h5(folder / "features.h5", tmp_path / "features.h5", edit)
    with h5py.File(tmp_path / "features.h5", "r") as f:
        first, total = _victim(f), len(f)
    with pytest.raises(BadRecordError, match=rf"features.h5: image '{first}': "):
        open_features(tmp_path, "h5")
    bad = BadRecords(skip=True)
    assert len(open_features(tmp_path, "h5", bad=bad)) == total - 1
    assert bad.counts == {(str(tmp_path / "features.h5"), kind): 1}


def _npz_case(folder, tmp_path, kind):
    out = tmp_path / "features_npz"
    out.mkdir()
    files = sorted((folder / "features_npz").glob("*.npz"))
    for f in files:
        (out / f.name).write_bytes(f.read_bytes())
    victim = out / files[1].name
    if kind == "corrupt file":
        victim.write_bytes(victim.read_bytes()[:40])
    else:
        with np.load(victim) as data:
            arrays = dict(data)
        arrays["features"][1, 2] = np.inf
        np.savez(victim, **arrays)
    return victim.name, len(files)


@pytest.mark.parametrize("kind", ["corrupt file", "non-finite features"])
def test_bad_npz_record_is_named_or_counted(written, tmp_path, kind):
    folder, _ = written
    name, total = _npz_case(folder, tmp_path, kind)
    with pytest.raises(BadRecordError, match=rf"features_npz: {name}: "):
        open_features(tmp_path, "npz")
    bad = BadRecords(skip=True)
    assert len(open_features(tmp_path, "npz", bad=bad)) == total - 1
    assert bad.counts == {(str(tmp_path / "features_npz"), kind): 1}


def _text_folder(folder, tmp_path, split="train"):
    for f in folder.iterdir():
        if f.is_file() and f.name != "features.h5" and f.suffix in (".json", ".tsv"):
            (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


CAPTION_CASES = {
    "missing image id": lambda d: d["annotations"][3].pop("image_id"),
    "unknown image id": lambda d: d["annotations"][3].update(image_id=987654321),
    "empty caption": lambda d: d["annotations"][3].update(caption="  "),
    "phrase without a region": lambda d: d["annotations"][3]["semvlp"]["phrases"].append({"span": [0, 1]}),
    "backward span": lambda d: d["annotations"][3]["semvlp"].update(attribute_spans=[[5, 2]]),
}


@pytest.mark.parametrize("case", sorted(CAPTION_CASES))
def test_bad_caption_is_named_or_counted(written, tmp_path, case):
    folder = _text_folder(written[0], tmp_path)
    path = folder / "captions_train.json"
    total = len(json.loads(path.read_text())["annotations"])
    _edit_json(path, CAPTION_CASES[case])
    with pytest.raises(BadRecordError, match=r"captions_train.json: annotation 3 \(id 3\): "):
        load_corpus(folder, "train")
    bad = BadRecords(skip=True)
    corpus = load_corpus(folder, "train", bad=bad)
    kind = {"empty caption": "empty caption", "phrase without a region": "malformed semvlp annotation",
            "backward span": "malformed semvlp annotation"}.get(case, "missing image id")
    assert bad.counts == {(str(path), kind): 1}
    assert sum(t.kind == "caption" for t in corpus.texts) == total - 1


QUESTION_CASES = {
    "missing image id": ("vqa_questions_train.json", lambda d: d["questions"][2].update(image_id=None)),
    "empty question": ("vqa_questions_train.json", lambda d: d["questions"][2].update(question="")),
    "missing answer": ("vqa_annotations_train.json", lambda d: d["annotations"][2].update(
        multiple_choice_answer="", answers=[])),
}


@pytest.mark.parametrize("case", sorted(QUESTION_CASES))
def test_bad_question_is_named_or_counted(written, tmp_path, case):
    folder = _text_folder(written[0], tmp_path)
    name, edit = QUESTION_CASES[case]
    total = len(json.loads((folder / "vqa_questions_train.json").read_text())["questions"])
    _edit_json(folder / name, edit)
    record = r"annotation 2 \(question_id 2\)" if case == "missing answer" else r"question 2 \(question_id 2\)"
    with pytest.raises(BadRecordError, match=rf"{name}: {record}: "):
        load_corpus(folder, "train")
    bad = BadRecords(skip=True)
    corpus = load_corpus(folder, "train", bad=bad)
    assert bad.total == (2 if case == "missing answer" else 1)  # the unanswered question is counted as well
    assert sum(t.kind == "question" for t in corpus.texts) == total - 1


def test_a_file_that_is_not_json_names_the_file(written, tmp_path):
    folder = _text_folder(written[0], tmp_path)
    (folder / "captions_train.json").write_text('{"annotations": [')
    with pytest.raises(ValueError, match="captions_train.json: not valid JSON"):
        load_corpus(folder, "train")


def test_a_store_opened_with_a_feature_size_rejects_other_sizes(written):
    with pytest.raises(BadRecordError,
                       match=r"features.tsv: line 1 \(image id '0'\): 64 values per region, expected 2048"):
        open_features(written[0], "tsv", feature_dim=2048)


def test_missing_features_name_what_was_looked_for(tmp_path):
    with pytest.raises(ValueError, match="features.tsv"):
        open_features(tmp_path)


def _statements(tmp_path, items):
    path = tmp_path / "nlvr2_test.json"
    path.write_text(json.dumps(items))
    return path


def test_nlvr2_statements_without_labels_are_read_for_predictions_only(tmp_path):
    images = {"test1-0-1-img0", "test1-0-1-img1"}
    pair = {"sent": "One image shows a dog.", "img0": "test1-0-1-img0", "img1": "test1-0-1-img1"}
    path = _statements(tmp_path, [{"identifier": "test1-0-1-0", **pair}, {"identifier": "test1-0-1-1", **pair,
                                                                          "label": "False"},
                                  {"identifier": "test1-0-1-2", **pair, "label": None}])
    pairs = read_nlvr2(path, images, labelled=False)
    assert [(p.identifier, p.label) for p in pairs] == [("test1-0-1-0", None), ("test1-0-1-1", False),
                                                        ("test1-0-1-2", None)]
    # Training and evaluation read labelled statements: a missing label stays a bad record there.
    with pytest.raises(BadRecordError, match=r"nlvr2_test.json: statement 0 \(test1-0-1-0\): expected 0, 1, 'True' or "
                                             r"'False', got None"):
        read_nlvr2(path, images)
    bad = BadRecords(skip=True)
    assert [p.identifier for p in read_nlvr2(path, images, bad)] == ["test1-0-1-1"]
    assert bad.counts == {(str(path), "bad label"): 2}


def test_unlabelled_statements_need_an_identifier_and_a_label_that_is_there_is_checked(tmp_path):
    images = {"a", "b"}
    path = _statements(tmp_path, [{"sent": "x", "img0": "a", "img1": "b"},
                                  {"identifier": "bad", "sent": "x", "img0": "a", "img1": "b", "label": "maybe"},
                                  {"identifier": "list", "sent": "x", "img0": "a", "img1": "b", "label": [1]},
                                  {"identifier": "ok", "sent": "x", "img0": "a", "img1": "b"}])
    with pytest.raises(BadRecordError, match="statement 0: the statement has no identifier to write its prediction"):
        read_nlvr2(path, images, labelled=False)
    bad = BadRecords(skip=True)
    assert [p.identifier for p in read_nlvr2(path, images, bad, labelled=False)] == ["ok"]
    assert bad.counts == {(str(path), "missing identifier"): 1, (str(path), "bad label"): 2}


def test_nlvr2_writer_leaves_out_missing_labels(tmp_path):
    pairs = [PairRecord("s-0", "One image shows a dog.", "a", "b", None),
             PairRecord("s-1", "Both images show cats.", "a", "b", True)]
    write_nlvr2(tmp_path / "nlvr2.json", pairs)
    assert [("label" in item) for item in json.loads((tmp_path / "nlvr2.json").read_text())] == [False, True]
    assert read_nlvr2(tmp_path / "nlvr2.json", {"a", "b"}, labelled=False) == pairs


def test_vqa_reader_keeps_empty_human_answers(tmp_path):
    # The official score averages over all ten humans, those who gave an empty answer too.
    questions, annotations = tmp_path / "q.json", tmp_path / "a.json"
    questions.write_text(json.dumps({"questions": [{"question_id": 1, "image_id": 9, "question": "What is it?"}]}))
    answers = [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(["dog"] * 3 +
                                                                                                   [""] * 7)]
    annotations.write_text(json.dumps({"annotations": [{"question_id": 1, "image_id": 9, "answers": answers,
                                                        "multiple_choice_answer": "dog", "answer_type": "other"}]}))
    [record] = read_vqa(questions, annotations, {"9"})
    assert record.answers == ("dog",) * 3 + ("",) * 7 and record.answer == "dog"
