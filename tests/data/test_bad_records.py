"""Everything a record can get wrong is found when the data is opened, not when a sample is drawn. Each kind of bad
record is a BadRecordError naming the file and the record; with skipping it is counted under its kind and the rest
loads, and every sample of what loaded can be drawn. A file or split left with nothing is one ValueError naming
the file, skipping or not."""

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from semvlp.data.collate import Collator
from semvlp.data.corpus import Corpus, MemoryFeatures, load_corpus
from semvlp.data.dataset import AnswerVocab, PretrainingDataset
from semvlp.data.formats import open_features, write_features
from semvlp.data.records import BadRecordError, BadRecords, ImageRecord, TextRecord
from semvlp.data.synthetic import write_synthetic
from semvlp.data.tokenizer import WordPieceTokenizer
from semvlp.train.distributed import Distributed
from semvlp.train.loop import set_up
from semvlp.train.options import PretrainOptions
from semvlp.train.run_data import load_run_data

NUM_LABELS = 4        # the synthetic scenes' object labels are the shapes 0..3
FEATURE_DIM = 64      # the synthetic hand features
VICTIM = "1"          # the image whose features a feature case breaks (its captions are annotations 5..9)
TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "model" / "tiny.json"  # num_region_labels 32


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("source")
    write_synthetic(folder, {"train": 6, "val": 2}, seed=5, formats=("h5",))
    return folder


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer(max_length=64)


def _records(source):
    store = open_features(source, "h5")
    return [store[i] for i in sorted(store.ids(), key=int)]


def _folder(source, tmp_path, fmt="h5", edit_record=None):
    """A copy of the source's texts, and its features in `fmt`, with `edit_record` applied to image VICTIM."""
    folder = tmp_path / "data"
    folder.mkdir()
    for f in source.glob("*.json"):
        shutil.copy(f, folder / f.name)
    records = _records(source)
    if edit_record is not None:
        edit_record(next(r for r in records if r.image_id == VICTIM))
    write_features(folder, fmt, records)
    return folder


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _semvlp(**fields):
    return lambda d: d["annotations"][3]["semvlp"].update(fields)


def _answer(**fields):
    return lambda d: d["annotations"][2].update(fields)


def _label_out_of_range(record):
    record.object_ids[0] = NUM_LABELS


def _no_regions(record):
    record.boxes, record.features = record.boxes[:0], record.features[:0]
    record.object_ids, record.attr_ids = record.object_ids[:0], record.attr_ids[:0]


CAPTION = ("captions_train.json", r"annotation 3 \(id 3\)")
ANSWER = ("vqa_annotations_train.json", r"annotation 2 \(question_id 2\)")
# case -> (file, record named in the error, kind counted when skipping, edit of the JSON file)
TEXT_CASES = {
    "phrase naming a region the image lacks": (*CAPTION, "phrase region out of range",
                                               _semvlp(phrases=[{"span": [0, 5], "region": 99}])),
    "hard negatives a string": (*CAPTION, "bad hard negatives", _semvlp(hard_negatives="there are five squares")),
    "hard negatives not strings": (*CAPTION, "bad hard negatives", _semvlp(hard_negatives=[1, 2])),
    "attribute span past the caption's end": (*CAPTION, "span outside the caption",
                                              _semvlp(attribute_spans=[[2, 400]])),
    "phrase span past the caption's end": (*CAPTION, "span outside the caption",
                                           _semvlp(phrases=[{"span": [0, 400], "region": 0}])),
    "meaning clause without arguments": (*CAPTION, "malformed semvlp annotation", _semvlp(meaning=[["exists"]])),
    "answer not a string": (*ANSWER, "wrong answer type", _answer(multiple_choice_answer=3)),
    "answer list not a list": (*ANSWER, "wrong answer type", _answer(answers={"answer": "yes"})),
    "human answer not a string": (*ANSWER, "wrong answer type", _answer(answers=[{"answer": 7}])),
    "answer category not a string": (*ANSWER, "wrong answer type", _answer(semvlp_category=["count"])),
    "question answered twice": ("vqa_annotations_train.json", r"annotation 3 \(question_id 2\)",
                                "duplicate question id", lambda d: d["annotations"][3].update(question_id=2)),
    "question id not a scalar": ("vqa_questions_train.json", r"question 2 \(question_id \[2\]\)",
                                 "wrong question id type", lambda d: d["questions"][2].update(question_id=[2])),
}
# case -> (feature format, record named in the error, kind, edit of image VICTIM's record)
FEATURE_CASES = {
    "object label past num_region_labels (tsv)": ("tsv", r"line 2 \(image id '1'\)", "object label out of range",
                                                   _label_out_of_range),
    "object label past num_region_labels (h5)": ("h5", "image '1'", "object label out of range", _label_out_of_range),
    "image without regions (h5)": ("h5", "image '1'", "no regions", _no_regions),
    "image without regions (npz)": ("npz", "1.npz", "no regions", _no_regions),
}
FEATURE_FILES = {"tsv": "features.tsv", "h5": "features.h5", "npz": "features_npz"}


def _draw_every_sample(corpus, tokenizer):
    """Builds the pretraining dataset and draws and collates every sample of two epochs (what steps 1..N do)."""
    dataset = PretrainingDataset(corpus, tokenizer, AnswerVocab.from_texts(corpus.texts, 16), attribute_mask_rate=0.5)
    collate = Collator(tokenizer.mask_id, tokenizer.first_word_id, tokenizer.vocab_size, 5)
    for epoch in range(2):
        batch = collate([dataset[(epoch, i)] for i in range(len(dataset))])
        assert bool((batch.mrm_label_targets < NUM_LABELS).all())
        regions = torch.diff(batch.layout.region_cu_seqlens)[batch.grounding_samples]
        assert bool((batch.grounding_targets < regions).all())


def _texts(source):
    return len(load_corpus(source, "train").texts)


def _check_named_then_counted(folder, path, record, kind, expected_texts, tokenizer):
    with pytest.raises(BadRecordError, match=rf"{re.escape(path.name)}: {record}: ") as err:
        load_corpus(folder, "train", num_region_labels=NUM_LABELS)
    assert err.value.path == str(path)
    bad = BadRecords(skip=True)
    corpus = load_corpus(folder, "train", bad=bad, num_region_labels=NUM_LABELS)
    assert bad.counts[(str(path), kind)] == 1
    # The only other counts are the records that lose their image or their answer with it.
    assert {k for (p, k) in bad.counts if (p, k) != (str(path), kind)} <= {"missing image id", "missing answer"}
    assert f"1 {kind}" in bad.summary()
    assert len(corpus.texts) == expected_texts
    _draw_every_sample(corpus, tokenizer)


@pytest.mark.parametrize("case", sorted(TEXT_CASES))
def test_a_bad_text_record_is_named_at_open_or_counted(source, tmp_path, tokenizer, case):
    name, record, kind, edit = TEXT_CASES[case]
    folder = _folder(source, tmp_path)
    _edit_json(folder / name, edit)
    _check_named_then_counted(folder, folder / name, record, kind, _texts(source) - 1, tokenizer)


@pytest.mark.parametrize("case", sorted(FEATURE_CASES))
def test_a_bad_feature_record_is_named_at_open_or_counted(source, tmp_path, tokenizer, case):
    fmt, record, kind, edit = FEATURE_CASES[case]
    folder = _folder(source, tmp_path, fmt, edit)
    about_victim = sum(t.image_id == VICTIM for t in load_corpus(source, "train").texts)
    _check_named_then_counted(folder, folder / FEATURE_FILES[fmt], record, kind, _texts(source) - about_victim,
                              tokenizer)


def _empty_h5(folder):
    (folder / "features.h5").unlink()
    h5py.File(folder / "features.h5", "w").close()


def _every_label_out_of_range(folder):
    records = _records(folder)
    for r in records:
        r.object_ids[:] = NUM_LABELS
    write_features(folder, "h5", records)


def _every_caption_empty(folder):
    for name in ("vqa_questions_train.json", "vqa_annotations_train.json"):
        (folder / name).unlink()
    _edit_json(folder / "captions_train.json", lambda d: [a.update(caption=" ") for a in d["annotations"]])


# case -> (file named, what the message says, edit of the folder)
EMPTY_CASES = {
    "captions annotations not a list": ("captions_train.json", 'expected "annotations" to be a JSON list, got dict',
                                        lambda f: _edit_json(f / "captions_train.json",
                                                             lambda d: d.update(annotations={"0": d["annotations"]}))),
    "VQA annotations not a list": ("vqa_annotations_train.json", 'expected "annotations" to be a JSON list, got str',
                                   lambda f: _edit_json(f / "vqa_annotations_train.json",
                                                        lambda d: d.update(annotations="none"))),
    "VQA questions not a list": ("vqa_questions_train.json", 'expected "questions" to be a JSON list, got NoneType',
                                 lambda f: _edit_json(f / "vqa_questions_train.json",
                                                      lambda d: d.update(questions=None))),
    "empty HDF5 features file": ("features.h5", r"no usable image records \(an empty HDF5 file", _empty_h5),
    "empty TSV features file": ("features.tsv", r"no usable image records \(an empty LXMERT TSV file",
                                lambda f: (f / "features.h5").unlink() or (f / "features.tsv").write_text("")),
    "every feature record bad": ("features.h5", r"no usable image records \(all 8 were skipped as bad records\)",
                                 _every_label_out_of_range),
    "every record of the split bad": ("captions_train.json", r"no usable caption or question in the 'train' split "
                                      r"\(all 30 records were skipped as bad\)", _every_caption_empty),
}


@pytest.mark.parametrize("case", sorted(EMPTY_CASES))
def test_an_input_left_with_nothing_is_one_error_naming_the_file(source, tmp_path, case):
    name, message, edit = EMPTY_CASES[case]
    folder = _folder(source, tmp_path)
    edit(folder)
    pattern = rf"{re.escape(str(folder / name))}: {message}"
    for skip in (False, True):
        try:
            load_corpus(folder, "train", bad=BadRecords(skip=skip), num_region_labels=NUM_LABELS)
        except BadRecordError as err:
            assert not skip and err.path == str(folder / name)  # without skipping, the first bad record stops it
        except ValueError as err:
            assert re.search(pattern, str(err)), str(err)
        else:
            pytest.fail(f"{case}: loaded with skip={skip}")


def test_the_pretraining_set_up_refuses_before_any_sample_is_drawn(source, tmp_path, monkeypatch):
    """An object label the tiny config's region classifier (32 classes) has no class for stops `set_up` while the
    data is loaded, before the dataset is drawn from or the engine is built."""
    folder = _folder(source, tmp_path, "h5", lambda r: r.object_ids.__setitem__(0, 32))

    def drawn(self, key):
        raise AssertionError("a sample was drawn")

    monkeypatch.setattr(PretrainingDataset, "__getitem__", drawn)
    options = PretrainOptions(str(TINY_CONFIG), str(tmp_path / "unread.json"), str(tmp_path / "out"), 1,
                              data=str(folder))
    with pytest.raises(BadRecordError, match=r"features.h5: image '1': object label 32 is not below the model "
                                             r"config's num_region_labels=32"):
        set_up(options, Distributed(0, 1, 0, torch.device("cpu")))
    assert not (tmp_path / "out").exists()


def test_run_data_checks_labels_and_every_split(source, tmp_path):
    folder = _folder(source, tmp_path, "h5", _label_out_of_range)
    with pytest.raises(BadRecordError, match=r"features.h5: image '1': object label 4 "):
        load_run_data(str(folder), BadRecords(), FEATURE_DIM, num_region_labels=NUM_LABELS)
    bad = BadRecords(skip=True)
    data = load_run_data(str(folder), bad, FEATURE_DIM, num_region_labels=NUM_LABELS)
    assert bad.counts[(str(folder / "features.h5"), "object label out of range")] == 1
    assert VICTIM not in data.train.features and set(data.held_out) == {"val"}
    # A bad record of an evaluation split stops the run too (it is not taken for a missing split).
    _edit_json(folder / "captions_val.json", lambda d: d["annotations"][0].update(caption=""))
    with pytest.raises(BadRecordError, match=r"captions_val.json: annotation 0 \(id 0\): "):
        load_run_data(str(folder), BadRecords(), FEATURE_DIM)


def test_synthetic_scenes_need_a_class_per_shape():
    with pytest.raises(ValueError, match="num_region_labels: the synthetic scenes have object labels up to 3"):
        load_run_data("synthetic", BadRecords(), FEATURE_DIM, synthetic_scenes=4, num_region_labels=3)
    assert load_run_data("synthetic", BadRecords(), FEATURE_DIM, synthetic_scenes=4, num_region_labels=4).train.texts


def _image(image_id, regions=3):
    boxes = np.tile(np.array([[0, 0, 4, 4]], np.float32), (regions, 1))
    return ImageRecord(image_id, 8, 8, boxes, np.ones((regions, FEATURE_DIM), np.float32),
                       np.zeros(regions, np.int64), np.zeros(regions, np.int64))


@pytest.mark.parametrize("texts,message", [
    ([TextRecord("9", "a red circle", "caption"), TextRecord("1", "a square", "caption")],
     r"corpus: text 0 \(caption 'a red circle'\) is about image '9', which has no region features"),
    ([TextRecord("1", "a red circle", "caption", phrases=((0, 12, 3),)), TextRecord("2", "a square", "caption")],
     r"corpus: text 0: caption 'a red circle' names region 3 of image '1', which has 3 regions"),
    ([TextRecord("1", "a red circle", "caption"), TextRecord("1", "a square", "caption")],
     "corpus: every caption describes the same image"),
])
def test_the_dataset_refuses_an_in_memory_corpus_before_any_sample(tokenizer, texts, message):
    corpus = Corpus(MemoryFeatures([_image("1"), _image("2")]), texts)
    with pytest.raises(ValueError, match=message):
        PretrainingDataset(corpus, tokenizer, AnswerVocab([]))
