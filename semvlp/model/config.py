"""SemVLPConfig: one dataclass describing the model and its pretraining tasks, saved as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

# Hugging Face BERT activation names -> the `approximate` form of semvlp.ops.bias_gelu.
GELU_FORMS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
PRETRAINING_TASKS = ("mlm", "mrm_feat", "mrm_label", "itm", "qa", "grounding", "region_position")
# Tasks added after configs were first saved: a config that leaves one out has it off (weight 1.0), so those
# configs and the models saved with them keep loading and training as before.
OPTIONAL_TASKS = ("region_position",)
MODES = ("single", "two")
# Entries of a save_pretrained config.json (semvlp.model.pretrained_io) that describe the saved model, not the config.
LAYOUT_KEYS = ("model_type", "architectures", "num_answers")
_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
          "max_position_embeddings", "type_vocab_size", "visual_feat_dim", "visual_pos_dim", "max_regions",
          "num_region_labels", "num_qa_labels")
_REALS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not to a config


def _is_real(value) -> bool:
    return _is_int(value) or isinstance(value, float)


def _shown(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def read_json_object(path: str | Path, what: str = "config") -> dict:
    """The JSON object in a file; ValueError naming the file when it is missing, not a file, not UTF-8, not JSON
    or not an object."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{what}: {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{what}: {path} is a directory, expected a JSON file") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{what}: {path} is not UTF-8 text ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{what}: {path} is not valid JSON ({err})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{what}: {path} holds a JSON {type(values).__name__}, expected an object of fields")
    return values


def config_differences(saved: dict, current: dict) -> list[str]:
    """The fields in which two config dicts differ, `name: saved -> current`; task switches and loss weights
    per task (`loss_weights.itm: 1.0 -> 5.0`)."""
    changes = []
    for name in sorted(set(saved) | set(current)):
        old, new = saved.get(name), current.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += [f"{name}.{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
                        if old.get(key) != new.get(key)]
        elif old != new:
            changes.append(f"{name}: {old!r} -> {new!r}")
    return changes


@dataclass
class SemVLPConfig:
    """Model size (BERT-base defaults, Hugging Face BERT field names), region inputs and pretraining tasks."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Indices of the layers that carry the cross-modal plug; None = the top half.
    cross_layers: list[int] | None = None
    # Region inputs: detector feature size, box feature size (4: xyxy, 5: +area, 7: +w,h,area), max regions.
    visual_feat_dim: int = 2048
    visual_pos_dim: int = 5
    max_regions: int = 100
    # Label spaces of the heads: region object classes and QA answers.
    num_region_labels: int = 1600
    num_qa_labels: int = 9500
    # Pretraining tasks: on/off switches and loss weights. Every loss is a mean over its own targets (masked
    # words, masked regions, samples), so equal weights balance them. (LXMERT's 6.67 = 1/0.15 on its visual
    # losses undoes a mean over all regions, masked or not; applied to a mean over masked regions only, it
    # would let the region losses drown the rest.)
    tasks: dict[str, bool] = field(default_factory=lambda: {t: t not in OPTIONAL_TASKS for t in PRETRAINING_TASKS})
    loss_weights: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in PRETRAINING_TASKS})
    # region_position: the layer (0-based) whose output the phrase words predict their region's position from;
    # None = the second-to-last layer's, so that the last layer can compare the positions two phrases carry.
    region_position_layer: int | None = None
    # ITM adds to its pooled score each sample's highest per-token score (semvlp.model.heads.TokenMatchScore), in
    # pretraining and in the downstream matching model. Off in configs saved before it came in.
    itm_token_score: bool = False
    # Kernel backend for every op ("auto" or a name from semvlp.backends()).
    backend: str = "auto"

    def __post_init__(self):
        if self.cross_layers is None and _is_int(self.num_hidden_layers):
            self.cross_layers = list(range(self.num_hidden_layers // 2, self.num_hidden_layers))
        for name, default in (("tasks", False), ("loss_weights", 1.0)):
            values = getattr(self, name)
            if isinstance(values, dict):
                setattr(self, name, {**{t: default for t in OPTIONAL_TASKS}, **values})
        self.validate()
        # Whole numbers where reals are expected become floats, so saved configs compare and read alike.
        for name in _REALS:
            setattr(self, name, float(getattr(self, name)))
        self.loss_weights = {task: float(weight) for task, weight in self.loss_weights.items()}
        self.cross_layers = list(self.cross_layers)

    def validate(self) -> None:
        """ValueError naming the first field of the wrong type or out of its range."""
        for name in _SIZES:
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name}: expected a positive int, got {_shown(value)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size: {self.hidden_size} is not divisible by num_attention_heads "
                             f"({self.num_attention_heads})")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in GELU_FORMS:
            raise ValueError(f"hidden_act: expected one of {sorted(GELU_FORMS)}, got {_shown(self.hidden_act)}")
        for name in _REALS:
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {_shown(value)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1), got {value!r}")
        for name in ("initializer_range", "layer_norm_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)!r}")
        if not _is_int(self.pad_token_id) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id: expected a token id in [0, vocab_size={self.vocab_size}), "
                             f"got {_shown(self.pad_token_id)}")
        self._validate_cross_layers()
        self._validate_tasks()
        layer = self.region_position_layer
        if layer is not None and not (_is_int(layer) and 0 <= layer < self.num_hidden_layers):
            raise ValueError(f"region_position_layer: expected null or a layer index in [0, {self.num_hidden_layers}), "
                             f"got {_shown(layer)}")
        if not isinstance(self.itm_token_score, bool):
            raise ValueError(f"itm_token_score: expected true or false, got {_shown(self.itm_token_score)}")
        if not isinstance(self.backend, str) or not self.backend:
            raise ValueError(f"backend: expected \"auto\" or a backend name, got {_shown(self.backend)}")

    def _validate_cross_layers(self) -> None:
        layers = self.cross_layers
        if not isinstance(layers, (list, tuple)):
            raise ValueError(f"cross_layers: expected a list of layer indices, got {_shown(layers)}")
        if not all(_is_int(i) and 0 <= i < self.num_hidden_layers for i in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"cross_layers: expected distinct layer indices in [0, {self.num_hidden_layers}), "
                             f"got {list(layers)}")

    def _validate_tasks(self) -> None:
        for name in ("tasks", "loss_weights"):
            values = getattr(self, name)
            if not isinstance(values, dict):
                raise ValueError(f"{name}: expected an object with the keys {list(PRETRAINING_TASKS)}, "
                                 f"got {_shown(values)}")
            if set(values) != set(PRETRAINING_TASKS):
                raise ValueError(f"{name}: expected exactly the keys {list(PRETRAINING_TASKS)}, "
                                 f"got {sorted(values)}")
        for task, switch in self.tasks.items():
            if not isinstance(switch, bool):
                raise ValueError(f"tasks.{task}: expected true or false, got {_shown(switch)}")
        if not any(self.tasks.values()):
            raise ValueError("tasks: expected at least one task switched on, got none")
        for task, weight in self.loss_weights.items():
            if not _is_real(weight) or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"loss_weights.{task}: expected a finite number >= 0, got {_shown(weight)}")

    @property
    def region_position_source(self) -> int:
        """The layer whose output the region_position task reads the phrase words from."""
        if self.region_position_layer is not None:
            return self.region_position_layer
        return max(self.num_hidden_layers - 2, 0)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def gelu_approximate(self) -> str:
        return GELU_FORMS[self.hidden_act]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "SemVLPConfig":
        if not isinstance(values, dict):
            raise ValueError(f"SemVLPConfig: expected an object of fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"SemVLPConfig: unknown fields {unknown}")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "SemVLPConfig":
        """The config in a JSON file (a save_pretrained config.json too); ValueError naming the file and the bad
        field."""
        values = read_json_object(path)
        if values.get("model_type", "semvlp") != "semvlp":
            raise ValueError(f"config: {path}: model_type {values['model_type']!r} is not 'semvlp'")
        try:
            return cls.from_dict({name: value for name, value in values.items() if name not in LAYOUT_KEYS})
        except ValueError as err:
            raise ValueError(f"config: {path}: {err}") from None

    @classmethod
    def from_hf_bert_config(cls, hf: dict, **overrides) -> "SemVLPConfig":
        """Sizes from a Hugging Face BERT config.json (as a dict); other fields default unless overridden."""
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type: only 'absolute' is supported, got "
                             f"{hf['position_embedding_type']!r}")
        shared = {f.name for f in dataclasses.fields(cls)} & set(hf) - {"cross_layers"}
        # null in a Hugging Face config means "not set" (e.g. pad_token_id): our default applies.
        values = {name: hf[name] for name in shared if hf[name] is not None}
        values.update(overrides)
        return cls.from_dict(values)
