"""The one rule by which image ids of feature files and text files are compared.

An id is compared as its canonical string: an integer (as COCO and VQA JSON write ids) is its decimal digits;
a string of the form COCO_<split>_<12 digits> (as LXMERT's TSVs write ids, e.g. COCO_train2014_000000000009) is
the integer those digits spell ("9"); any other string is itself. So 9, "9" and "COCO_val2014_000000000009" are
one image, while "000000000009" or "img_9" are other ids.
"""

from __future__ import annotations

import re

_COCO_NAME = re.compile(r"COCO_[A-Za-z0-9]+_(\d{12})")


def canonical_image_id(value) -> str:
    """The canonical string of an image id from a feature file or a JSON file (see the module's rule)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"image id: expected an integer or a string, got {value!r}")
    if isinstance(value, int):
        return str(value)
    match = _COCO_NAME.fullmatch(value)
    return str(int(match.group(1))) if match else value


def json_image_id(value):
    """How `semvlp data convert` writes an id into JSON: its canonical form, an integer when it is all digits."""
    canonical = canonical_image_id(value)
    return int(canonical) if canonical.isdigit() and canonical == str(int(canonical)) else canonical
