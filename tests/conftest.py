"""Shared test set-up: Triton kernels run through Triton's interpreter where there is no GPU, GPU-marked tests
skip on machines without CUDA, and a one-rank process group for the tests that need one."""

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


_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def group():
    """A one-rank gloo process group in this process, for the module's tests."""
    # Imported here: semvlp must not load before TRITON_INTERPRET is set above.
    from semvlp.train.distributed import init_distributed, shutdown

    saved = {k: os.environ.get(k) for k in _VARIABLES}
    env = init_distributed()
    yield env
    shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
