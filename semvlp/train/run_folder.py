"""The output folder of `semvlp pretrain`: a run never writes over an earlier run's history.

A new run (no --resume) refuses a folder that already holds an earlier run's checkpoints or metrics, because
writing there would truncate metrics.jsonl and mix its checkpoints with the old ones (which are pruned by step
number, whichever run wrote them). --resume continues that run; --overwrite removes exactly those files first.
Other files in the folder (a data/ or vocab/ folder beside the run, for instance) are never touched.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

# What a run writes that makes up its history (config.json and the like are rewritten by every run).
HISTORY = ("checkpoints", "metrics.jsonl", "eval.jsonl", "tensorboard", "results.json", "curves.png", "export")


def history(out) -> list[Path]:
    """The paths of an earlier run's history present in `out`."""
    return [Path(out) / name for name in HISTORY if (Path(out) / name).exists()]


def check_output(output, resume: bool, overwrite: bool) -> None:
    """Before any process group, data or engine: `output` is (or can become) a folder this process writes to,
    and a new run does not land on an earlier run's history. Raises ValueError naming the folder."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output: {out} is a file; expected a folder for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(f"output: cannot write to {out} ({err.strerror or err})") from err
    found = history(out)
    if found and not resume and not overwrite:
        raise ValueError(f"output: {out} already holds a run ({', '.join(p.name for p in found)}); pass --resume "
                         f"to continue it, --overwrite to delete those and start again, or choose another --output")


def remove_history(out) -> None:
    """--overwrite: removes the earlier run's checkpoints, metrics and results from `out` (rank 0 only)."""
    for path in history(out):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        logger.warning("--overwrite: removed %s", path)
