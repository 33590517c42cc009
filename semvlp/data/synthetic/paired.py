"""NLVR2-style statements about two synthetic scenes, each labelled by checking it against both scenes.

A statement needs both images: what each contains ("both images contain a red circle", "only one image
contains..."), or a comparison of counts across them ("the left image has more stars than the right image").
Every pair of scenes gets one true and one false statement, so the labels are balanced.
"""

from __future__ import annotations

import numpy as np

from ..records import ImageRecord, PairRecord
from .language import article
from .scenes import COLOURS, SHAPES

_COLOURS = tuple(COLOURS)
# kind -> (text template, truth from (has_left, has_right) or (count_left, count_right))
_PRESENCE = {
    "both": ("both images contain {thing}", lambda a, b: a and b),
    "one": ("only one image contains {thing}", lambda a, b: a != b),
    "neither": ("neither image contains {thing}", lambda a, b: not a and not b),
    "left": ("the left image contains {thing}", lambda a, b: a),
    "right": ("the right image contains {thing}", lambda a, b: b),
}
_COUNTS = {
    "more_left": ("the left image has more {shape}s than the right image", lambda a, b: a > b),
    "more_right": ("the right image has more {shape}s than the left image", lambda a, b: b > a),
    "same": ("the two images contain the same number of {shape}s", lambda a, b: a == b),
}


def _objects(record: ImageRecord) -> list[tuple[str, str]]:
    return [(_COLOURS[a], SHAPES[o]) for a, o in zip(record.attr_ids, record.object_ids)]


def statement_truth(kind: str, colour: str | None, shape: str, left: ImageRecord, right: ImageRecord) -> bool:
    """Whether a statement of `kind` about (colour, shape) holds for the two scenes."""
    objects = _objects(left), _objects(right)
    if kind in _PRESENCE:
        return _PRESENCE[kind][1](*((colour, shape) in o for o in objects))
    if kind in _COUNTS:
        return _COUNTS[kind][1](*(sum(s == shape for _, s in o) for o in objects))
    raise ValueError(f"kind: expected one of {list(_PRESENCE) + list(_COUNTS)}, got {kind!r}")


def statement_text(kind: str, colour: str | None, shape: str) -> str:
    if kind in _PRESENCE:
        return _PRESENCE[kind][0].format(thing=f"{article(colour)} {colour} {shape}")
    return _COUNTS[kind][0].format(shape=shape)


def _statement(left: ImageRecord, right: ImageRecord, wanted: bool, rng: np.random.Generator) -> tuple[str, str]:
    """(kind, text) of a statement whose truth is `wanted`. Things are mostly drawn from the two scenes, so
    that presence statements are not trivially false."""
    present = _objects(left) + _objects(right)
    kinds = list(_PRESENCE) + list(_COUNTS)
    for _ in range(200):
        kind = kinds[int(rng.integers(len(kinds)))]
        if rng.random() < 0.7:
            colour, shape = present[int(rng.integers(len(present)))]
        else:
            colour, shape = _COLOURS[int(rng.integers(len(_COLOURS)))], SHAPES[int(rng.integers(len(SHAPES)))]
        if statement_truth(kind, colour, shape, left, right) == wanted:
            return kind, statement_text(kind, colour, shape)
    raise ValueError(f"images {left.image_id!r}, {right.image_id!r}: found no {wanted} statement in 200 draws")


def paired_statements(split: str, records: list[ImageRecord], seed: int = 0) -> list[PairRecord]:
    """len(records) // 2 random pairs of distinct scenes, each with one true and one false statement."""
    if len(records) < 2:
        raise ValueError(f"records: expected at least two scenes to pair, got {len(records)}")
    rng = np.random.default_rng([seed, 7, len(split)] + [ord(c) for c in split])
    order = rng.permutation(len(records))
    out = []
    for p in range(len(records) // 2):
        left, right = records[order[2 * p]], records[order[2 * p + 1]]
        for k, wanted in enumerate(rng.permutation([True, False])):
            _, text = _statement(left, right, bool(wanted), rng)
            out.append(PairRecord(f"{split}-{p}-{k}", text, left.image_id, right.image_id, bool(wanted)))
    return out
