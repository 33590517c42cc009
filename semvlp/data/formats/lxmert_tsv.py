"""LXMERT-style TSV: one image per line, arrays as base64 of little-endian float32 / int64.

Fields: img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features.
Only a byte-offset index is kept in memory; a record is decoded when it is read.
"""

from __future__ import annotations

import base64
import binascii
import csv
import sys

import numpy as np

from ..records import ImageRecord
from .store import BadRecordFormat, FeatureStore

FIELDS = ("img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes",
          "boxes", "features")
_ARRAYS = {"objects_id": np.int64, "objects_conf": np.float32, "attrs_id": np.int64, "attrs_conf": np.float32,
           "boxes": np.float32, "features": np.float32}

csv.field_size_limit(sys.maxsize)


def _encode(array: np.ndarray, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def _decode(text: str, dtype, name: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadRecordFormat("corrupt line", f"field {name} is not valid base64 ({err})") from None
    item = np.dtype(dtype).itemsize
    if len(raw) % item:
        raise BadRecordFormat("corrupt line", f"field {name} has {len(raw)} bytes, not a multiple of {item}")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)


def parse_line(line: str) -> ImageRecord:
    if not line.endswith("\n"):
        raise BadRecordFormat("truncated line", "the line does not end with a newline (truncated file?)")
    values = next(csv.reader([line.rstrip("\r\n")], delimiter="\t"), [])
    if len(values) != len(FIELDS):
        raise BadRecordFormat("truncated line" if len(values) < len(FIELDS) else "corrupt line",
                              f"{len(values)} tab-separated fields, expected {len(FIELDS)}")
    row = dict(zip(FIELDS, values))
    try:
        height, width, num_boxes = int(row["img_h"]), int(row["img_w"]), int(row["num_boxes"])
    except ValueError as err:
        raise BadRecordFormat("corrupt line", f"img_h/img_w/num_boxes are not integers ({err})") from None
    arrays = {name: _decode(row[name], dtype, name) for name, dtype in _ARRAYS.items()}
    features = arrays["features"]
    if num_boxes <= 0 or features.size % num_boxes:
        raise BadRecordFormat("wrong feature size", f"{features.size} feature values do not split into "
                                                    f"num_boxes={num_boxes} regions")
    if arrays["boxes"].size != 4 * num_boxes:
        raise BadRecordFormat("wrong box size", f"{arrays['boxes'].size} box values, expected 4 x {num_boxes}")
    return ImageRecord(row["img_id"], width, height, arrays["boxes"].reshape(num_boxes, 4),
                       features.reshape(num_boxes, -1), arrays["objects_id"], arrays["attrs_id"])


class TsvFeatures(FeatureStore):
    format_name = "LXMERT TSV"

    def _scan(self):
        with open(self.path, "rb") as f:
            number = 0
            while True:
                offset = f.tell()
                raw = f.readline()
                if not raw:
                    break
                number += 1
                yield offset, f"line {number}", lambda raw=raw: self._parse(raw)

    @staticmethod
    def _parse(raw: bytes) -> ImageRecord:
        try:
            return parse_line(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise BadRecordFormat("corrupt line", f"not UTF-8 text ({err})") from None

    def _record_name(self, name: str, record: ImageRecord) -> str:
        return f"{name} (image id {record.image_id!r})" if record.image_id else name

    def _open(self):
        return open(self.path, "rb")

    def _read(self, offset) -> ImageRecord:
        f = self.handle()
        f.seek(offset)
        return self._parse(f.readline())


def write_tsv(path, records) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        for r in records:
            n = len(r.boxes)
            writer.writerow([r.image_id, r.height, r.width, _encode(r.object_ids, np.int64),
                             _encode(np.ones(n), np.float32), _encode(r.attr_ids, np.int64),
                             _encode(np.ones(n), np.float32), n, _encode(r.boxes, np.float32),
                             _encode(r.features, np.float32)])
