"""The embedded synthetic data: seeded scenes of coloured shapes (`scenes`), their captions and questions
(`language`), NLVR2-style statements about pairs of scenes (`paired`), pooled CNN region features
(`cnn_features`), the dataset writer (`generate`) and the easy-VQA converter (`easy_vqa`)."""

from .generate import REGION_FEATURES, SPLITS, generate_split, to_corpus, write_synthetic

__all__ = ["REGION_FEATURES", "SPLITS", "generate_split", "to_corpus", "write_synthetic"]
