"""HDF5 features: one group per image id holding `features`, `boxes`, `objects_id`, `attrs_id` datasets and
`img_h`/`img_w` attributes. Datasets are sliced from the open file when a record is read."""

from __future__ import annotations

import h5py
import numpy as np

from ..records import ImageRecord
from .store import BadRecordFormat, FeatureStore

DATASETS = ("features", "boxes", "objects_id", "attrs_id")


def _record(image_id: str, group) -> ImageRecord:
    missing = [name for name in DATASETS if name not in group] + [a for a in ("img_h", "img_w") if a not in group.attrs]
    if missing:
        raise BadRecordFormat("missing field", f"group lacks {missing}")
    return ImageRecord(image_id, int(group.attrs["img_w"]), int(group.attrs["img_h"]),
                       np.asarray(group["boxes"], dtype=np.float32), np.asarray(group["features"], dtype=np.float32),
                       np.asarray(group["objects_id"], dtype=np.int64), np.asarray(group["attrs_id"], dtype=np.int64))


class Hdf5Features(FeatureStore):
    format_name = "HDF5"

    def _scan(self):
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise ValueError(f"path: {self.path} is not a readable HDF5 file ({err})") from err
        with f:
            for image_id in f:
                yield image_id, f"image {image_id!r}", lambda image_id=image_id: _record(image_id, f[image_id])

    def _open(self):
        return h5py.File(self.path, "r")

    def _read(self, image_id) -> ImageRecord:
        return _record(image_id, self.handle()[image_id])


def write_hdf5(path, records) -> None:
    with h5py.File(path, "w") as f:
        for r in records:
            group = f.create_group(r.image_id)
            group.attrs["img_h"], group.attrs["img_w"] = r.height, r.width
            group["features"], group["boxes"] = r.features, r.boxes
            group["objects_id"], group["attrs_id"] = r.object_ids, r.attr_ids
