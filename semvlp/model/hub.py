"""The Hugging Face Hub as a source of checkpoint folders. huggingface_hub is optional and imported only here,
when a hub id is given or a model is pushed."""

from __future__ import annotations

import re
from pathlib import Path

INSTALL = "pip install 'semvlp[hf]'"
# "name" or "owner/name": letters, digits, '-', '_', '.'; neither part starts with '.' or '-'.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)?[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def import_huggingface_hub(what: str):
    """The huggingface_hub module; ImportError saying how to install it when it is missing."""
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(f"{what} needs the optional package huggingface_hub: {INSTALL}") from None
    return huggingface_hub


def is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.endswith((".", "-"))


def local_folder(name_or_path: str | Path, argument: str, allow_patterns: list[str] | None = None,
                 **download) -> Path:
    """A local checkpoint folder: `name_or_path` itself when it is a directory, else the snapshot of the hub
    repository it names (huggingface_hub's snapshot_download, only the files `allow_patterns` matches; `download`
    passes revision, cache_dir, token, local_files_only)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{argument}: {path} is a file, expected a folder (config.json and the weights)")
    if not isinstance(name_or_path, str) or not is_hub_id(name_or_path):
        raise ValueError(f"{argument}: {path} does not exist (expected a local folder or a Hugging Face Hub id "
                         f"such as 'owner/name')")
    hub = import_huggingface_hub(f"loading the Hub repository {name_or_path!r}")
    try:
        return Path(hub.snapshot_download(repo_id=name_or_path, allow_patterns=allow_patterns, **download))
    except OSError as err:  # huggingface_hub's errors (not found, gated, offline, HTTP) are OSErrors
        raise ValueError(f"{argument}: {name_or_path!r} is no local folder, and the Hub repository of that name "
                         f"could not be fetched ({type(err).__name__}: {err})") from err
