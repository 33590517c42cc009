import numpy as np
import pytest

from semvlp.data.synthetic import generate_split
from semvlp.data.synthetic.language import FLIP, holds
from semvlp.data.synthetic.scenes import COLOURS, HELD_OUT_COMBOS, SHAPES, hand_features, render, sample_scene

_COLOURS = list(COLOURS)


def _objects(record):
    return [(_COLOURS[a], SHAPES[o]) for a, o in zip(record.attr_ids, record.object_ids)]


def test_same_seed_same_data_and_new_seed_new_data():
    a, b = generate_split("train", 12, seed=3), generate_split("train", 12, seed=3)
    c = generate_split("train", 12, seed=4)
    assert [im.captions for im in a] == [im.captions for im in b]
    assert all(np.array_equal(x.record.features, y.record.features) for x, y in zip(a, b))
    assert [im.captions for im in a] != [im.captions for im in c]


def test_held_out_combinations_only_in_the_novel_split():
    for split in ("train", "val"):
        for im in generate_split(split, 60, seed=1):
            assert not set(_objects(im.record)) & HELD_OUT_COMBOS
    for im in generate_split("novel", 60, seed=1):
        assert set(_objects(im.record)) & HELD_OUT_COMBOS


def test_scenes_have_2_to_6_objects_with_boxes_inside_the_image():
    for im in generate_split("train", 40, seed=2):
        r = im.record
        assert 2 <= len(r.boxes) <= 6
        assert (r.boxes >= 0).all() and (r.boxes[:, 2:] <= r.width).all()
        assert len(set(_objects(r))) == len(r.boxes)


def test_captions_are_true_and_hard_negatives_false():
    """Every caption's meaning holds for its own scene; its hard negatives differ from it."""
    kinds, hard = set(), 0
    for im in generate_split("train", 80, seed=5):
        colours, shapes = zip(*_objects(im.record))
        for caption in im.captions:
            kinds.add(caption.kind)
            assert caption.meaning and holds(caption.meaning, colours, shapes, im.record.boxes), caption
            assert caption.hard_negatives and caption.text not in caption.hard_negatives
            hard += len(caption.hard_negatives)
    assert kinds == {"object", "pair", "relation", "count", "absence"}
    assert hard > 0


def test_relation_spans_name_the_relation_of_relation_captions_only():
    checked = 0
    for im in generate_split("train", 30, seed=6):
        for caption in im.captions:
            words = [caption.text[start:end] for start, end in caption.relation_spans]
            if caption.kind == "relation":
                assert len(words) == 1 and words[0] in FLIP and f" {words[0]} " in caption.text
                checked += 1
            else:
                assert words == []
    assert checked > 10


def test_attribute_spans_name_the_colour_of_the_only_object_of_that_shape():
    checked = 0
    for im in generate_split("train", 60, seed=6):
        objects = _objects(im.record)
        for caption in im.captions:
            for start, end in caption.attribute_spans:
                colour = caption.text[start:end]
                shape = caption.text[end + 1:].split(" ")[0]
                assert colour in COLOURS
                assert [c for c, s in objects if s == shape] == [colour]
                checked += 1
    assert checked > 50


def test_questions_answers_follow_the_scene():
    categories = set()
    for im in generate_split("train", 60, seed=7):
        objects = _objects(im.record)
        for q in im.questions:
            categories.add(q.category)
            if q.category == "count":
                shape = q.text.split()[2][:-1]
                assert q.answer == ["zero", "one", "two", "three", "four", "five", "six"][
                    sum(s == shape for _, s in objects)]
            if q.category == "attribute":
                shape = q.text.split()[-1].rstrip("?")
                assert [c for c, s in objects if s == shape] == [q.answer]
    assert categories == {"attribute", "existence", "count", "relation", "comparison"}


def test_binding_twins_differ_only_in_colour_binding():
    images = {im.record.image_id: im for im in generate_split("train", 100, seed=8)}
    twins = [(im, images[im.twin]) for im in images.values() if im.twin is not None]
    assert twins
    for a, b in twins:
        assert np.array_equal(a.record.boxes, b.record.boxes)
        assert np.array_equal(a.record.object_ids, b.record.object_ids)
        assert sorted(a.record.attr_ids) == sorted(b.record.attr_ids)
        assert not np.array_equal(a.record.attr_ids, b.record.attr_ids)


@pytest.mark.parametrize("colour", ["red", "blue", "white"])
def test_hand_features_see_the_rendered_colour(colour):
    rng = np.random.default_rng(0)
    scene = sample_scene("0", rng)
    scene = type(scene)("0", tuple(type(o)(colour, o.shape, o.box) for o in scene.objects))
    image = render(scene, rng)
    for obj in scene.objects:
        mean_rgb = hand_features(image, obj.box)[:3] * 255
        assert np.abs(mean_rgb - np.array(COLOURS[colour])).max() < 30
