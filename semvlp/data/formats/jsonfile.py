"""Loading a JSON file with an error that names the file."""

from __future__ import annotations

import json


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
