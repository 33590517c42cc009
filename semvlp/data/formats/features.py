"""The feature formats by name: where each lives in a data folder, how to open and write it."""

from __future__ import annotations

from pathlib import Path

from ..records import BadRecords
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


def open_features(folder, fmt: str | None = None, bad: BadRecords | None = None,
                  feature_dim: int | None = None) -> FeatureStore:
    """The feature store of a data folder: `fmt` if given, else the first format present."""
    folder = Path(folder)
    if fmt is not None and fmt not in FEATURE_FORMATS:
        raise ValueError(f"fmt: expected one of {list(FEATURE_FORMATS)}, got {fmt!r}")
    names = [fmt] if fmt else list(FEATURE_FORMATS)
    for name in names:
        location, store, _ = FEATURE_FORMATS[name]
        if (folder / location).exists():
            return store(folder / location, bad=bad, feature_dim=feature_dim)
    wanted = [FEATURE_FORMATS[n][0] for n in names]
    raise ValueError(f"folder: expected region features in {folder} as one of {wanted}, found none")


def write_features(folder, fmt: str, records) -> Path:
    location, _, writer = FEATURE_FORMATS[fmt]
    writer(Path(folder) / location, records)
    return Path(folder) / location
