"""The manifest of a checkpoint folder: the size and sha256 of every file in it, written when the checkpoint is
committed and checked before it is used, so that a truncated, altered, missing or added file is refused rather
than loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = 1


class CorruptCheckpointError(ValueError):
    """A checkpoint's files do not match its manifest."""


def _files(folder: Path) -> dict[str, Path]:
    """{path relative to folder: path} of every file under folder but the manifest."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(folder) -> Path:
    """Records every file now under folder in folder/manifest.json."""
    folder = Path(folder)
    files = {name: {"size": path.stat().st_size, "sha256": _sha256(path)} for name, path in _files(folder).items()}
    path = folder / MANIFEST
    path.write_text(json.dumps({"format": FORMAT, "files": files}, indent=1) + "\n")
    return path


def _read(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptCheckpointError(f"{path}: unreadable ({error})") from None
    data = data if isinstance(data, dict) else {}
    files = data.get("files")
    if data.get("format") != FORMAT or not isinstance(files, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get("sha256"), str)
            for e in files.values()):
        raise CorruptCheckpointError(f"{path}: expected {{\"format\": {FORMAT}, \"files\": {{name: {{\"size\": int, "
                                     "\"sha256\": str}}}}")
    return files


def verify_manifest(folder) -> bool:
    """Checks every file under folder against folder/manifest.json. Returns False when there is no manifest (a
    checkpoint written before manifests), True when every file matches; raises CorruptCheckpointError naming
    the first file that is missing, not listed, of another size or with another sha256."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return False
    expected, present = _read(folder / MANIFEST), _files(folder)
    missing, unlisted = sorted(set(expected) - set(present)), sorted(set(present) - set(expected))
    if missing:
        raise CorruptCheckpointError(f"{folder / missing[0]}: missing (listed in {folder / MANIFEST})")
    if unlisted:
        raise CorruptCheckpointError(f"{folder / unlisted[0]}: not listed in {folder / MANIFEST}, so not part of "
                                     "the checkpoint as written")
    for name, path in present.items():
        size = path.stat().st_size
        if size != expected[name]["size"]:
            raise CorruptCheckpointError(f"{path}: {size} bytes where {MANIFEST} records {expected[name]['size']}: "
                                         "the file is truncated or altered")
        if _sha256(path) != expected[name]["sha256"]:
            raise CorruptCheckpointError(f"{path}: its sha256 differs from the one {MANIFEST} records: the file is "
                                         "corrupt or altered")
    return True
