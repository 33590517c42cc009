"""The shipped model and DeepSpeed configs (`configs/` of the repository, installed as `semvlp/configs`), found
by preset name so that `--model-config tiny` and the README's commands work outside a checkout."""

from __future__ import annotations

from pathlib import Path

KINDS = ("model", "deepspeed")


def config_root() -> Path:
    """semvlp/configs in an installed wheel, the repository's configs/ in a checkout or an editable install."""
    installed = Path(__file__).resolve().parent / "configs"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "configs"


def presets(kind: str) -> list[str]:
    """The preset names of one kind ("model": base, tiny; "deepspeed": zero2_auto, ...)."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    return sorted(p.stem for p in (config_root() / kind).glob("*.json"))


def find_config(value: str, kind: str) -> str:
    """`value` itself where it names a file; else the shipped file of a preset named as "tiny", "tiny.json" or
    "configs/model/tiny.json"; else `value` unchanged, for the loader to report as missing."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    path = Path(value)
    if path.is_file():
        return value
    name = path.stem if path.suffix == ".json" else path.name
    is_preset_name = path.parent == Path(".") or path.parent == Path("configs") / kind
    shipped = config_root() / kind / f"{name}.json"
    return str(shipped) if is_preset_name and shipped.is_file() else value
