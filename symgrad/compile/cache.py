"""The on-disk cache of generated modules: content-addressed files, imported from disk.

A module is written once to ``<cache dir>/sg_<sha256 of its source>.py`` (temp file in the
same folder, then ``os.replace``, so readers never see half a file) and imported from there
with ``importlib``, which lets Numba's own ``cache=True`` keep the compiled machine code
beside it, in ``<cache dir>/__pycache__`` (also when ``$NUMBA_CACHE_DIR`` is set: one place
to check, cap and clear): an unchanged model in a new process loads instead of compiling.

Only what its owner wrote is loaded (:mod:`symgrad.trust`): the cache directory is created
``0o700``; a module is imported only if its SHA-256 is its name, from its source (never a
``.pyc``); Numba's files for it are loaded only if the directory and they pass the trust
checks, and those that are not whole pickles are removed first and compiled again. A
directory that cannot be used or trusted means one :class:`~symgrad.trust.CacheWarning` and a
compile in a private temporary directory, never a crash.

The cache grows with every edited model, so it is capped (``$SYMGRAD_CACHE_MAX_MB``, default
500 MB): after a new module is written, the least recently used modules (a load touches the
file) go, with Numba's files for them, until the rest fits.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from ..errors import InputError, SymgradError
from ..kernels import ready as kernels_ready
from ..trust import (
    LOCK,
    atomic_write,
    discard_corrupt,
    fallback,
    numba_cache_at,
    numba_locations,
    private_dir,
    problem,
    warn_once,
)

__all__ = ["cache_dir", "cache_info", "clear_cache", "clear_kernels", "load_module", "prune_cache",
           "write_module"]

#: Default size cap of the cache directory, in MB (``$SYMGRAD_CACHE_MAX_MB`` overrides it).
DEFAULT_MAX_MB = 500

_FIX = ("make it a directory that you own and only you can write (chmod 700), or set "
        "SYMGRAD_CACHE_DIR (or cache_dir=) to one")


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$SYMGRAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/symgrad``
    or ``~/.cache/symgrad``. An empty ``override`` is refused (it would mean the current
    directory)."""
    if override is not None:
        if os.fspath(override) == "":
            raise InputError("cache_dir is empty, which would mean the current directory; give "
                             "a directory, or leave it out for the default "
                             "($SYMGRAD_CACHE_DIR or ~/.cache/symgrad).")
        return Path(override)
    if os.environ.get("SYMGRAD_CACHE_DIR"):
        return Path(os.environ["SYMGRAD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "symgrad"


def module_path(source: str, directory: Path) -> Path:
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    return directory / f"sg_{digest}.py"


def write_module(source: str, directory: Path) -> tuple[Path, bool]:
    """Write ``source`` atomically unless an identical file exists; return (path, existed).
    The path is in ``directory``, or in a private temporary directory (with one warning) when
    ``directory`` cannot be used or trusted."""
    place = _usable(Path(directory))
    try:
        return _write(source, place)
    except OSError as exc:
        if place == private_dir():
            raise
        return _write(source, fallback(place, f"writing to it failed ({exc})", _FIX))


def _write(source: str, directory: Path) -> tuple[Path, bool]:
    path = module_path(source, directory)
    if path.is_file() and path.read_text(encoding="utf-8") == source:
        return path, True
    atomic_write(path, source.encode("utf-8"))
    prune_cache(directory)
    return path, False


def _usable(directory: Path) -> Path:
    """``directory`` (created ``0o700``, with its ``__pycache__``) if it can be used and
    trusted, else the private temporary directory."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (directory / "__pycache__").mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        return fallback(directory, f"it cannot be created ({exc})", _FIX)
    reason = _unusable(directory)
    return directory if reason is None else fallback(directory, reason, _FIX)


def _unusable(directory: Path) -> str | None:
    """Why the existing ``directory`` cannot hold the cache (not trusted, not a writable
    directory), or None."""
    places = [directory, directory / "__pycache__"]
    reason = problem(places)
    if reason is None and not (directory.is_dir() and all(
            os.access(d, os.W_OK | os.X_OK) for d in places if d.exists())):
        reason = "it is not a writable directory"
    return reason


def load_module(path: Path, source: str | None = None) -> ModuleType:
    """Import the module at ``path`` (once per process: it is keyed by its content hash).

    Only a file whose SHA-256 is its name is run, compiled from its source; ``source``, when
    given, rewrites a missing or damaged file. The cache directory and Numba's files for the
    module must pass :func:`symgrad.trust.problem` (else the module moves to the private
    temporary directory, with one warning); Numba's files that are not whole pickles are
    removed first, so Numba compiles again instead of failing."""
    with LOCK:
        loaded = sys.modules.get(path.stem)
        if loaded is not None:
            return loaded
        path, data = _verified(path, source)
        place = _usable(path.parent)
        reason = problem([path, *_numba_files(path)]) if place == path.parent else None
        if reason is not None:
            place = fallback(path.parent, reason, _FIX)
        if place != path.parent:
            path, _ = _write(data.decode("utf-8"), place)
        discard_corrupt(_numba_files(path), path.parent / "__pycache__")
        try:
            os.utime(path)  # last use, for the least-recently-used eviction
        except OSError:
            pass
        kernels_ready()  # the module may call kernels: their cache is checked first
        return _import(path, data)


def _verified(path: Path, source: str | None) -> tuple[Path, bytes]:
    """``path`` and its bytes if their SHA-256 is its name; else ``source`` written again."""
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    if path.name == f"sg_{hashlib.sha256(data).hexdigest()}.py":
        return path, data
    if source is None or module_path(source, path.parent) != path:
        raise SymgradError(f"{path} is not a module symgrad wrote (its SHA-256 is not its "
                           "name), so it was not run. Delete it, or run 'symgrad cache clear'.")
    if data:
        warn_once(path, f"{path} was damaged; it is written again.")
    return write_module(source, path.parent)[0], source.encode("utf-8")


def _numba_files(path: Path) -> list[Path]:
    """Numba's index and machine-code files for the module at ``path``."""
    return sorted((path.parent / "__pycache__").glob(f"{path.stem}.*.nb[ic]"))


class _SourceOnly(importlib.machinery.SourceFileLoader):
    """Runs the verified source bytes it was given: no ``.pyc`` is read or written, and the
    file is not read again (no swap between the check and the run)."""

    def __init__(self, name: str, path: str, data: bytes) -> None:
        super().__init__(name, path)
        self._data = data

    def get_data(self, path: str) -> bytes:
        return self._data if path == self.path else super().get_data(path)

    def path_stats(self, path: str):
        raise OSError("symgrad compiles generated modules from their source")


def _import(path: Path, data: bytes) -> ModuleType:
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path,
                                                  loader=_SourceOnly(name, str(path), data))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with numba_cache_at(""):  # beside the module, whatever $NUMBA_CACHE_DIR says
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def clear_cache(directory: str | os.PathLike | None = None, kernels: bool = True) -> int:
    """Delete the generated modules and Numba's files for them (beside them, and any that
    ``$NUMBA_CACHE_DIR`` or Numba's user-wide cache hold for that directory), and with
    ``kernels`` the kernel library's machine code (:func:`clear_kernels`); return how many
    files went."""
    root = cache_dir(directory)
    files = [*root.glob("sg_*.py"), *root.glob(".sg_*.tmp")]
    for place in numba_locations(root):
        files += place.glob("sg_*")
    return _unlink(files) + (clear_kernels() if kernels else 0)


def clear_kernels() -> int:
    """Delete the kernel library's machine code where Numba keeps it (``symgrad cache warm``
    compiles it again); return how many files went."""
    from ..kernels import cache_files

    return _unlink(cache_files())


def _unlink(files) -> int:
    count = 0
    for f in files:
        try:
            f.unlink()
            count += 1
        except FileNotFoundError:
            continue  # removed meanwhile
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
    files), its size cap, why it is not used if it is not (``problem``, else None), and the
    kernel library's machine code: ``kernels_path``, ``kernels_files``, ``kernels_bytes``."""
    from ..kernels import cache_files, cache_location

    root = cache_dir(directory)
    entries = _entries(root) if root.is_dir() else []
    reason = _unusable(root) if root.exists() else None
    kernel_files = cache_files()
    return {"path": root, "modules": len(entries), "bytes": sum(e[1] for e in entries),
            "max_bytes": _max_bytes(), "problem": reason, "kernels_path": cache_location(),
            "kernels_files": len(kernel_files), "kernels_bytes": _bytes(kernel_files)}


def _bytes(files) -> int:
    total = 0
    for f in files:
        try:
            total += f.stat().st_size
        except OSError:
            continue  # removed meanwhile
    return total


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
