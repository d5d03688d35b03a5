"""Where compiled artefacts live, and how they are keyed.

``CYTASK_CACHE_DIR`` wins; otherwise ``$XDG_CACHE_HOME/cytask`` or
``~/.cache/cytask``.  Every artefact's name carries a hash of its source and of the
compiler versions that built it, so a stale artefact is never loaded: it is simply
not found, and rebuilt under a new name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import types
from pathlib import Path

__all__ = ["atomic_write", "cache_dir", "digest", "load_module"]


def cache_dir(sub: str) -> Path:
    """The cache folder for one backend, created on first use."""
    root = os.environ.get("CYTASK_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "cytask"
    path = base / sub
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    h.update(sys.version.encode())
    for part in parts:
        h.update(b"\0")
        h.update(part.encode())
    return h.hexdigest()[:24]


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see all of it or nothing."""
    if path.exists() and path.read_text() == text:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_module(name: str, path: Path) -> types.ModuleType:
    """Import the file at ``path`` as module ``name`` (once per process)."""
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod
