"""The feature formats by name: where each lives in a data folder, how to open and write it."""

from __future__ import annotations

from pathlib import Path

from ..records import BadRecords
from .feature_union import FeatureUnion
from .hdf5 import Hdf5Features, write_hdf5
from .lxmert_tsv import TsvFeatures, write_tsv
from .npz import NpzFeatures, write_npz
from .store import FeatureStore

# name -> (file or folder inside a data folder, store class, writer), in the order `open_features` tries them.
FEATURE_FORMATS = {
    "tsv": ("features.tsv", TsvFeatures, write_tsv),
    "h5": ("features.h5", Hdf5Features, write_hdf5),
    "npz": ("features_npz", NpzFeatures, write_npz),
}


# name -> glob of the files of that format in a data folder (features.tsv, features_train0.tsv, ...).
FEATURE_PATTERNS = {"tsv": "features*.tsv", "h5": "features*.h5", "npz": "features_npz"}
_SUFFIXES = {".tsv": TsvFeatures, ".h5": Hdf5Features, ".hdf5": Hdf5Features}


def feature_files(folder, fmt: str | None = None, files=None) -> list[Path]:
    """The feature files `open_features` reads: `files` (paths or glob patterns, relative to `folder`), else
    every file of `fmt`'s pattern in `folder`, else those of the first format present, in sorted order."""
    folder = Path(folder)
    if fmt is not None and fmt not in FEATURE_FORMATS:
        raise ValueError(f"fmt: expected one of {list(FEATURE_FORMATS)}, got {fmt!r}")
    if files is not None:
        found = []
        for entry in [files] if isinstance(files, (str, Path)) else files:
            entry = folder / entry
            matches = sorted(entry.parent.glob(entry.name)) if any(c in entry.name for c in "*?[") else [entry]
            if not matches or not matches[0].exists():
                raise ValueError(f"files: {entry} matches no feature file")
            found += matches
        return found
    for name in [fmt] if fmt else list(FEATURE_FORMATS):
        found = sorted(p for p in folder.glob(FEATURE_PATTERNS[name]) if name == "npz" or p.is_file())
        if found:
            return found
    wanted = [FEATURE_FORMATS[n][0] + ("" if n == "npz" else f" (or {FEATURE_PATTERNS[n]})")
              for n in ([fmt] if fmt else FEATURE_FORMATS)]
    raise ValueError(f"folder: expected region features in {folder} as one of {wanted}, found none")


def _store_class(path: Path, fmt: str | None):
    if fmt is not None:
        return FEATURE_FORMATS[fmt][1]
    if path.is_dir():
        return NpzFeatures
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"files: expected .tsv, .h5/.hdf5 files or an npz folder, got {path}")
    return _SUFFIXES[path.suffix.lower()]


def open_features(folder, fmt: str | None = None, bad: BadRecords | None = None, feature_dim: int | None = None,
                  num_region_labels: int | None = None, files=None) -> FeatureStore | FeatureUnion:
    """The feature store of a data folder: the files `feature_files` names (`fmt`, or the first format present;
    several files of it, e.g. features_train0.tsv and features_train1.tsv, are read as one store). With
    `feature_dim` and `num_region_labels` (the model config's), a record of another feature size or with an
    object label the model has no class for is a bad record."""
    bad = bad or BadRecords()
    stores = []
    for path in feature_files(folder, fmt, files):
        store = _store_class(path, fmt)(path, bad=bad, feature_dim=feature_dim, num_region_labels=num_region_labels)
        feature_dim = store.feature_dim
        stores.append(store)
    return stores[0] if len(stores) == 1 else FeatureUnion(stores, bad)


def write_features(folder, fmt: str, records) -> Path:
    location, _, writer = FEATURE_FORMATS[fmt]
    writer(Path(folder) / location, records)
    return Path(folder) / location
