"""FeatureStore: lazy access to the regions of images by id, shared by every feature format.

A store validates every record once when it is opened (so a bad record is reported, or counted and skipped,
before training starts), keeps only an index in memory, and reads a record from disk when asked. File
handles are opened per process on first use, so DataLoader workers never share or copy one.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..records import BadRecords, ImageRecord, check_image_record


class FeatureStore:
    format_name = ""

    def __init__(self, path, bad: BadRecords | None = None, feature_dim: int | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"path: expected a {self.format_name} feature file or folder, {self.path} does not exist")
        self.bad = bad or BadRecords()
        self.feature_dim = feature_dim
        self._keys: dict[str, object] = {}
        self._handle = None
        self._handle_pid = None
        for key, record_name, read in self._scan():
            try:
                record = read()
            except BadRecordFormat as err:
                self.bad.report(self.path, record_name, err.kind, str(err))
                continue
            problem = check_image_record(record, self.feature_dim)
            if problem is None and record.image_id in self._keys:
                problem = ("duplicate image id", f"image id {record.image_id!r} appears twice")
            if problem is not None:
                self.bad.report(self.path, record_name, *problem)
                continue
            self.feature_dim = record.features.shape[1]
            self._keys[record.image_id] = key

    def _scan(self):
        """Yields (key, record name for messages, a function that reads and parses the record)."""
        raise NotImplementedError

    def _read(self, key) -> ImageRecord:
        raise NotImplementedError

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

    def __getitem__(self, image_id: str) -> ImageRecord:
        if image_id not in self._keys:
            raise KeyError(f"image id {image_id!r} is not in {self.path}")
        return self._read(self._keys[image_id])


class BadRecordFormat(Exception):
    """Raised by a format's parser for a record that cannot be parsed; `kind` names the problem."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
