"""Checkpoints under OUTPUT/checkpoints/, written so that a kill during a save never spoils the last good one,
and their export to plain safetensors weights.

A save goes to `step_N.partial/` (DeepSpeed's own files, every rank writing its shards, plus config.json);
once every rank is done, rank 0 flushes the files to disk, renames the folder to `step_N/` and then replaces
the `latest` file (written to a temporary file and renamed over, so it is always whole). A kill at any point
leaves `latest` naming a complete checkpoint; leftover `.partial` folders are removed by the next save.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import torch.distributed as dist

logger = logging.getLogger(__name__)

LATEST = "latest"
_TAG = re.compile(r"^step_(\d+)$")


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def latest_tag(root) -> str | None:
    """The tag of the last complete checkpoint under root, or None."""
    path = Path(root) / LATEST
    if not path.is_file():
        return None
    tag = path.read_text().strip()
    if not _TAG.match(tag) or not (Path(root) / tag).is_dir():
        raise ValueError(f"{path}: names {tag!r}, which is not a complete checkpoint folder in {root}")
    return tag


class CheckpointManager:
    def __init__(self, root, is_main: bool, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep: expected at least 1 checkpoint to keep, got {keep}")
        self.root, self.is_main, self.keep = Path(root), is_main, keep

    def save(self, engine, step: int, files: dict[str, str]) -> Path:
        """Saves the engine at `step` (all ranks call this); files: extra {name: text} written beside it."""
        tag = f"step_{step:08d}"
        partial = self.root / f"{tag}.partial"
        if self.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob("*.partial"):
                shutil.rmtree(stale)
        dist.barrier()
        engine.save_checkpoint(str(self.root), tag=partial.name, client_state={"step": step}, save_latest=False)
        dist.barrier()
        if self.is_main:
            for name, text in files.items():
                (partial / name).write_text(text)
            _fsync_tree(partial)
            final = self.root / tag
            if final.exists():
                shutil.rmtree(final)
            os.rename(partial, final)
            _fsync_dir(self.root)
            _write_atomically(self.root / LATEST, tag + "\n")
            self._prune()
        dist.barrier()
        return self.root / tag

    def _prune(self) -> None:
        """Removes all but the `keep` newest complete checkpoints."""
        tags = sorted(p.name for p in self.root.iterdir() if p.is_dir() and _TAG.match(p.name))
        for old in tags[:-self.keep]:
            shutil.rmtree(self.root / old)

    def load(self, engine) -> int | None:
        """Restores the last complete checkpoint into the engine; returns its step, or None if there is none."""
        tag = latest_tag(self.root)
        if tag is None:
            return None
        path, client_state = engine.load_checkpoint(str(self.root), tag=tag)
        if path is None:
            raise ValueError(f"{self.root / tag}: DeepSpeed could not load this checkpoint")
        logger.info("resumed from %s", path)
        return int(client_state["step"])


def export_safetensors(checkpoint_root, out_dir, tag: str | None = None) -> Path:
    """fp32 weights of a checkpoint, gathered from its ZeRO partitions by DeepSpeed's zero_to_fp32 function,
    written as out_dir/model.safetensors with the model's config.json beside them."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import save_file

    root = Path(checkpoint_root)
    tag = tag or latest_tag(root)
    if tag is None:
        raise ValueError(f"checkpoint_root: no complete checkpoint in {root} (no `latest` file)")
    state = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().contiguous() for name, t in state.items()}, str(out / "model.safetensors"))
    config = root / tag / "config.json"
    if config.is_file():
        shutil.copyfile(config, out / "config.json")
    return out / "model.safetensors"
