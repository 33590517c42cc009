"""`semvlp data convert`: a copy of a data folder whose image ids all have the canonical form (image_ids.py).

Feature files get the canonical string ids (TSV lines are rewritten without decoding their arrays; HDF5 groups
and npz files are renamed); the JSON files (COCO captions, VQA questions and annotations, NLVR2 statements) get
the canonical ids as integers where they are all digits, else as strings. Other files are copied unchanged, and
cached indexes and token ids are left behind (the copy builds its own).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py

from .image_ids import canonical_image_id, json_image_id

_JSON_LISTS = {"images": ("id", "semvlp_binding_twin"), "annotations": ("image_id",), "questions": ("image_id",)}


def _convert_tsv(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        for line in src:
            image_id, tab, rest = line.partition(b"\t")
            if tab:
                line = canonical_image_id(image_id.decode("utf-8")).encode("utf-8") + tab + rest
            dst.write(line)


def _convert_hdf5(source: Path, target: Path) -> None:
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        for name in src:
            src.copy(src[name], dst, name=canonical_image_id(name))


def _convert_ids(item: dict, keys) -> dict:
    return {k: json_image_id(v) if k in keys and isinstance(v, (int, str)) and not isinstance(v, bool) else v
            for k, v in item.items()}


def _convert_json(source: Path, target: Path) -> None:
    with open(source, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, list):  # NLVR2 statements
        data = [_convert_ids(item, ("img0", "img1")) if isinstance(item, dict) else item for item in data]
    elif isinstance(data, dict):
        data = {key: [_convert_ids(item, _JSON_LISTS[key]) if isinstance(item, dict) else item for item in value]
                if key in _JSON_LISTS and isinstance(value, list) else value for key, value in data.items()}
    with open(target, "w", encoding="utf-8") as f:
        json.dump(data, f)


def convert_folder(source, target) -> list[Path]:
    """Writes the converted copy of data folder `source` to `target` (which must not hold files yet); returns
    the files written."""
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise ValueError(f"source: expected a data folder, {source} is not one")
    if target.exists() and any(target.iterdir()):
        raise ValueError(f"target: expected a new or empty folder, {target} holds files")
    if target.resolve() == source.resolve():
        raise ValueError("target: must differ from the source folder")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.iterdir()):
        out = target / path.name
        if path.name.endswith(".semvlp-index.json") or (path.name.startswith("tokens-") and path.suffix == ".npz"):
            continue  # caches: the copy builds its own
        if path.is_dir() and path.name == "features_npz":
            out.mkdir()
            for file in sorted(path.glob("*.npz")):
                shutil.copy2(file, out / f"{canonical_image_id(file.stem)}.npz")
        elif path.is_dir():
            shutil.copytree(path, out)
        elif path.suffix == ".tsv":
            _convert_tsv(path, out)
        elif path.suffix in (".h5", ".hdf5"):
            _convert_hdf5(path, out)
        elif path.suffix == ".json":
            _convert_json(path, out)
        else:
            shutil.copy2(path, out)
        written.append(out)
    return written
