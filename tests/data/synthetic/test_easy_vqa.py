"""easy-VQA from its package: the real pictures and questions, one region per picture, and the same readers
and formats as pretraining."""

import sys

import easy_vqa
import numpy as np
import pytest
from PIL import Image

from semvlp.data.corpus import load_corpus
from semvlp.data.synthetic.easy_vqa import background_colour, load_split, write_easy_vqa
from semvlp.data.synthetic.scenes import HAND_FEATURE_DIM, foreground_mask

LIMIT = 12


@pytest.fixture(scope="module")
def test_split():
    return load_split("test", limit=LIMIT, progress=False)


def test_reader_loads_the_packages_pictures_and_questions(test_split):
    records, items = test_split
    texts, answers, image_ids = easy_vqa.get_test_questions()
    expected = [(q, a, n) for q, a, n in zip(texts, answers, image_ids) if n < LIMIT]
    assert [(it["question"], it["answer"], it["image_id"] - 100_000) for it in items] == expected
    assert len(records) == LIMIT and {r.image_id for r in records} == {str(100_000 + n) for n in range(LIMIT)}
    vocabulary = set(easy_vqa.get_answers())
    assert {it["answer"] for it in items} <= vocabulary
    assert {it["category"] for it in items} == {"yes/no", "shape", "colour"}


def test_each_picture_is_one_region_boxed_around_its_shape(test_split):
    records, _ = test_split
    paths = easy_vqa.get_test_image_paths()
    for record in records:
        image = np.asarray(Image.open(paths[int(record.image_id) - 100_000]).convert("RGB"))
        assert (record.width, record.height) == (64, 64)
        assert record.features.shape == (1, HAND_FEATURE_DIM) and np.isfinite(record.features).all()
        x1, y1, x2, y2 = record.boxes[0].astype(int)
        mask = foreground_mask(image, background_colour(image))
        assert mask[y1:y2, x1:x2].sum() == mask.sum() > 20  # every shape pixel inside, and some there
        assert mask[y1:y2, x1:x2].any(axis=0).all() and mask[y1:y2, x1:x2].any(axis=1).all()  # tight box


def test_region_colour_matches_the_answer_about_it(test_split):
    records, items = test_split
    by_id = {r.image_id: r for r in records}
    channel = {"red": 0, "green": 1, "blue": 2}
    checked = 0
    for it in items:
        if it["question"] == "what color is the shape?" and it["answer"] in channel:
            mean_rgb = by_id[str(it["image_id"])].features[0, :3]
            assert mean_rgb.argmax() == channel[it["answer"]], (it, mean_rgb)
            checked += 1
    assert checked >= 2


def test_written_files_read_back_through_the_corpus_reader(tmp_path):
    counts = write_easy_vqa(tmp_path, limit=3, progress=False)
    for split in ("train", "test"):
        corpus = load_corpus(tmp_path, split)
        assert len(corpus.texts) == sum(counts[split].values()) > 0
        assert all(t.kind == "question" and t.answers == (t.answer,) for t in corpus.texts)
        assert len({t.image_id for t in corpus.texts}) == 3


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "easy_vqa", None)
    with pytest.raises(ImportError, match="optional package 'easy-vqa'.*pip install easy-vqa"):
        load_split("train", limit=1, progress=False)
