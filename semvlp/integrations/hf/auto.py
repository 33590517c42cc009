"""transformers' Auto classes for semvlp folders: after `register_auto_classes()` (which importing
semvlp.integrations.hf calls), `AutoConfig.from_pretrained(folder)` reads a saved config.json and
`AutoModel.from_pretrained(folder)` returns the semvlp model it holds (SemVLPForPretraining or a downstream model,
as config.json's "architectures" names it), loaded by that class's from_pretrained.

The model is the semvlp module itself, not a transformers PreTrainedModel around it: its forward takes packed
batches, which transformers' generic machinery (generate, pipelines, Trainer) does not produce."""

from __future__ import annotations

from ...model import (SemVLPConfig, SemVLPForImageTextMatching, SemVLPForPairedReasoning, SemVLPForPretraining,
                      SemVLPForQuestionAnswering)
from ...model.hub import local_folder
from ...model.pretrained_io import CONFIG, HUB_FILES, MODEL_TYPE, read_pretrained_config

ARCHITECTURES = {cls.__name__: cls for cls in (SemVLPForPretraining, SemVLPForQuestionAnswering,
                                               SemVLPForImageTextMatching, SemVLPForPairedReasoning)}
_HUB_ARGUMENTS = ("revision", "cache_dir", "token", "local_files_only")


def semvlp_config(hf_config) -> SemVLPConfig:
    """The SemVLPConfig of a SemVLPHFConfig (the fields of SemVLPConfig it carries)."""
    values = hf_config.to_dict()
    return SemVLPConfig.from_dict({name: values[name] for name in SemVLPConfig.__dataclass_fields__
                                   if name in values})


def _config_class():
    from transformers import PretrainedConfig

    class SemVLPHFConfig(PretrainedConfig):
        """config.json of a semvlp folder as a transformers config: every SemVLPConfig field, "architectures" and
        the class's own arguments (num_answers) are attributes; `semvlp_config(c)` gives the SemVLPConfig."""

        model_type = MODEL_TYPE

    return SemVLPHFConfig


class SemVLPAutoModel:
    """What AutoModel maps model_type "semvlp" to: its from_pretrained returns the semvlp model of the folder."""

    config_class = None  # SemVLPHFConfig, set by register_auto_classes

    @classmethod
    def from_pretrained(cls, name_or_path, *args, config=None, **kwargs):
        download = {name: kwargs[name] for name in _HUB_ARGUMENTS if kwargs.get(name) is not None}
        folder = local_folder(name_or_path, "name_or_path", HUB_FILES, **download)
        _, layout = read_pretrained_config(folder / CONFIG, "name_or_path")
        names = layout.get("architectures") or ["SemVLPForPretraining"]
        model_class = ARCHITECTURES.get(names[0])
        if model_class is None:
            raise ValueError(f"name_or_path: {folder / CONFIG}: architectures {names} names no semvlp model; "
                             f"expected one of {sorted(ARCHITECTURES)}")
        options = {name: kwargs[name] for name in ("map_location", "strict") if name in kwargs}
        return model_class.from_pretrained(folder, **options)


_registered = None


def register_auto_classes():
    """Register model_type "semvlp" with transformers' AutoConfig and AutoModel (once; later calls do nothing).
    Returns the config class, SemVLPHFConfig; None where transformers is not installed (importing
    semvlp.integrations.hf calls this, and must not fail for want of an optional package)."""
    global _registered
    if _registered is None:
        try:
            from transformers import AutoConfig, AutoModel
        except ImportError:
            return None
        config_class = _config_class()
        SemVLPAutoModel.config_class = config_class
        AutoConfig.register(MODEL_TYPE, config_class, exist_ok=True)
        AutoModel.register(config_class, SemVLPAutoModel, exist_ok=True)
        _registered = config_class
    return _registered
