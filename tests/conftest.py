"""Shared test set-up: Triton kernels run through Triton's interpreter where there is no GPU, and GPU-marked
tests skip on machines without CUDA."""

import os

import pytest
import torch

# Triton reads TRITON_INTERPRET when a kernel module is imported, so it is set here, before any test module
# imports semvlp.kernels (semvlp itself imports them only on first use).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run bench/gpu_check.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
