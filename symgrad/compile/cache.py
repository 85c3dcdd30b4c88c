"""The on-disk cache of generated modules: content-addressed files, imported from disk.

A module is written once to ``<cache dir>/sg_<sha256 of its source>.py`` (temp file in the
same folder, then ``os.replace``, so readers never see half a file) and imported from there
with ``importlib``, which lets Numba's own ``cache=True`` keep the compiled machine code
beside it: an unchanged model in a new process loads instead of compiling.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

__all__ = ["cache_dir", "clear_cache", "load_module", "write_module"]


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
    return path, False


def load_module(path: Path) -> ModuleType:
    """Import the module at ``path`` (once per process: it is keyed by its content hash)."""
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
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
