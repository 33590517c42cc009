"""The cached index of a feature file: what validating every record found, kept beside the data.

Opening a feature file decodes and checks every record once; the outcome (each usable image's canonical id,
where its record lies in the file, its region count, the feature size, and the records skipped as bad) is written
to `<file>.semvlp-index.json` beside the file, or, when that folder cannot be written, under
~/.cache/semvlp/index/ (with a warning). A later open with the same checks reads the index instead of the records.
The index names its source by size, modification time (ns) and a SHA-256 of the file's first and last MiB; an
index whose source differs, or that was built with other checks (feature size, region labels), is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

VERSION = 1
_MIB = 1 << 20


def source_fingerprint(path: Path) -> dict:
    """Size, mtime (ns) and a SHA-256 of the first and last MiB of `path`."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(_MIB))
        if stat.st_size > _MIB:
            f.seek(max(_MIB, stat.st_size - _MIB))
            digest.update(f.read(_MIB))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_tail_sha256": digest.hexdigest()}


def _beside(path: Path) -> Path:
    return path.with_name(path.name + ".semvlp-index.json")


def _in_cache(path: Path) -> Path:
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "semvlp" / "index" / f"{name}-{path.name}.json"


def load_index(path: Path, checks: dict, fingerprint: dict) -> dict | None:
    """The index of `path` (whose `source_fingerprint` is `fingerprint`) built with `checks`, or None when there
    is none or it is stale."""
    for candidate in (_beside(path), _in_cache(path)):
        try:
            index = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(index, dict) and index.get("version") == VERSION and index.get("source") == fingerprint
                and index.get("checks") == checks):
            return index
        logger.info("rebuilding the stale index %s of %s", candidate, path)
    return None


def save_index(path: Path, checks: dict, fingerprint: dict, entries: dict) -> Path | None:
    """Writes the index of `path` beside it, else in the cache folder; returns where (None: nowhere).
    `fingerprint` is the source's before it was read, so a file changed while it was indexed is indexed again."""
    index = {"version": VERSION, "source": fingerprint, "checks": checks, **entries}
    text = json.dumps(index)
    for target in (_beside(path), _in_cache(path)):
        temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(text)
            os.replace(temporary, target)  # atomic: ranks indexing at once never read half a file
        except OSError as err:
            temporary.unlink(missing_ok=True)
            if target == _beside(path):
                logger.warning("cannot write the index of %s beside it (%s); caching it under %s", path, err,
                               _in_cache(path).parent)
            else:
                logger.warning("cannot cache the index of %s (%s); it will be rebuilt at the next open", path, err)
            continue
        return target
    return None
