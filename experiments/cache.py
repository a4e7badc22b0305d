"""Caches: atomic files, keys over everything a cached value depends on, and the code version in those keys.

Files are written to a temporary file in the target's directory, then renamed over it (never half-written).
A key is a sha256 over length-prefixed parts (``cache_key``); ``code_version`` hashes source files and
library versions, so a fix to the code or an upgrade of a library is never served values made before it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from experiments.errors import GbdError

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("theory", "experiments")
LIBRARIES = ("numpy", "scipy", "torch", "transformers", "lm_eval", "datasets", "pymanopt")


def cache_key(*parts: str | bytes) -> str:
    """sha256 over the length-prefixed parts (so that ('ab', 'c') and ('a', 'bc') differ)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def library_versions(names: Sequence[str] = LIBRARIES) -> list[str]:
    """'name==version' of each installed distribution ('name absent' when it is not installed)."""
    found = []
    for name in names:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} absent")
    return found


def code_version(files: Sequence[Path] | None = None, libraries: Sequence[str] = LIBRARIES) -> str:
    """sha256 over the relative path and bytes of each source file (default: every ``.py`` file of theory/
    and experiments/, subpackages included) and the versions of ``libraries``: part of every cache key of computed results."""
    if files is None:
        files = sorted(p for folder in SOURCE_FOLDERS for p in (PACKAGE_ROOT / folder).rglob("*.py"))
    parts: list[str | bytes] = []
    for path in files:
        path = path.resolve()
        name = path.relative_to(PACKAGE_ROOT).as_posix() if path.is_relative_to(PACKAGE_ROOT) else path.name
        parts += [name, path.read_bytes()]
    return cache_key(*parts, *library_versions(libraries))


def ensure_writable(folder: str | Path, what: str) -> Path:
    """Create ``folder`` if needed and check a file can be written in it, before any work; else a GbdError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".gbd-write-check-"):
            pass
    except OSError as exc:
        raise GbdError(f"the {what} {folder} is not writable ({type(exc).__name__}: {exc.strerror or exc}); "
                       "choose another folder") from exc
    return folder


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file next to ``path`` and rename it to ``path`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic JSON dump (non-finite floats written as JSON's Infinity/NaN)."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, default=str).encode()))


def read_entry(path: str | Path, key: str, valid: Callable[[dict[str, Any]], bool] = lambda row: True
               ) -> dict[str, Any] | None:
    """The row that ``write_entry`` stored at ``path`` under ``key`` if ``valid(row)``, else None: a missing or
    unreadable file, another key (a stale entry or a prefix collision) or valid JSON of the wrong shape is a
    miss, to be recomputed."""
    cached = read_json(path)
    if not (isinstance(cached, dict) and cached.get("key") == key and isinstance(cached.get("row"), dict)):
        return None
    return cached["row"] if valid(cached["row"]) else None


def write_entry(path: str | Path, key: str, row: dict[str, Any]) -> None:
    """Store ``row`` at ``path`` under its full ``key`` (atomic; read back by ``read_entry``)."""
    write_json(path, {"key": key, "row": row})


def read_json(path: str | Path) -> Any | None:
    """The JSON in ``path``, or None when it does not exist or cannot be parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
