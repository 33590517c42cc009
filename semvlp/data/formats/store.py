"""FeatureStore: lazy access to the regions of images by id, shared by every feature format.

A store validates every record once when its file is first opened (so a bad record is reported, or counted and
skipped, before training starts) and caches the outcome in an index beside the file (index.py), which later
opens read instead of the records. It keeps only that index in memory, and reads a record from disk when asked.
Image ids are canonical (image_ids.py): `ids()` and lookups use that form. File handles are opened per process
on first use, so DataLoader workers never share or copy one.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..records import BadRecords, ImageRecord, check_image_record
from .image_ids import canonical_image_id
from .index import load_index, save_index, source_fingerprint


class FeatureStore:
    format_name = ""
    indexed = True  # a single file whose validation is cached in an index (index.py)

    def __init__(self, path, bad: BadRecords | None = None, feature_dim: int | None = None,
                 num_region_labels: int | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"path: expected a {self.format_name} feature file or folder, {self.path} does not exist")
        self.bad = bad or BadRecords()
        self.feature_dim = feature_dim
        self._handle = None
        self._handle_pid = None
        checks = {"feature_dim": feature_dim, "num_region_labels": num_region_labels}
        fingerprint = source_fingerprint(self.path) if self.indexed and self.path.is_file() else None
        index = load_index(self.path, checks, fingerprint) if fingerprint else None
        if index is None:
            index = self._build_index(num_region_labels)
            if fingerprint:
                save_index(self.path, checks, fingerprint, index)
        else:
            for record_name, kind, reason in index["skipped"]:  # what --skip-bad-records counts and logs
                self.bad.report(self.path, record_name, kind, reason)
        self.feature_dim = index["feature_dim"]
        self._keys = dict(zip(index["ids"], index["keys"]))
        self._regions = dict(zip(index["ids"], index["regions"]))
        if not self._keys:
            skipped = len(index["skipped"])
            raise ValueError(f"{self.path}: no usable image records" +
                             (f" (all {skipped} were skipped as bad records)" if skipped else
                              f" (an empty {self.format_name} file or folder)"))

    def _build_index(self, num_region_labels: int | None) -> dict:
        """Reads and checks every record: the usable ones' canonical ids, keys and region counts, the feature
        size, and [record name, kind, reason] of each bad one (reported to `self.bad` as it is found)."""
        ids, keys, regions, skipped = [], [], [], []
        seen = set()

        def skip(record_name, kind, reason):
            self.bad.report(self.path, record_name, kind, reason)
            skipped.append([record_name, kind, reason])

        for key, record_name, read in self._scan():
            try:
                record = read()
            except BadRecordFormat as err:
                skip(record_name, err.kind, str(err))
                continue
            record_name = self._record_name(record_name, record)
            record.image_id = canonical_image_id(record.image_id)
            problem = check_image_record(record, self.feature_dim, num_region_labels)
            if problem is None and record.image_id in seen:
                problem = ("duplicate image id", f"image id {record.image_id!r} appears twice")
            if problem is not None:
                skip(record_name, *problem)
                continue
            self.feature_dim = record.features.shape[1]
            seen.add(record.image_id)
            ids.append(record.image_id)
            keys.append(key)
            regions.append(len(record.features))
        return {"feature_dim": self.feature_dim, "ids": ids, "keys": keys, "regions": regions, "skipped": skipped}

    def _scan(self):
        """Yields (key, record name for messages, a function that reads and parses the record)."""
        raise NotImplementedError

    def _read(self, key) -> ImageRecord:
        raise NotImplementedError

    def _record_name(self, name: str, record: ImageRecord) -> str:
        """The name of a parsed record in messages (a format whose names lack the image id adds it)."""
        return name

    def _open(self):
        raise NotImplementedError

    def handle(self):
        """This process's open handle of the file (reopened after a fork)."""
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle, self._handle_pid = self._open(), os.getpid()
        return self._handle

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = state["_handle_pid"] = None
        return state

    def ids(self) -> list[str]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._keys

    def num_regions(self, image_id: str) -> int:
        """The image's region count, from the index (no read)."""
        return self._regions[image_id]

    def __getitem__(self, image_id: str) -> ImageRecord:
        if image_id not in self._keys:
            raise KeyError(f"image id {image_id!r} is not in {self.path}")
        record = self._read(self._keys[image_id])
        record.image_id = image_id
        return record


class BadRecordFormat(Exception):
    """Raised by a format's parser for a record that cannot be parsed; `kind` names the problem."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
