"""Readers and writers of the real data formats: region features (LXMERT TSV, HDF5, npz) and text
(COCO captions JSON, VQA questions/annotations JSON, NLVR2 statements JSON)."""

from .coco import read_coco_captions, write_coco_captions
from .features import FEATURE_FORMATS, FeatureStore, open_features, write_features
from .nlvr2 import read_nlvr2, write_nlvr2
from .vqa import read_vqa, write_vqa

__all__ = ["FEATURE_FORMATS", "FeatureStore", "open_features", "write_features", "read_coco_captions",
           "write_coco_captions", "read_vqa", "write_vqa",
           "read_nlvr2", "write_nlvr2"]
