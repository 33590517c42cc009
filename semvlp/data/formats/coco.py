"""COCO captions JSON: {"images": [{"id", "width", "height", "file_name"}], "annotations": [{"id",
"image_id", "caption"}]}. Image ids are compared with the feature files' ids by the rule of image_ids.py.

Annotations may carry a "semvlp" object (written by the synthetic generator): the caption's kind, its
phrase->region links, the spans of its grounded colour words, its hard negatives and its meaning (clauses
that `semvlp.data.synthetic.language.holds` checks against a scene). Images may carry
"semvlp_binding_twin": the id of the scene with the same shapes and permuted colours.
"""

from __future__ import annotations

import json

from ..records import BadRecords, TextRecord
from .image_ids import canonical_image_id
from .jsonfile import image_and_text, json_list, load_json
from .store import BadRecordFormat


def read_coco_captions(path, image_ids, bad: BadRecords | None = None) -> tuple[list[TextRecord], dict[str, str]]:
    """Captions of the images in `image_ids` (a container of str ids), and the binding twins by image id. When
    `image_ids` is a feature store, a phrase naming a region its image lacks is a bad record too."""
    bad = bad or BadRecords()
    data = load_json(path, ("annotations",))
    annotations = json_list(data, "annotations", path)
    twins = {canonical_image_id(im["id"]): canonical_image_id(im["semvlp_binding_twin"])
             for im in json_list(data, "images", path, default=[])
             if isinstance(im, dict) and _is_id(im.get("id")) and _is_id(im.get("semvlp_binding_twin"))}
    num_regions = getattr(image_ids, "num_regions", None)
    out = []
    for index, ann in enumerate(annotations):
        name = f"annotation {index}" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        checked = image_and_text(ann, image_ids, "caption", "annotation", bad, path, name)
        if checked is None:
            continue
        image_id = checked[0]
        regions = num_regions(image_id) if num_regions is not None else None
        try:
            out.append(_caption_record(image_id, ann["caption"], ann.get("semvlp", {}), regions))
        except BadRecordFormat as err:
            bad.report(path, name, err.kind, str(err))
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            bad.report(path, name, _MALFORMED, f"malformed \"semvlp\" object ({err!r})")
    return out, twins


_MALFORMED = "malformed semvlp annotation"
# The arguments of each clause of a caption's meaning, as `semvlp.data.synthetic.language.holds` reads them.
_CLAUSES = {"exists": (str, str), "absent": (str, str), "count": (str, int), "relation": (str,) * 5}


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _spans(values, caption: str, name: str) -> tuple[tuple[int, int], ...]:
    """Character spans of the stripped `caption`, given as spans of the caption as the file has it."""
    if not isinstance(values, list):
        raise BadRecordFormat(_MALFORMED, f"{name}: expected a list of [start, end] spans, got {values!r}")
    lead, length = len(caption) - len(caption.lstrip()), len(caption.rstrip())
    for span in values:
        if not (isinstance(span, list) and len(span) == 2 and all(map(_is_int, span)) and 0 <= span[0] < span[1]):
            raise BadRecordFormat(_MALFORMED, f"{name}: expected [start, end] with 0 <= start < end, got {span!r}")
        if span[0] < lead or span[1] > length:
            raise BadRecordFormat("span outside the caption", f"{name}: span {span} is not inside the caption "
                                  f"{caption!r} (characters {lead}..{length})")
    return tuple((start - lead, end - lead) for start, end in values)


def _phrases(values, caption: str, num_regions: int | None) -> tuple[tuple[int, int, int], ...]:
    if not isinstance(values, list) or not all(isinstance(p, dict) for p in values):
        raise BadRecordFormat(_MALFORMED, f"phrases: expected a list of {{\"span\", \"region\"}} objects, got "
                              f"{values!r}")
    spans = _spans([p["span"] for p in values], caption, "phrases")
    regions = [p["region"] for p in values]
    if not all(_is_int(r) and r >= 0 for r in regions):
        raise BadRecordFormat(_MALFORMED, f"phrases: expected region indices >= 0, got {regions}")
    if num_regions is not None and any(r >= num_regions for r in regions):
        raise BadRecordFormat("phrase region out of range", f"a phrase names region {max(regions)}, the image has "
                              f"{num_regions} regions")
    return tuple((*span, region) for span, region in zip(spans, regions))


def _meaning(values) -> tuple:
    if not isinstance(values, list):
        raise BadRecordFormat(_MALFORMED, f"meaning: expected a list of clauses, got {values!r}")
    for clause in values:
        types = _CLAUSES.get(clause[0]) if isinstance(clause, list) and clause else None
        if types is None or len(clause) != 1 + len(types) or not all(
                _is_int(v) if t is int else isinstance(v, t) for v, t in zip(clause[1:], types)):
            raise BadRecordFormat(_MALFORMED, f"meaning: {clause!r} is not a clause ({', '.join(_CLAUSES)} with "
                                  "their arguments)")
    return tuple(tuple(c) for c in values)


def _caption_record(image_id: str, caption: str, extra: dict, num_regions: int | None) -> TextRecord:
    """The record of a caption as the file has it (spans count from its first character) and its "semvlp"
    object; BadRecordFormat names what is wrong."""
    if not isinstance(extra, dict):
        raise BadRecordFormat(_MALFORMED, f"\"semvlp\" is {extra!r}, expected an object")
    negatives = extra.get("hard_negatives", [])
    if not isinstance(negatives, list) or not all(isinstance(n, str) and n.strip() for n in negatives):
        raise BadRecordFormat("bad hard negatives", f"hard_negatives: expected a list of non-empty strings, got "
                              f"{negatives!r}")
    kind = extra.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise BadRecordFormat(_MALFORMED, f"kind: expected a string, got {kind!r}")
    return TextRecord(image_id, caption.strip(), "caption", category=kind, hard_negatives=tuple(negatives),
                      attribute_spans=_spans(extra.get("attribute_spans", []), caption, "attribute_spans"),
                      relation_spans=_spans(extra.get("relation_spans", []), caption, "relation_spans"),
                      phrases=_phrases(extra.get("phrases", []), caption, num_regions),
                      meaning=_meaning(extra.get("meaning", [])))


def write_coco_captions(path, images: list[dict], annotations: list[dict]) -> None:
    """images: [{"id", "width", "height", ...}], annotations: [{"image_id", "caption", ...}]; ids are added."""
    numbered = [dict(ann, id=i) for i, ann in enumerate(annotations)]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"info": {"description": "semvlp captions"}, "images": images, "annotations": numbered}, f)
