"""NLVR2 statements in the JSON layout LXMERT's NLVR2 data uses: a list of
{"identifier", "sent", "img0", "img1", "label"}, label 1 (true) or 0 (false); the raw NLVR2 strings
"True"/"False" are read too. img0 is the left image, img1 the right one, both ids of the feature files.
Statements read for predictions (`labelled=False`, as for NLVR2's unreleased test labels) may lack "label" and
must carry "identifier", the key their predictions are written under.
"""

from __future__ import annotations

import json

from ..records import BadRecords, PairRecord
from .image_ids import canonical_image_id
from .jsonfile import load_json

# True and False are found as the keys 1 and 0 (equal keys of a dict).
_LABELS = {1: True, 0: False, "True": True, "False": False}


def _image_id(value) -> str:
    """The canonical id (image_ids.py), or "" for a value that is not an id."""
    return canonical_image_id(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""


def read_nlvr2(path, image_ids, bad: BadRecords | None = None, labelled: bool = True) -> list[PairRecord]:
    """Statements whose two images are in `image_ids`. With `labelled` False (for predictions) a statement
    without "label" (or with null) is read with label None, and one without "identifier" is a bad record; a label
    that is there is checked either way."""
    bad = bad or BadRecords()
    data = load_json(path, None)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of statements")
    out = []
    for index, item in enumerate(data):
        name = f"statement {index}" + (f" ({item['identifier']})" if isinstance(item, dict) and
                                       "identifier" in item else "")
        if not isinstance(item, dict):
            bad.report(path, name, "not an object", f"expected a JSON object, got {type(item).__name__}")
            continue
        images = [_image_id(item.get(key, "")) for key in ("img0", "img1")]
        missing = [i for i in images if not i or i not in image_ids]
        if missing:
            bad.report(path, name, "missing image id", f"image ids {missing} have no region features")
            continue
        text = item.get("sent")
        if not isinstance(text, str) or not text.strip():
            bad.report(path, name, "empty statement", f"the statement is empty or missing ({text!r})")
            continue
        if not labelled and "identifier" not in item:
            bad.report(path, name, "missing identifier", "the statement has no identifier to write its "
                       "prediction under")
            continue
        label = item.get("label")
        if (labelled or label is not None) and (not isinstance(label, (int, str)) or label not in _LABELS):
            bad.report(path, name, "bad label", f"expected 0, 1, 'True' or 'False', got {label!r}")
            continue
        out.append(PairRecord(str(item.get("identifier", index)), text.strip(), images[0], images[1],
                              None if label is None else _LABELS[label]))
    return out


def write_nlvr2(path, pairs: list[PairRecord]) -> None:
    """The statements as `read_nlvr2` reads them; one whose label is None is written without "label"."""
    items = [{"identifier": p.identifier, "sent": p.text, "img0": p.left_image_id, "img1": p.right_image_id}
             | ({} if p.label is None else {"label": int(p.label)}) for p in pairs]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(items, f)
