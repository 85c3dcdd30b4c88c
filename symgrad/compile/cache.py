"""The on-disk cache of generated modules: content-addressed files, imported from disk.

A module is written once to ``<cache dir>/sg_<sha256 of its source>.py`` (temp file in the
same folder, then ``os.replace``, so readers never see half a file) and imported from there
with ``importlib``, which lets Numba's own ``cache=True`` keep the compiled machine code
beside it: an unchanged model in a new process loads instead of compiling.

The cache grows with every edited model, so it is capped (``$SYMGRAD_CACHE_MAX_MB``, default
500 MB): after a new module is written, the least recently used modules (a load touches the
file) go, with Numba's files for them, until the rest fits.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

__all__ = ["cache_dir", "cache_info", "clear_cache", "load_module", "prune_cache", "write_module"]

#: Default size cap of the cache directory, in MB (``$SYMGRAD_CACHE_MAX_MB`` overrides it).
DEFAULT_MAX_MB = 500


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$SYMGRAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/symgrad``
    or ``~/.cache/symgrad``."""
    if override is not None:
        return Path(override)
    if os.environ.get("SYMGRAD_CACHE_DIR"):
        return Path(os.environ["SYMGRAD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "symgrad"


def module_path(source: str, directory: Path) -> Path:
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    return directory / f"sg_{digest}.py"


def write_module(source: str, directory: Path) -> tuple[Path, bool]:
    """Write ``source`` atomically unless an identical file exists; return (path, existed)."""
    path = module_path(source, directory)
    if path.is_file() and path.read_text(encoding="utf-8") == source:
        return path, True
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    prune_cache(directory)
    return path, False


def load_module(path: Path) -> ModuleType:
    """Import the module at ``path`` (once per process: it is keyed by its content hash)."""
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    try:
        os.utime(path)  # last use, for the least-recently-used eviction
    except OSError:
        pass
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def clear_cache(directory: str | os.PathLike | None = None) -> int:
    """Delete generated modules and Numba's cache files; return how many files went."""
    root = cache_dir(directory)
    count = 0
    for pattern in ("sg_*.py", ".tmp-*.py", "__pycache__/sg_*"):
        for f in root.glob(pattern):
            f.unlink(missing_ok=True)
            count += 1
    return count


def _entries(root: Path) -> list[tuple[float, int, list[Path]]]:
    """(last use, bytes, files) of every cached module: its source and Numba's files."""
    numba_files: dict[str, list[Path]] = {}
    for f in (root / "__pycache__").glob("sg_*"):
        numba_files.setdefault(f.name.split(".", 1)[0], []).append(f)
    out = []
    for py in root.glob("sg_*.py"):
        files = [py, *numba_files.get(py.stem, [])]
        try:
            out.append((py.stat().st_mtime, sum(f.stat().st_size for f in files), files))
        except OSError:
            continue  # removed meanwhile by another process
    return out


def cache_info(directory: str | os.PathLike | None = None) -> dict:
    """Where the cache is, how many modules it holds, their size in bytes (with Numba's
    files) and its size cap."""
    root = cache_dir(directory)
    entries = _entries(root) if root.is_dir() else []
    return {"path": root, "modules": len(entries), "bytes": sum(e[1] for e in entries),
            "max_bytes": _max_bytes()}


def prune_cache(directory: str | os.PathLike | None = None,
                max_bytes: int | None = None) -> int:
    """Delete the least recently used modules until the cache fits ``max_bytes`` (default:
    the cap); return how many modules went."""
    limit = _max_bytes() if max_bytes is None else max_bytes
    entries = sorted(_entries(cache_dir(directory)), key=lambda e: e[0])
    total, removed = sum(e[1] for e in entries), 0
    for _, size, files in entries[:-1]:  # never the newest: it was just written
        if total <= limit:
            break
        for f in files:
            f.unlink(missing_ok=True)
        total, removed = total - size, removed + 1
    return removed


def _max_bytes() -> int:
    try:
        return int(float(os.environ.get("SYMGRAD_CACHE_MAX_MB", DEFAULT_MAX_MB)) * 1e6)
    except ValueError:
        return int(DEFAULT_MAX_MB * 1e6)
