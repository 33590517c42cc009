"""Captions and questions about a synthetic scene, with phrase->region links and hard negatives.

Captions come at several granularities (an object phrase, a pair of objects, a spatial relation, a count,
an absence). Each carries the character spans of its phrases and the region each names (a count's shape
word is one phrase for each region of that shape), the spans of the colour words that name a uniquely
identified object's colour (the words the attribute-MLM accuracy masks), and hard negatives: the same caption
made false by one change (a swapped colour, a flipped relation, a changed count, a swapped colour binding).
Questions are tagged fine-grained (attribute, existence) or high-level (count, relation, comparison).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .scenes import COLOURS, SHAPES, Scene, SceneObject

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# The word that names each relation (without the "of"), the one the relation-word accuracy scores.
RELATION_WORDS = tuple(relation.split()[0] for relation in FLIP)
GRANULARITY = {"attribute": "fine", "existence": "fine", "count": "high", "relation": "high", "comparison": "high"}
# What changed in a hard negative (see `hard_negative_types`).
HARD_NEGATIVE_TYPES = ("colour", "binding", "relation", "count", "absence")


@dataclass
class Caption:
    text: str
    kind: str                                                       # object | pair | relation | count | absence
    phrases: list[dict] = field(default_factory=list)               # {"span": [start, end], "region": index}
    attribute_spans: list[list[int]] = field(default_factory=list)  # [start, end] of grounded colour words
    hard_negatives: list[str] = field(default_factory=list)
    meaning: list[list] = field(default_factory=list)               # clauses, see `holds`
    relation_spans: list[list[int]] = field(default_factory=list)   # [start, end] of relation words ("left of")


@dataclass
class Question:
    text: str
    answer: str
    category: str  # attribute | existence | count | relation | comparison

    @property
    def granularity(self) -> str:
        return GRANULARITY[self.category]


class _Builder:
    """Joins text pieces while recording the character spans of phrases, colour words and relation words."""

    def __init__(self):
        self.text = ""
        self.phrases: list[dict] = []
        self.attribute_spans: list[list[int]] = []
        self.relation_spans: list[list[int]] = []
        self.meaning: list[list] = []

    def add(self, piece: str) -> "_Builder":
        self.text += piece
        return self

    def relation(self, words: str) -> "_Builder":
        self.relation_spans.append([len(self.text), len(self.text) + len(words)])
        self.text += words
        return self

    def object(self, obj: SceneObject, region: int, grounded: bool) -> "_Builder":
        start = len(self.text)
        self.text += f"{article(obj.colour)} "
        if grounded:
            self.attribute_spans.append([len(self.text), len(self.text) + len(obj.colour)])
        self.text += f"{obj.colour} {obj.shape}"
        self.phrases.append({"span": [start, len(self.text)], "region": region})
        self.meaning.append(["exists", obj.colour, obj.shape])
        return self

    def caption(self, kind: str, hard_negatives: list[str]) -> Caption:
        return Caption(self.text, kind, self.phrases, self.attribute_spans, hard_negatives, self.meaning,
                       self.relation_spans)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(colour: str, shape: str) -> str:
    return f"{article(colour)} {colour} {shape}"


def _plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


def _count_sentence(shape: str, n: int) -> str:
    return f"there {'is' if n == 1 else 'are'} {NUMBERS[n]} {_plural(shape, n)}"


def _relation(a: SceneObject, b: SceneObject) -> str | None:
    """Where a lies relative to b, when one axis separates them clearly."""
    return _box_relation(a.box, b.box)


def _box_relation(a, b) -> str | None:
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    if max(abs(dx), abs(dy)) < 10:
        return None
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


class SceneLanguage:
    """Captions and questions about one scene, drawn from a seeded Generator."""

    def __init__(self, scene: Scene, rng: np.random.Generator):
        self.scene = scene
        self.rng = rng
        objects = scene.objects
        self.unique = [i for i, o in enumerate(objects) if scene.count(o.shape) == 1]

    def _pick(self, items):
        return items[int(self.rng.integers(len(items)))]

    def _grounded(self, i: int) -> bool:
        return i in self.unique

    def _absent_colour(self, shape: str) -> str:
        return self._pick([c for c in COLOURS if not self.scene.has(c, shape)])

    def object_caption(self) -> Caption:
        i = self._pick(self.unique or list(range(len(self.scene.objects))))
        obj = self.scene.objects[i]
        negative = _phrase(self._absent_colour(obj.shape), obj.shape)
        return _Builder().object(obj, i, self._grounded(i)).caption("object", [negative])

    def pair_caption(self) -> Caption:
        i, j = (int(v) for v in self.rng.choice(len(self.scene.objects), size=2, replace=False))
        a, b = self.scene.objects[i], self.scene.objects[j]
        negatives = []
        if a.colour != b.colour and not self.scene.has(b.colour, a.shape) and not self.scene.has(a.colour, b.shape):
            negatives.append(f"{_phrase(b.colour, a.shape)} and {_phrase(a.colour, b.shape)}")
        negatives.append(f"{_phrase(self._absent_colour(a.shape), a.shape)} and {_phrase(b.colour, b.shape)}")
        built = _Builder().object(a, i, self._grounded(i)).add(" and ").object(b, j, self._grounded(j))
        return built.caption("pair", negatives)

    def _relation_pair(self) -> tuple[int, int, str] | None:
        objects = self.scene.objects
        pairs = [(i, j) for i in range(len(objects)) for j in range(len(objects))
                 if i != j and _relation(objects[i], objects[j])]
        if not pairs:
            return None
        i, j = self._pick(pairs)
        return i, j, _relation(objects[i], objects[j])

    def relation_caption(self) -> Caption | None:
        pair = self._relation_pair()
        if pair is None:
            return None
        i, j, relation = pair
        a, b = self.scene.objects[i], self.scene.objects[j]
        negatives = [f"{_phrase(a.colour, a.shape)} {FLIP[relation]} {_phrase(b.colour, b.shape)}"]
        built = _Builder().object(a, i, self._grounded(i)).add(" ").relation(relation).add(" ")
        built.object(b, j, self._grounded(j))
        built.meaning.append(["relation", a.colour, a.shape, relation, b.colour, b.shape])
        return built.caption("relation", negatives)

    def count_caption(self) -> Caption:
        shape = self._pick(SHAPES)
        n = self.scene.count(shape)
        wrong = [m for m in (n - 1, n + 1) if 0 <= m < len(NUMBERS)]
        text = _count_sentence(shape, n)
        # The shape word names every region of that shape.
        span = [text.rindex(" ") + 1, len(text)]
        phrases = [{"span": span, "region": i} for i, o in enumerate(self.scene.objects) if o.shape == shape]
        return Caption(text, "count", phrases, hard_negatives=[_count_sentence(shape, self._pick(wrong))],
                       meaning=[["count", shape, n]])

    def absence_caption(self) -> Caption:
        shape = self._pick(SHAPES)
        present = self._pick(self.scene.objects)
        colour = self._absent_colour(shape)
        return Caption(f"there is no {colour} {shape}", "absence",
                       hard_negatives=[f"there is no {present.colour} {present.shape}"],
                       meaning=[["absent", colour, shape]])

    def captions(self, n: int) -> list[Caption]:
        """Up to n distinct captions, cycling through the granularities."""
        makers = [self.object_caption, self.pair_caption, self.relation_caption, self.count_caption,
                  self.absence_caption]
        out, seen = [], set()
        for attempt in range(4 * n):
            if len(out) == n:
                break
            caption = makers[attempt % len(makers)]()
            if caption is not None and caption.text not in seen:
                seen.add(caption.text)
                out.append(caption)
        return out

    def questions(self, n: int) -> list[Question]:
        scene, out = self.scene, []
        for k in range(n):
            category = ("attribute", "existence", "count", "relation", "comparison")[
                (k + int(self.rng.integers(5))) % 5]
            if category == "attribute" and self.unique:
                obj = scene.objects[self._pick(self.unique)]
                out.append(Question(f"what colour is the {obj.shape}?", obj.colour, category))
            elif category == "relation":
                pair = self._relation_pair()
                if pair is None:
                    continue
                i, j, relation = pair
                a, b = scene.objects[i], scene.objects[j]
                truthful = bool(self.rng.integers(2))
                asked = relation if truthful else FLIP[relation]
                out.append(Question(f"is the {a.colour} {a.shape} {asked} the {b.colour} {b.shape}?",
                                    "yes" if truthful else "no", category))
            elif category == "count":
                shape = self._pick(SHAPES)
                out.append(Question(f"how many {shape}s are there?", NUMBERS[scene.count(shape)], category))
            elif category == "comparison":
                s1, s2 = (SHAPES[int(v)] for v in self.rng.choice(len(SHAPES), size=2, replace=False))
                answer = "yes" if scene.count(s1) > scene.count(s2) else "no"
                out.append(Question(f"are there more {s1}s than {s2}s?", answer, "comparison"))
            else:
                if self.rng.integers(2):
                    obj = self._pick(scene.objects)
                    colour, shape = obj.colour, obj.shape
                else:
                    shape = self._pick(SHAPES)
                    colour = self._absent_colour(shape)
                out.append(Question(f"is there {_phrase(colour, shape)}?", "yes" if scene.has(colour, shape) else "no",
                                    "existence"))
        return out


def hard_negative_types(kind: str, count: int) -> list[str]:
    """What changed in each hard negative of a caption of `kind` (in the order the captions list them):
    colour (a colour swapped for an absent one), binding (two objects' colours exchanged), relation (flipped),
    count (off by one), absence (a present object claimed absent)."""
    types = {"object": ["colour"], "relation": ["relation"], "count": ["count"], "absence": ["absence"],
             "pair": ["binding", "colour"] if count == 2 else ["colour"]}.get(kind)
    if types is None or len(types) != count:
        raise ValueError(f"kind: a {kind!r} caption with {count} hard negatives is not one the generator makes")
    return types


def holds(meaning, colours: list[str], shapes: list[str], boxes) -> bool:
    """Whether every clause of a caption's meaning is true of a scene given as per-object colours, shapes and
    pixel xyxy boxes. Clauses: ["exists", colour, shape], ["absent", colour, shape], ["count", shape, n],
    ["relation", colour_a, shape_a, relation, colour_b, shape_b]."""
    where = {(c, s): tuple(b) for c, s, b in zip(colours, shapes, boxes)}
    for clause in meaning:
        op, args = clause[0], clause[1:]
        if op == "exists" and (args[0], args[1]) not in where:
            return False
        if op == "absent" and (args[0], args[1]) in where:
            return False
        if op == "count" and sum(s == args[0] for s in shapes) != args[1]:
            return False
        if op == "relation":
            a, b = where.get((args[0], args[1])), where.get((args[3], args[4]))
            if a is None or b is None or _box_relation(a, b) != args[2]:
                return False
    return True
