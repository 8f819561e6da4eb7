"""The trust store: the repo config files the user allowed (`capguard trust`), by resolved path and sha256.

Like `direnv allow`: a file whose content changed since it was trusted is a stranger's input again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from capguard import paths
from capguard.core.errors import ConfigError

STORE_NAME = "trusted-configs.json"


def store_path() -> Path:
    return paths.data_home() / STORE_NAME


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _entries(store: Path) -> dict[str, str]:
    """The trusted files; a store that cannot be read trusts nothing (fail closed), `capguard trust` rewrites it."""
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    return {str(path): str(sha) for path, sha in files.items()}


def is_trusted(path: Path, content: bytes, store: Path | None = None) -> bool:
    """Whether `content` (the bytes just read from `path`, so what is trusted is what is used) was trusted."""
    return _entries(store or store_path()).get(str(path.resolve())) == digest(content)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None


def _save(store: Path, entries: dict[str, str]) -> None:
    try:
        store.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"files": dict(sorted(entries.items()))}, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, store)
    except OSError as err:
        raise ConfigError(f"{store}: cannot write the trust store: {err.strerror}") from None


def trust(path: Path, store: Path | None = None) -> str:
    """Trust the file's current content; returns its sha256."""
    store = store or store_path()
    sha = digest(_read(path))
    entries = _entries(store)
    entries[str(path.resolve())] = sha
    _save(store, entries)
    return sha


def untrust(path: Path, store: Path | None = None) -> bool:
    """Forget the file; False when it was not trusted."""
    store = store or store_path()
    entries = _entries(store)
    if entries.pop(str(path.resolve()), None) is None:
        return False
    _save(store, entries)
    return True
