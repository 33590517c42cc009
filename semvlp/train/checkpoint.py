"""Checkpoints under OUTPUT/checkpoints/, written so that a kill during a save never spoils the last good one,
and their export to plain safetensors weights.

A save goes to `step_N.partial/` (DeepSpeed's own files, every rank writing its shards, plus config.json);
once every rank is done, rank 0 records every file's size and sha256 in `manifest.json`, flushes the files to
disk, renames the folder to `step_N/` and then replaces the `latest` file (written to a temporary file and
renamed over, so it is always whole). A kill at any point leaves `latest` naming a complete checkpoint; leftover
`.partial` folders are removed by the next save.

Resume and export first check the checkpoint (`verify_checkpoint`): its files against the manifest, and the
pickles of its `.pt` files for anything but weights; then DeepSpeed reads them weights-only (`safe_load`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from ..model import SemVLPConfig, SemVLPForPretraining
from ..model.pretrained_io import save_pretrained_folder
from .engine import parameter_groups
from .manifest import verify_manifest, write_manifest
from .safe_load import check_weights_only, load_weights_only, weights_only_loads

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


def _check(folder: Path) -> bool:
    """verify_manifest and check_weights_only of every .pt file; False when the folder has no manifest."""
    verified = verify_manifest(folder)
    for path in sorted(folder.rglob("*.pt")):
        check_weights_only(path)
    return verified


def _newest_good_other(root: Path, tag: str) -> str:
    """Where to go instead of root/tag: the newest other checkpoint with a manifest that passes _check."""
    others = sorted((p.name for p in root.iterdir() if p.is_dir() and _TAG.match(p.name) and p.name != tag),
                    reverse=True)
    for other in others:
        try:
            good = _check(root / other)
        except ValueError:
            good = False
        if good:
            return (f"The newest good checkpoint is {root / other}: resume from it by writing {other!r} into "
                    f"{root / LATEST}, or export it with --tag {other}")
    return f"No other checkpoint in {root} passes these checks"


def verify_checkpoint(root, tag: str) -> None:
    """Refuses the checkpoint root/tag (ValueError naming the file, and the newest other checkpoint that passes)
    when a file is missing, added or altered since the save (manifest.json) or a .pt file holds anything but
    weights. A checkpoint written before manifests is checked for the latter only, with a warning."""
    root = Path(root)
    try:
        verified = _check(root / tag)
    except ValueError as error:
        raise type(error)(f"{error}. {_newest_good_other(root, tag)}") from None
    if not verified:
        logger.warning("%s has no manifest.json (written by an earlier semvlp): its files cannot be checked for "
                       "corruption; they are still loaded weights-only", root / tag)


def _from_main(text: str, device) -> str:
    """Rank 0's `text` on every rank (sent as UTF-8 bytes in tensors, so nothing is unpickled)."""
    data = torch.tensor(list(text.encode()), dtype=torch.uint8)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    if size.item() == 0:
        return ""
    data = data.to(device) if dist.get_rank() == 0 else torch.empty(size.item(), dtype=torch.uint8, device=device)
    dist.broadcast(data, src=0)
    return bytes(data.cpu().tolist()).decode()


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
            write_manifest(partial)
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

    def _verify_on_main(self, engine, tag: str) -> None:
        """verify_checkpoint on the main rank (rank 0; the files are shared), whose refusal every rank raises."""
        error = None
        if self.is_main:
            try:
                verify_checkpoint(self.root, tag)
            except ValueError as e:
                error = e
        message = _from_main(str(error) if error is not None else "", engine.device)
        if error is not None:
            raise error
        if message:
            raise ValueError(message)

    def start_step(self, engine, resume: bool) -> int:
        """The step a run starts at: 0, or with `resume` the restored latest checkpoint's step (0, with a
        warning, when there is none yet)."""
        if not resume:
            return 0
        resumed = self.load(engine)
        if resumed is None:
            logger.warning("--resume: no checkpoint in %s, starting from step 0", self.root)
        return resumed or 0

    def load(self, engine) -> int | None:
        """Restores the last complete checkpoint into the engine, after verify_checkpoint; returns its step, or
        None if there is none."""
        tag = latest_tag(self.root)
        if tag is None:
            return None
        self._verify_on_main(engine, tag)
        with weights_only_loads(self.root / tag):
            path, client_state = engine.load_checkpoint(str(self.root), tag=tag)
        if path is None:
            raise ValueError(f"{self.root / tag}: DeepSpeed could not load this checkpoint")
        logger.info("resumed from %s", path)
        return int(client_state["step"])


def _stage0_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The fp32 weights of a ZeRO stage 0 checkpoint, which has no optimizer partitions for zero_to_fp32: its model
    states file holds the module, fp32 in an fp32 run; in a bf16 or fp16 run the optimizer's fp32 master weights
    are there too, one list per parameter group of `parameter_groups` (the model is rebuilt from config.json,
    on the meta device, to name them)."""
    path = folder / "mp_rank_00_model_states.pt"
    state = load_weights_only(path, map_location="cpu")
    weights = dict(state["module"])
    masters = (state.get("optimizer") or {}).get("fp32_groups")
    if masters is not None:
        with torch.device("meta"):
            model = SemVLPForPretraining(SemVLPConfig.load(folder / "config.json"))
        names = {id(p): name for name, p in model.named_parameters()}
        groups = [[names[id(p)] for p in group["params"]] for group in parameter_groups(model, 0.0)]
        if [len(g) for g in groups] != [len(g) for g in masters] or any(
                weights[name].shape != master.shape for g, m in zip(groups, masters) for name, master in zip(g, m)):
            raise ValueError(f"{path}: its fp32 master weights do not match the parameters of the model in "
                             f"{folder / 'config.json'}")
        weights.update((name, master) for g, m in zip(groups, masters) for name, master in zip(g, m))
    elif any(t.is_floating_point() and t.dtype != torch.float32 for t in weights.values()):
        raise ValueError(f"{path}: a 16-bit module without fp32 master weights; expected a checkpoint of semvlp")
    return {name: t.float() if t.is_floating_point() else t for name, t in weights.items()}


def export_safetensors(checkpoint_root, out_dir, tag: str | None = None, *, vocab=None, data: str | None = None,
                       results: dict | None = None) -> Path:
    """fp32 weights of a checkpoint (after verify_checkpoint), gathered from its ZeRO partitions by DeepSpeed's
    zero_to_fp32 function reading weights-only (stage 0: `_stage0_weights`), written as out_dir/model.safetensors
    in the save_pretrained layout: with config.json, vocab.txt (when `vocab` is given) and a model card naming
    `data` and `results` when given. Returns the path of model.safetensors."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import save_file

    root = Path(checkpoint_root)
    tag = tag or latest_tag(root)
    if tag is None:
        raise ValueError(f"checkpoint_root: no complete checkpoint in {root} (no `latest` file)")
    if not (root / tag).is_dir():
        raise ValueError(f"tag: {root / tag} is not a checkpoint folder")
    verify_checkpoint(root, tag)
    with weights_only_loads(root / tag):
        if any((root / tag).glob("*_optim_states.pt")):
            state = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
        else:
            state = _stage0_weights(root / tag)
    out = Path(out_dir)
    config = root / tag / "config.json"
    if config.is_file():
        save_pretrained_folder(out, state, SemVLPConfig.load(config), SemVLPForPretraining.__name__, vocab=vocab,
                               data=data, training={"checkpoint": tag}, results=results)
    else:  # a checkpoint from before configs were saved with it: the weights alone
        out.mkdir(parents=True, exist_ok=True)
        save_file({name: t.detach().contiguous() for name, t in state.items()}, str(out / "model.safetensors"))
    return out / "model.safetensors"
