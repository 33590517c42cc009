import os

import pytest

from semvlp.train.distributed import init_distributed, shutdown

_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def group():
    """A one-rank gloo process group in this process, for the module's tests."""
    saved = {k: os.environ.get(k) for k in _VARIABLES}
    env = init_distributed()
    yield env
    shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
