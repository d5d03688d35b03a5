"""Where compiled artefacts live, how they are keyed, and how they are checked.

``CYTASK_CACHE_DIR`` wins; otherwise ``$XDG_CACHE_HOME/cytask`` or
``~/.cache/cytask``.  A folder that cannot be used (a file, a read-only or
``/proc`` path, no permission) is never fatal: the cache moves to a private folder
under the system's temp folder, and ``cache_note()`` says why (the compile
stage reports it with each task).  Only when no folder at all can be used does
compiling fail, and then it falls back to Python with that reason.

Every artefact's name carries a hash of its source and of the compiler versions
that built it, so a stale artefact is never loaded: it is simply not found, and
rebuilt under a new name.  Artefacts are written atomically (a temporary file,
then ``os.replace``), and checked before they are loaded:

* a Cython extension has a manifest (``ct_<key>.json``: size, SHA-256) written
  after it; an extension whose size, hash or binary header does not match is
  deleted and rebuilt instead of being mapped (a truncated ``.so`` kills the
  process with SIGBUS when it is loaded);
* Numba's own cache files (``__pycache__/ct_<key>.*.nbi|nbc``) are sealed the same
  way (``ct_<key>.seal.json``) after each compile; files that fail their seal are
  deleted before Numba reads them, so Numba compiles again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import stat
import sys
import tempfile
import threading
import types
from pathlib import Path
from typing import Any

__all__ = [
    "CacheUnavailableError",
    "atomic_write",
    "atomic_write_bytes",
    "cache_dir",
    "cache_note",
    "digest",
    "file_digest",
    "load_module",
    "purge_numba_cache",
    "seal_numba_cache",
    "verify_numba_cache",
]

CACHE_ENV = "CYTASK_CACHE_DIR"
FORMAT = 1  # of the manifests and seals; another number is not trusted


class CacheUnavailableError(OSError):
    """No folder can hold the compile cache (neither the configured one nor a temp one)."""


# -- the folder ------------------------------------------------------------------------

_dir_lock = threading.Lock()
#: (configured root, sub) -> the folder in use; guarded by _dir_lock
_dirs: dict[tuple[str, str], Path] = {}
#: configured root -> why it is not used (None: it is); guarded by _dir_lock
_notes: dict[str, str | None] = {}


def _configured_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cytask"


def _usable(path: Path) -> None:
    """Create ``path`` and prove that a file can be written in it; raises ``OSError``."""
    path.mkdir(parents=True, exist_ok=True)
    if not path.is_dir():
        raise NotADirectoryError(f"not a folder: {path}")
    fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
    os.close(fd)
    os.unlink(probe)


def _private_temp_root() -> Path:
    """A folder under the temp folder that only this user can write (never shared)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    base = Path(tempfile.gettempdir())
    path = base / (f"cytask-cache-{uid}" if uid is not None else "cytask-cache")
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
        # loading code from a folder another user can write would run their code
        owned = uid is None or st.st_uid == uid
        private = not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if stat.S_ISDIR(st.st_mode) and owned and private:
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="cytask-cache-private-"))  # for this process alone


def _describe(exc: BaseException) -> str:
    text = str(exc.strerror) if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{type(exc).__name__}: {text}"


def cache_dir(sub: str) -> Path:
    """The cache folder for one backend, created on first use.

    Never raises for an unusable configured folder: it falls back to a private
    temp folder and records why (``cache_note``).  Raises
    ``CacheUnavailableError`` only when no folder can be written at all.
    """
    root = _configured_root()
    key = (str(root), sub)
    with _dir_lock:
        found = _dirs.get(key)
        if found is not None and found.is_dir():  # (a cache wiped meanwhile is made again)
            return found
        path = root / sub
        try:
            _usable(path)
            _notes.setdefault(str(root), None)
        except OSError as exc:
            where = f"{CACHE_ENV}={root}" if os.environ.get(CACHE_ENV) else f"the cache {root}"
            why = f"{where} is unusable ({_describe(exc)})"
            try:
                path = _private_temp_root() / sub
                _usable(path)
            except OSError as exc2:
                _notes[str(root)] = f"{why}, and so is a temp folder ({_describe(exc2)})"
                raise CacheUnavailableError(
                    f"no folder can hold the compile cache: {_notes[str(root)]}; "
                    f"set {CACHE_ENV} to a writable folder"
                ) from exc2
            _notes[str(root)] = f"{why}; using {path.parent} instead"
        _dirs[key] = path
        return path


def cache_note() -> str | None:
    """Why the configured cache folder is not the one in use (None when it is)."""
    root = str(_configured_root())
    with _dir_lock:
        return _notes.get(root)


# -- names and writes --------------------------------------------------------------------


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    h.update(sys.version.encode())
    for part in parts:
        h.update(b"\0")
        h.update(part.encode())
    return h.hexdigest()[:24]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; an identical file is left alone."""
    try:
        if path.read_text() == text:
            return
    except (OSError, ValueError):
        pass
    atomic_write_bytes(path, text.encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object written by this module (its ``format`` is ours), or None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps({"format": FORMAT, **data}, indent=1, sort_keys=True))


# -- checked binaries ----------------------------------------------------------------------

#: the first bytes of a loadable extension on each platform
_MAGIC = (
    b"\x7fELF",  # Linux, BSD
    b"\xcf\xfa\xed\xfe",  # Mach-O 64-bit
    b"\xca\xfe\xba\xbe",  # Mach-O universal
    b"MZ",  # Windows PE
)


def check_binary(path: Path, manifest: dict[str, Any] | None) -> str | None:
    """None if ``path`` is the complete file its manifest describes, else what is wrong."""
    if manifest is None:
        return "it has no valid manifest"
    try:
        size = path.stat().st_size
        if size != manifest.get("size"):
            return f"its size is {size} bytes, its manifest says {manifest.get('size')}"
        with open(path, "rb") as f:
            head = f.read(4)
        if not head.startswith(_MAGIC):
            return f"it does not start like a shared library ({head!r})"
        if file_digest(path) != manifest.get("sha256"):
            return "its SHA-256 does not match its manifest"
    except OSError as exc:
        return _describe(exc)
    return None


def manifest_for(path: Path) -> dict[str, Any]:
    return {"file": path.name, "size": path.stat().st_size, "sha256": file_digest(path)}


# -- Numba's cache files -------------------------------------------------------------------


def _numba_files(py: Path) -> list[Path]:
    """Numba's index and data files for the generated module ``py`` (in-tree locator)."""
    folder = py.parent / "__pycache__"
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    prefix = py.stem + "."
    return sorted(
        folder / n for n in names if n.startswith(prefix) and n.endswith((".nbi", ".nbc"))
    )


def _seal_path(py: Path) -> Path:
    return py.with_suffix(".seal.json")


def seal_numba_cache(py: Path) -> None:
    """Record the size and hash of each of Numba's cache files for ``py``."""
    files = {}
    for f in _numba_files(py):
        try:
            files[f.name] = [f.stat().st_size, file_digest(f)]
        except OSError:
            continue  # removed meanwhile by another process: not sealed, so not trusted
    # unsealed files are rebuilt next time, which costs time, not answers
    with contextlib.suppress(OSError):
        write_json(_seal_path(py), {"files": files})


def purge_numba_cache(py: Path) -> bool:
    """Delete Numba's cache files for ``py`` and forget the module; True if any existed."""
    found = _numba_files(py)
    for f in found:
        f.unlink(missing_ok=True)
    _seal_path(py).unlink(missing_ok=True)
    sys.modules.pop(f"_cytask_nb_{py.stem.removeprefix('ct_')}", None)
    return bool(found)


def verify_numba_cache(py: Path) -> str | None:
    """Delete Numba's cache files for ``py`` unless all match their seal; says why if so."""
    found = _numba_files(py)
    if not found:
        return None
    seal = read_json(_seal_path(py))
    sealed = seal.get("files") if seal is not None else None
    bad: str | None = None
    if not isinstance(sealed, dict):
        bad = "it has no valid seal"
    else:
        for f in found:
            want = sealed.get(f.name)
            try:
                ok = (
                    isinstance(want, list)
                    and len(want) == 2
                    and f.stat().st_size == want[0]
                    and file_digest(f) == want[1]
                )
            except OSError:
                ok = False
            if not ok:
                bad = f"{f.name} does not match its seal"
                break
    if bad is None:
        return None
    purge_numba_cache(py)
    return f"the Numba cache for {py.name} failed its check ({bad}); it was rebuilt"


# -- loading -------------------------------------------------------------------------------


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
