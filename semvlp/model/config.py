"""SemVLPConfig: one dataclass describing the model and its pretraining tasks, saved as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

# Hugging Face BERT activation names -> the `approximate` form of semvlp.ops.bias_gelu.
GELU_FORMS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
PRETRAINING_TASKS = ("mlm", "mrm_feat", "mrm_label", "itm", "qa", "grounding")
MODES = ("single", "two")


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
    tasks: dict[str, bool] = field(default_factory=lambda: {t: True for t in PRETRAINING_TASKS})
    loss_weights: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in PRETRAINING_TASKS})
    # Kernel backend for every op ("auto" or a name from semvlp.backends()).
    backend: str = "auto"

    def __post_init__(self):
        if self.cross_layers is None:
            self.cross_layers = list(range(self.num_hidden_layers // 2, self.num_hidden_layers))
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "visual_feat_dim", "visual_pos_dim",
                     "max_regions", "num_region_labels", "num_qa_labels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size: {self.hidden_size} is not divisible by num_attention_heads "
                             f"({self.num_attention_heads})")
        if self.hidden_act not in GELU_FORMS:
            raise ValueError(f"hidden_act: expected one of {sorted(GELU_FORMS)}, got {self.hidden_act!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1), got {value!r}")
        bad = [i for i in self.cross_layers if not (isinstance(i, int) and 0 <= i < self.num_hidden_layers)]
        if bad or len(set(self.cross_layers)) != len(self.cross_layers):
            raise ValueError(f"cross_layers: expected distinct layer indices in [0, {self.num_hidden_layers}), "
                             f"got {self.cross_layers}")
        for name in ("tasks", "loss_weights"):
            keys = set(getattr(self, name))
            if keys != set(PRETRAINING_TASKS):
                raise ValueError(f"{name}: expected exactly the keys {list(PRETRAINING_TASKS)}, got {sorted(keys)}")
        if not any(self.tasks.values()):
            raise ValueError("tasks: expected at least one task switched on, got none")

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"SemVLPConfig: unknown fields {unknown}")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "SemVLPConfig":
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(values)

    @classmethod
    def from_hf_bert_config(cls, hf: dict, **overrides) -> "SemVLPConfig":
        """Sizes from a Hugging Face BERT config.json (as a dict); other fields default unless overridden."""
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type: only 'absolute' is supported, got "
                             f"{hf['position_embedding_type']!r}")
        shared = {f.name for f in dataclasses.fields(cls)} & set(hf) - {"cross_layers"}
        values = {name: hf[name] for name in shared}
        values.update(overrides)
        return cls.from_dict(values)
