"""Several feature files read as one store (e.g. LXMERT's several TSVs per split)."""

from __future__ import annotations

from ..records import BadRecords, ImageRecord
from .store import FeatureStore


class FeatureUnion:
    """The images of several stores, with a FeatureStore's interface. An image id (canonical) found in an earlier
    file is a "duplicate image id" bad record of the later file; every file must have the same feature size (the
    first file's size is the later files' check)."""

    def __init__(self, stores: list[FeatureStore], bad: BadRecords):
        self.stores = stores
        self.bad = bad
        self.feature_dim = stores[0].feature_dim
        self._owner: dict[str, FeatureStore] = {}
        for store in stores:
            for image_id in store.ids():
                first = self._owner.get(image_id)
                if first is None:
                    self._owner[image_id] = store
                else:
                    bad.report(store.path, f"image id {image_id!r}", "duplicate image id",
                               f"image id {image_id!r} appears in {first.path} too")

    @property
    def path(self):
        return self.stores[0].path

    def ids(self) -> list[str]:
        return list(self._owner)

    def __len__(self) -> int:
        return len(self._owner)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._owner

    def num_regions(self, image_id: str) -> int:
        return self._owner[image_id].num_regions(image_id)

    def __getitem__(self, image_id: str) -> ImageRecord:
        if image_id not in self._owner:
            raise KeyError(f"image id {image_id!r} is not in {[str(s.path) for s in self.stores]}")
        return self._owner[image_id][image_id]
