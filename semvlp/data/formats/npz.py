"""npz features: a folder with one `<image id>.npz` per image holding `features`, `boxes`, `objects_id`,
`attrs_id`, `img_h`, `img_w`. A file is opened when its record is read."""

from __future__ import annotations

import zipfile

import numpy as np

from ..records import ImageRecord
from .store import BadRecordFormat, FeatureStore

ARRAYS = ("features", "boxes", "objects_id", "attrs_id", "img_h", "img_w")


def _load(path) -> ImageRecord:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in ARRAYS if name not in data.files]
            if missing:
                raise BadRecordFormat("missing field", f"arrays {missing} are missing")
            return ImageRecord(path.stem, int(data["img_w"]), int(data["img_h"]),
                               data["boxes"].astype(np.float32), data["features"].astype(np.float32),
                               data["objects_id"].astype(np.int64), data["attrs_id"].astype(np.int64))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise BadRecordFormat("corrupt file", f"cannot read the npz file ({err})") from None


class NpzFeatures(FeatureStore):
    format_name = "npz folder"
    indexed = False  # a folder of small files: validated at every open

    def _scan(self):
        if not self.path.is_dir():
            raise ValueError(f"path: expected a folder of .npz files, got {self.path}")
        for file in sorted(self.path.glob("*.npz")):
            yield file, file.name, lambda file=file: _load(file)

    def _open(self):
        return None

    def _read(self, file) -> ImageRecord:
        return _load(file)


def write_npz(folder, records) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in records:
        np.savez(folder / f"{r.image_id}.npz", features=r.features, boxes=r.boxes, objects_id=r.object_ids,
                 attrs_id=r.attr_ids, img_h=r.height, img_w=r.width)
