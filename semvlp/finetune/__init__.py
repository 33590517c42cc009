"""Downstream training on the pretrained backbone: question answering, image-text matching and retrieval,
NLVR2-style paired reasoning."""
