"""Import of Hugging Face BERT checkpoints (config.json and safetensors or .bin weights, one file or shards; a
local folder or a Hub id) into the shared encoder."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .config import SemVLPConfig, read_json_object
from .hub import local_folder
from .weight_files import BIN_INDEX, SAFETENSORS, SAFETENSORS_INDEX, load_weights, weight_files

logger = logging.getLogger(__name__)

# What is fetched of a Hub repository: its safetensors weights, or where it has none, its .bin weights.
_HUB_SAFETENSORS = ["config.json", SAFETENSORS, SAFETENSORS_INDEX, "model-*.safetensors"]
_HUB_BIN = ["config.json", "pytorch_model.bin", BIN_INDEX, "pytorch_model-*.bin"]

# Hugging Face BERT key (without the "bert." prefix) -> our key relative to SemVLPModel.
_EMBEDDINGS = {
    "embeddings.word_embeddings.weight": "text_embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "text_embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "text_embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "text_embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "text_embeddings.norm.bias",
}
_LAYER = {
    "attention.output.dense": "self_attention.output.dense",
    "attention.output.LayerNorm": "self_attention.output.norm",
    "intermediate.dense": "feed_forward.intermediate",
    "output.dense": "feed_forward.output",
    "output.LayerNorm": "feed_forward.norm",
}
# The submodules of SemVLPModel the keys above name.
_BACKBONE_PARTS = ("text_embeddings", "region_embeddings", "encoder")
# BertForPreTraining's MLM head -> SemVLPForPretraining (imported only into a model that has the head).
_MLM_HEAD = {
    "cls.predictions.transform.dense.weight": "mlm_head.transform.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm_head.transform.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_head.transform.norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_head.transform.norm.bias",
    "cls.predictions.bias": "mlm_head.bias",
}


def _backbone_prefix(model: nn.Module) -> str:
    """'' for a SemVLPModel, 'semvlp.' for a model that holds one as `.semvlp` (told by the modules the key
    names need, so this module does not import the backbone that imports it)."""
    def is_backbone(module) -> bool:
        return isinstance(module, nn.Module) and all(hasattr(module, name) for name in _BACKBONE_PARTS)

    if is_backbone(model):
        return ""
    if is_backbone(getattr(model, "semvlp", None)):
        return "semvlp."
    raise ValueError(f"model: expected a SemVLPModel or a model with a `.semvlp` backbone, got {type(model).__name__}")


def _checkpoint_file(path: str | Path, name: str) -> Path:
    f = Path(path) / name
    if not f.is_file():
        raise ValueError(f"path: expected a Hugging Face BERT checkpoint directory with {name}, "
                         f"but {f} does not exist")
    return f


def checkpoint_folder(path: str | Path) -> Path:
    """`path` when it is a folder; else the snapshot of the Hub repository it names (needs huggingface_hub)."""
    folder = local_folder(path, "path", _HUB_SAFETENSORS)
    if Path(path).is_dir() or (folder / SAFETENSORS).is_file() or (folder / SAFETENSORS_INDEX).is_file():
        return folder
    return local_folder(path, "path", _HUB_BIN)


def _read_hf_config(path: str | Path) -> dict:
    return read_json_object(_checkpoint_file(path, "config.json"), "path")


def _expected_layer_keys(layer: int) -> list[str]:
    """The Hugging Face keys (without "bert.") of one encoder layer."""
    parts = [f"attention.self.{name}" for name in ("query", "key", "value")] + list(_LAYER)
    return [f"encoder.layer.{layer}.{part}.{suffix}" for part in parts for suffix in ("weight", "bias")]


def _num_layers(path: str | Path) -> int:
    num_layers = _read_hf_config(path).get("num_hidden_layers")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"path: {Path(path) / 'config.json'}: expected num_hidden_layers, a positive integer, "
                         f"got {num_layers!r}")
    return num_layers


def _check_layers_present(hf_state: dict, num_layers: int, path: Path) -> None:
    """ValueError naming the file unless it holds every tensor of the num_layers encoder layers its config.json
    names: a model left with randomly initialised layers must not pass for a pretrained one."""
    present = {k[len("bert."):] if k.startswith("bert.") else k for k in hf_state}
    missing = [key for i in range(num_layers) for key in _expected_layer_keys(i) if key not in present]
    if not missing:
        return
    layers = sorted({int(key.split(".")[2]) for key in missing})
    what = "no complete encoder layer" if len(layers) == num_layers else f"no complete encoder layer {layers}"
    raise ValueError(f"path: {path} holds {what} (of the {num_layers} its config.json names); expected Hugging Face "
                     f"BERT keys such as {missing[:3]} (\"bert.\" prefix optional), {len(missing)} missing in all")


def _map_checkpoint(hf_state: dict[str, torch.Tensor], num_layers: int, prefix: str):
    """HF tensors -> {our key: tensor}, and the HF keys left unused."""
    mapped, used = {}, set()
    stripped = {(k[len("bert."):] if k.startswith("bert.") else k): k for k in hf_state}
    for hf_key, ours in _EMBEDDINGS.items():
        if hf_key in stripped:
            mapped[prefix + ours] = hf_state[stripped[hf_key]]
            used.add(stripped[hf_key])
    for i in range(num_layers):
        hf_layer, our_layer = f"encoder.layer.{i}.", f"{prefix}encoder.layers.{i}."
        for hf_part, our_part in _LAYER.items():
            for suffix in ("weight", "bias"):
                key = f"{hf_layer}{hf_part}.{suffix}"
                if key in stripped:
                    mapped[f"{our_layer}{our_part}.{suffix}"] = hf_state[stripped[key]]
                    used.add(stripped[key])
        for suffix in ("weight", "bias"):
            parts = [f"{hf_layer}attention.self.{name}.{suffix}" for name in ("query", "key", "value")]
            if all(p in stripped for p in parts):
                # The fused projection stores [query; key; value] along the output dimension.
                mapped[f"{our_layer}self_attention.qkv.{suffix}"] = torch.cat([hf_state[stripped[p]] for p in parts])
                used.update(stripped[p] for p in parts)
    if prefix:
        for hf_key, ours in _MLM_HEAD.items():
            if hf_key in hf_state:
                mapped[ours] = hf_state[hf_key]
                used.add(hf_key)
    return mapped, sorted(set(hf_state) - used)


def load_hf_bert(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a Hugging Face BERT checkpoint directory into the text embeddings and the shared encoder.

    Args:
        model: a SemVLPModel, or a model holding one as `.semvlp` (e.g. SemVLPForPretraining, which also
            takes BertForPreTraining's MLM transform and bias).
        path: a folder with config.json and the weights, Hugging Face key names ("bert." prefix optional):
            model.safetensors, shards named by model.safetensors.index.json, pytorch_model.bin or shards named
            by pytorch_model.bin.index.json (read with torch.load(weights_only=True): a pickle holding anything
            but tensors is refused); or a Hugging Face Hub id (needs huggingface_hub).

    Returns:
        (unused_keys, unfilled_parameters): checkpoint keys that were not loaded, and the model's parameter
        names that the checkpoint did not fill (region embeddings, cross-attention, most heads).
    """
    prefix = _backbone_prefix(model)
    path = checkpoint_folder(path)
    num_layers = _num_layers(path)
    files, weight_map = weight_files(path, allow_bin=True)
    weights = files[0] if weight_map is None else path / (SAFETENSORS_INDEX if files[0].suffix == ".safetensors"
                                                          else BIN_INDEX)
    hf_state = load_weights(path, allow_bin=True)
    if num_layers > model.config.num_hidden_layers:
        raise ValueError(f"path: the checkpoint has {num_layers} layers, more than the model's "
                         f"{model.config.num_hidden_layers}")
    mapped, unused = _map_checkpoint(hf_state, num_layers, prefix)
    params = dict(model.named_parameters())
    for key, tensor in mapped.items():
        if tuple(params[key].shape) != tuple(tensor.shape):
            raise ValueError(f"path: checkpoint tensor for {key} has shape {tuple(tensor.shape)}, "
                             f"the model expects {tuple(params[key].shape)}")
    _check_layers_present(hf_state, num_layers, weights)
    with torch.no_grad():
        for key, tensor in mapped.items():
            params[key].copy_(tensor)
    unfilled = sorted(set(params) - set(mapped))
    logger.info("loaded %d tensors from %s; %d checkpoint keys unused, %d parameters not filled",
                len(mapped), path, len(unused), len(unfilled))
    return unused, unfilled


def build_from_hf_bert(model_class, path: str | Path, **overrides):
    """`model_class(config)` sized from the checkpoint's config.json, overrides applied, weights loaded."""
    path = checkpoint_folder(path)
    model = model_class(SemVLPConfig.from_hf_bert_config(_read_hf_config(path), **overrides))
    load_hf_bert(model, path)
    return model
