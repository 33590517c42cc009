"""Loading a JSON file with an error that names the file; the checks every text record of one shares."""

from __future__ import annotations

import json

from .image_ids import canonical_image_id


def load_json(path, top_keys: tuple[str, ...] | None):
    """The parsed file; with `top_keys` (None: any JSON value) it must be an object with those keys."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if top_keys is not None and (not isinstance(data, dict) or any(key not in data for key in top_keys)):
        raise ValueError(f"{path}: expected a JSON object with the keys {list(top_keys)}")
    return data


def json_list(data: dict, key: str, path, default=None) -> list:
    """data[key] (or `default` when the key is absent and a default is given), which must be a JSON list."""
    value = data[key] if default is None else data.get(key, default)
    if not isinstance(value, list):
        raise ValueError(f"{path}: expected \"{key}\" to be a JSON list, got {type(value).__name__}")
    return value


def image_and_text(item, image_ids, text_key: str, record: str, bad, path, name: str) -> tuple[str, str] | None:
    """(image id, stripped text) of a JSON `record` (e.g. "annotation") about one image, or None after reporting
    it to `bad` as a "missing image id" (none, not an int or a string, or one without region features; ids are
    compared canonically, image_ids.py) or an "empty <text_key>"."""
    if not isinstance(item, dict) or item.get("image_id") in (None, ""):
        bad.report(path, name, "missing image id", f"the {record} has no image_id")
        return None
    try:
        image_id = canonical_image_id(item["image_id"])
    except ValueError as err:
        bad.report(path, name, "missing image id", str(err))
        return None
    if image_id not in image_ids:
        bad.report(path, name, "missing image id", f"image id {image_id!r} has no region features")
        return None
    text = item.get(text_key)
    if not isinstance(text, str) or not text.strip():
        bad.report(path, name, f"empty {text_key}", f"the {text_key} is empty or missing ({text!r})")
        return None
    return image_id, text.strip()
