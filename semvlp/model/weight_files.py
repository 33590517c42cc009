"""Reading the weights of a checkpoint folder in the Hugging Face layout: one safetensors file, safetensors shards
named by model.safetensors.index.json, and (where the caller allows it) PyTorch .bin files and their shards.

A .bin file is a pickle: it is read with `torch.load(weights_only=True)`, which refuses anything but tensors and
plain containers, so a crafted file cannot run code."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file

from .config import read_json_object

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"


def weight_files(folder: str | Path, *, allow_bin: bool, argument: str = "path") -> tuple[list[Path], dict | None]:
    """The weight files of a folder, in the order of preference: model.safetensors, the shards of
    model.safetensors.index.json, then (allow_bin) pytorch_model.bin and the shards of its index; and the index's
    weight_map (tensor name -> shard file name), None for a single file."""
    folder = Path(folder)
    names = (SAFETENSORS, SAFETENSORS_INDEX) + ((BIN, BIN_INDEX) if allow_bin else ())
    for name in names:
        path = folder / name
        if path.is_file():
            return _shards(path, argument) if name.endswith(".index.json") else ([path], None)
    raise ValueError(f"{argument}: expected {' or '.join(names)} in {folder}, found none")


def _shards(index: Path, argument: str) -> tuple[list[Path], dict]:
    weight_map = read_json_object(index, argument).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise ValueError(f"{argument}: {index}: expected \"weight_map\", an object of tensor name -> shard file name")
    shards = []
    for name in dict.fromkeys(weight_map.values()):
        # A shard is a file beside the index, never a path that leads elsewhere.
        if Path(name).name != name or name in (".", ".."):
            raise ValueError(f"{argument}: {index}: shard {name!r} is not a file name in the index's folder")
        if not (index.parent / name).is_file():
            raise ValueError(f"{argument}: {index} names the shard {name}, but {index.parent / name} does not exist")
        shards.append(index.parent / name)
    return shards, weight_map


def _load_bin(path: Path, argument: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{argument}: {path} was refused: it holds objects other than tensors and plain containers "
                         f"(read with weights_only=True: {str(err).splitlines()[0]})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{argument}: {path}: expected a state dict of tensor name -> tensor")
    return state


def load_weights(folder: str | Path, *, allow_bin: bool = False, argument: str = "path",
                 device: str = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weights (see `weight_files`); ValueError naming the file for a tensor found
    in two shards or one the index names that its shard lacks."""
    files, weight_map = weight_files(folder, allow_bin=allow_bin, argument=argument)
    state: dict[str, torch.Tensor] = {}
    for path in files:
        part = load_file(str(path)) if path.suffix == ".safetensors" else _load_bin(path, argument)
        twice = sorted(set(part) & set(state))
        if twice:
            raise ValueError(f"{argument}: {path} holds {twice[:3]}, already read from another shard")
        state.update(part)
    missing = sorted(set(weight_map or ()) - set(state))
    if missing:
        raise ValueError(f"{argument}: the index in {folder} names {len(missing)} tensors its shards lack, "
                         f"such as {missing[:3]}")
    return {k: v.to(device) for k, v in state.items()} if device != "cpu" else state
