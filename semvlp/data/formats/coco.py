"""COCO captions JSON: {"images": [{"id", "width", "height", "file_name"}], "annotations": [{"id",
"image_id", "caption"}]}. Image ids are compared as strings with the feature files' ids.

Annotations may carry a "semvlp" object (written by the synthetic generator): the caption's kind, its
phrase->region links, the spans of its grounded colour words, its hard negatives and its meaning (clauses
that `semvlp.data.synthetic.language.holds` checks against a scene). Images may carry
"semvlp_binding_twin": the id of the scene with the same shapes and permuted colours.
"""

from __future__ import annotations

import json

from ..records import BadRecords, TextRecord
from .jsonfile import image_and_text, load_json


def read_coco_captions(path, image_ids, bad: BadRecords | None = None) -> tuple[list[TextRecord], dict[str, str]]:
    """Captions of the images in `image_ids` (a container of str ids), and the binding twins by image id."""
    bad = bad or BadRecords()
    data = load_json(path, ("annotations",))
    twins = {str(im["id"]): str(im["semvlp_binding_twin"]) for im in data.get("images", [])
             if isinstance(im, dict) and "id" in im and im.get("semvlp_binding_twin") is not None}
    out = []
    for index, ann in enumerate(data["annotations"]):
        name = f"annotation {index}" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        checked = image_and_text(ann, image_ids, "caption", "annotation", bad, path, name)
        if checked is None:
            continue
        image_id, caption = checked
        try:
            out.append(_caption_record(image_id, caption, ann.get("semvlp", {})))
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            bad.report(path, name, "malformed semvlp annotation", f"malformed \"semvlp\" object ({err!r})")
    return out, twins


def _spans(values) -> tuple[tuple[int, int], ...]:
    spans = tuple((int(start), int(end)) for start, end in values)
    if any(not 0 <= start < end for start, end in spans):
        raise ValueError(f"spans: expected 0 <= start < end, got {list(values)}")
    return spans


def _caption_record(image_id: str, caption: str, extra: dict) -> TextRecord:
    phrases = tuple((*_spans([p["span"]])[0], int(p["region"])) for p in extra.get("phrases", ()))
    if any(region < 0 for *_, region in phrases):
        raise ValueError("phrases: expected region indices >= 0")
    return TextRecord(image_id, caption, "caption", category=extra.get("kind"),
                      hard_negatives=tuple(extra.get("hard_negatives", ())),
                      attribute_spans=_spans(extra.get("attribute_spans", ())),
                      relation_spans=_spans(extra.get("relation_spans", ())),
                      phrases=phrases, meaning=tuple(tuple(c) for c in extra.get("meaning", ())))


def write_coco_captions(path, images: list[dict], annotations: list[dict]) -> None:
    """images: [{"id", "width", "height", ...}], annotations: [{"image_id", "caption", ...}]; ids are added."""
    numbered = [dict(ann, id=i) for i, ann in enumerate(annotations)]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"info": {"description": "semvlp captions"}, "images": images, "annotations": numbered}, f)
