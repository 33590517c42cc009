"""save_pretrained / from_pretrained / push_to_hub for semvlp models, in the Hugging Face folder layout:

    config.json         the SemVLPConfig fields plus "model_type": "semvlp", "architectures": [class name] and the
                        class's own arguments (num_answers for question answering)
    model.safetensors   the state_dict (safetensors only: loading never unpickles)
    vocab.txt           the WordPiece vocabulary, when one is given
    README.md           a generated model card: the config, and the data, training and results when known

huggingface_hub is needed only for hub ids and push_to_hub (`semvlp.model.hub`)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from .config import LAYOUT_KEYS, SemVLPConfig, read_json_object
from .hub import import_huggingface_hub, local_folder
from .weight_files import SAFETENSORS, SAFETENSORS_INDEX, load_weights

MODEL_TYPE = "semvlp"
CONFIG = "config.json"
VOCAB = "vocab.txt"
CARD = "README.md"
# What from_pretrained fetches of a hub repository.
HUB_FILES = [CONFIG, SAFETENSORS, SAFETENSORS_INDEX, "*.safetensors", VOCAB, CARD]


def pretrained_config_dict(config: SemVLPConfig, architecture: str, init_args: dict | None = None) -> dict:
    return {"model_type": MODEL_TYPE, "architectures": [architecture], **config.to_dict(), **(init_args or {})}


def read_pretrained_config(path: str | Path, argument: str = "config") -> tuple[SemVLPConfig, dict]:
    """(SemVLPConfig, layout entries) of a config.json: a plain SemVLPConfig file or one with the layout keys
    (model_type, architectures, num_answers); ValueError naming the file for anything else."""
    values = read_json_object(path, argument)
    layout = {key: values.pop(key) for key in LAYOUT_KEYS if key in values}
    if layout.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        raise ValueError(f"{argument}: {path}: model_type {layout['model_type']!r} is not {MODEL_TYPE!r} (a Hugging "
                         "Face BERT checkpoint loads with SemVLPModel.from_hf_bert)")
    architectures = layout.get("architectures", [])
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise ValueError(f"{argument}: {path}: architectures: expected a list of class names, got {architectures!r}")
    try:
        return SemVLPConfig.from_dict(values), layout
    except ValueError as err:
        raise ValueError(f"{argument}: {path}: {err}") from None


def model_card(architecture: str, config_dict: dict, files: list[str], *, data: str | None = None,
               training: dict | None = None, results: dict | None = None) -> str:
    """README.md of a saved model: Hub metadata, how to load it, its config, and data, training and results
    when they are known."""
    lines = ["---", "library_name: semvlp", "tags:", "- semvlp", "- vision-language", "- pytorch", "---", "",
             f"# {architecture}", "",
             "A SemVLP model (one shared Transformer over text tokens and image region features, run as a "
             "single-stream or a two-stream model; arXiv 2103.07829), saved by semvlp.", "",
             "```python", f"from semvlp.model import {architecture}", "",
             f'model = {architecture}.from_pretrained("path/or/hub-id")', "```", "",
             "## Files", ""] + [f"- `{name}`" for name in files] + [
             "", "## Config", "", "```json", json.dumps(config_dict, indent=2), "```", ""]
    if data is not None:
        lines += ["## Data", "", str(data), ""]
    if training:
        lines += ["## Training", ""] + [f"- {key}: {value}" for key, value in training.items()] + [""]
    if results:
        lines += ["## Results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
                  for key, value in sorted(_flat(results).items())] + [""]
    return "\n".join(lines)


def _flat(values: dict, prefix: str = "") -> dict:
    """Nested results ({"val": {"accuracy": ...}}) as one level ({"val/accuracy": ...})."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def save_pretrained_folder(folder: str | Path, state_dict: dict[str, torch.Tensor], config: SemVLPConfig,
                           architecture: str, *, init_args: dict | None = None, vocab: str | Path | None = None,
                           data: str | None = None, training: dict | None = None,
                           results: dict | None = None) -> Path:
    """Write the layout (module docstring) to `folder`; returns the folder. A README.md there is replaced."""
    folder = Path(folder)
    if vocab is not None and not Path(vocab).is_file():
        raise ValueError(f"vocab: {vocab} is not a file (expected a WordPiece vocab.txt)")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(folder / SAFETENSORS),
              metadata={"format": "pt"})
    values = pretrained_config_dict(config, architecture, init_args)
    (folder / CONFIG).write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    files = [CONFIG, SAFETENSORS]
    if vocab is not None:
        if Path(vocab).resolve() != (folder / VOCAB).resolve():
            shutil.copyfile(vocab, folder / VOCAB)
        files.append(VOCAB)
    card = model_card(architecture, values, files, data=data, training=training, results=results)
    (folder / CARD).write_text(card, encoding="utf-8")
    return folder


class PretrainedMixin:
    """save_pretrained / from_pretrained / push_to_hub for a module built as `cls(config, **init_args)`.

    A class lists the names of its constructor arguments besides the config in `_pretrained_args` and keeps
    each as an attribute of the same name."""

    _pretrained_args: tuple[str, ...] = ()

    def init_args(self) -> dict:
        """The constructor arguments besides the config: `type(self)(self.config, **self.init_args())` builds a
        fresh model of the same shape."""
        return {name: getattr(self, name) for name in self._pretrained_args}

    def save_pretrained(self, save_directory: str | Path, *, vocab: str | Path | None = None, data: str | None = None,
                        training: dict | None = None, results: dict | None = None) -> Path:
        """Write config.json, model.safetensors, vocab.txt (when `vocab` is given) and a model card (README.md,
        naming `data`, `training` and `results` when given) to `save_directory`; returns it."""
        return save_pretrained_folder(save_directory, self.state_dict(), self.config, type(self).__name__,
                                      init_args=self.init_args(), vocab=vocab, data=data, training=training,
                                      results=results)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, map_location: str | torch.device = "cpu",
                        strict: bool = True, revision: str | None = None, cache_dir: str | Path | None = None,
                        token: str | bool | None = None, local_files_only: bool = False):
        """The model saved in a folder (save_pretrained, `semvlp pretrain --export`, `semvlp finetune`) or a Hub
        repository (needs huggingface_hub), in eval mode. Weights are read from safetensors only, one file or
        shards. `strict=False` leaves parameters the file lacks as initialised (e.g. a head added later)."""
        folder = local_folder(name_or_path, "name_or_path", HUB_FILES, revision=revision, cache_dir=cache_dir,
                              token=token, local_files_only=local_files_only)
        config, layout = read_pretrained_config(folder / CONFIG, "name_or_path")
        saved = layout.get("architectures") or [cls.__name__]
        if cls.__name__ not in saved:
            raise ValueError(f"name_or_path: {folder} holds a {saved[0]}, not a {cls.__name__}; load it with "
                             f"{saved[0]}.from_pretrained (or fine-tune from it with `semvlp finetune --init`)")
        missing = [name for name in cls._pretrained_args if name not in layout]
        if missing:
            raise ValueError(f"name_or_path: {folder / CONFIG}: expected {missing} for a {cls.__name__}")
        model = cls(config, **{name: layout[name] for name in cls._pretrained_args})
        state = load_weights(folder, argument="name_or_path")
        try:
            model.load_state_dict(state, strict=strict)
        except RuntimeError as err:
            raise ValueError(f"name_or_path: the weights in {folder} do not fit the {cls.__name__} its config.json "
                             f"describes: {' '.join(str(err).split())}") from None
        return model.to(map_location).eval()

    def push_to_hub(self, repo_id: str, *, vocab: str | Path | None = None, data: str | None = None,
                    training: dict | None = None, results: dict | None = None,
                    commit_message: str = "Upload semvlp model", private: bool | None = None,
                    token: str | None = None, revision: str | None = None, create_pr: bool = False):
        """save_pretrained into a temporary folder and upload it to the Hub repository `repo_id` (created if
        needed) in one commit; returns the commit's information. Needs huggingface_hub."""
        hub = import_huggingface_hub("push_to_hub")
        api = hub.HfApi(token=token)
        repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, vocab=vocab, data=data, training=training, results=results)
            return api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=tmp,
                                     commit_message=commit_message, revision=revision, create_pr=create_pr)
