"""Who may feed symgrad's caches: the trust model, as SSH's ``StrictModes``.

Loading from a cache runs what it holds: a generated module is Python, and Numba's ``.nbi``
and ``.nbc`` files are pickles, which run any code they name when loaded. So symgrad loads
from a directory only if nobody but the user (or root) can have put files there
(:func:`problem`):

- the directory, every directory above it and every file loaded are owned by the user or
  root;
- none of them can be written by group or others, except a directory *above* the cache that
  has the sticky bit (``/tmp``: others cannot rename or delete what is the user's there);
- below a directory of the user's that group and others cannot enter (no ``x`` bit), modes
  no longer matter: nobody else reaches what is inside.

symgrad creates its cache directories ``0o700``. A directory that fails these checks, or that
cannot be used at all (not writable, a file in its place), gets one :class:`CacheWarning`
naming it and the fix, and symgrad compiles in :func:`private_dir` instead: a temporary
directory of its own (``0o700``, removed at exit), so nothing is reused by later runs. Numba
files that are not whole pickles (truncated, overwritten) are found without unpickling
anything (:func:`corrupt` parses them with ``pickletools``), removed and compiled again.

macOS gets the same POSIX checks (extended ACLs added with ``chmod +a`` are not read).
Windows has no POSIX owners or modes in ``os.stat``, so the checks are skipped there: the
default cache directory lies in the user's profile, which Windows' default ACLs keep private,
and a cache directory set elsewhere is trusted as it is. Corrupt files and unusable
directories are handled on every system.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import pickletools
import shutil
import stat
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import SymgradError

__all__ = ["CacheWarning", "atomic_write", "corrupt", "discard_corrupt", "fallback",
           "numba_cache_at", "numba_location", "numba_locations", "private_dir", "problem",
           "warn_once"]

#: Held while Numba's cache setting is changed and a module is imported under it.
LOCK = threading.RLock()
_WARNED: set[str] = set()
_PRIVATE: dict[int, Path] = {}


class CacheWarning(UserWarning):
    """symgrad did not load from a cache directory or file (not trusted, not usable or
    corrupt) and compiled without it."""


def atomic_write(path: Path, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary ``.<name>.*.tmp`` file in
    the same folder, then ``os.replace``, so readers never see half a file; ``durable`` also
    flushes it to the disk before the rename (a saved model survives a power cut)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def problem(paths: Iterable[Path], owners: Iterable[int] = ()) -> str | None:
    """Why loading from ``paths`` (directories and files; missing ones are skipped) is not
    safe, or None. ``owners``: uids trusted besides the user and root."""
    if os.name == "nt":
        return None
    me = os.getuid()
    trusted = {me, 0, *owners}
    seen: dict[str, os.stat_result] = {}
    for path in paths:
        try:
            where = Path(os.path.realpath(path))
        except OSError:
            continue
        chain = [*reversed(where.parents), where]
        closed = False  # below a trusted directory others cannot enter
        for k, part in enumerate(chain):
            key = str(part)
            if key not in seen:
                try:
                    seen[key] = os.stat(part)
                except OSError:  # missing, or not reachable: nothing is loaded from there
                    break
            st = seen[key]
            if st.st_uid not in trusted:
                return (f"{part} is owned by uid {st.st_uid}, not by you (uid {me}) or root, "
                        "so code planted there would run as you")
            above = k < len(chain) - 1
            if not closed and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (
                    above and st.st_mode & stat.S_ISVTX):
                who = _WRITERS[st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)]
                return (f"{part} can be written by {who} (mode {st.st_mode & 0o7777:o}), so "
                        "code planted there would run as you")
            if stat.S_ISDIR(st.st_mode) and not st.st_mode & (stat.S_IXGRP | stat.S_IXOTH):
                closed = True
    return None


_WRITERS = {stat.S_IWGRP: "its group", stat.S_IWOTH: "others",
            stat.S_IWGRP | stat.S_IWOTH: "its group and others"}


def fallback(directory: Path, reason: str, fix: str) -> Path:
    """Warn (once per directory and process) that ``directory`` is not used, and why;
    return :func:`private_dir` to compile in instead."""
    warn_once(directory, f"not using {directory}: {reason}. Compiling in a private "
              f"temporary directory instead (nothing is kept for later runs). Fix: {fix}.")
    return private_dir()


def warn_once(key: Path, message: str) -> None:
    """One :class:`CacheWarning` per ``key`` and process."""
    with LOCK:
        if str(key) in _WARNED:
            return
        _WARNED.add(str(key))
    warnings.warn(f"symgrad: {message}", CacheWarning, stacklevel=5)


def private_dir() -> Path:
    """This process's private temporary directory (``0o700``, removed at exit), where
    symgrad compiles when a cache directory cannot be used or trusted."""
    with LOCK:
        found = _PRIVATE.get(os.getpid())
        if found is None:
            found = Path(tempfile.mkdtemp(prefix="symgrad-private-"))
            reason = problem([found])
            if reason:
                shutil.rmtree(found, ignore_errors=True)
                raise SymgradError(f"symgrad found no private place to compile in: {reason}. "
                                   "Set TMPDIR to a directory only you can write.")
            (found / "__pycache__").mkdir(mode=0o700)
            _PRIVATE[os.getpid()] = found
            atexit.register(_remove, found, os.getpid())
        return found


def _remove(directory: Path, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child that inherited the handler
        shutil.rmtree(directory, ignore_errors=True)


def corrupt(files: Iterable[Path]) -> list[Path]:
    """The files that are not whole Numba cache files: an index (``.nbi``) is two pickles
    (Numba's version, then the entries), machine code (``.nbc``) one. Truncated, overwritten
    and empty files fail. ``pickletools`` only parses the opcodes: nothing is built,
    imported or run."""
    bad = []
    for f in files:
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            continue
        if _pickles(data) != (2 if f.suffix == ".nbi" else 1):
            bad.append(f)
    return bad


def _pickles(data: bytes) -> int:
    """How many whole pickles ``data`` is, one after the other (-1: it is not)."""
    stream, count = io.BytesIO(data), 0
    try:
        while stream.tell() < len(data):
            for _ in pickletools.genops(stream):
                pass
            count += 1
    except Exception:  # any parse failure means a damaged file
        return -1
    return count


#: In a folder of Numba's files, the ones found whole: name -> [size, mtime, ctime, inode].
CHECKED = "symgrad-checked.json"


def discard_corrupt(files: Iterable[Path], place: Path | None = None) -> None:
    """Remove the :func:`corrupt` ones among Numba's ``files`` (one warning each), so that
    Numba compiles again instead of failing on them.

    With ``place``, the folder the files are in (one that passed :func:`problem`), the files
    found whole are remembered there (:data:`CHECKED`, JSON) by size, times and inode, and
    later calls parse only files that changed since: Numba writes its files whole, so a
    damaged file (cut short, overwritten) has another size or time. Parsing all of the kernel
    library's files took 72-86 ms of CPU in every process (16-27 ms with the record)."""
    files = list(files)
    seen = _checked(place) if place is not None else {}
    found, todo = dict(seen), []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            found.pop(f.name, None)
            continue
        found[f.name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        if seen.get(f.name) != found[f.name]:
            todo.append(f)
    for f in corrupt(todo):
        warn_once(f, f"removed {f}, a damaged Numba cache file; compiling again.")
        f.unlink(missing_ok=True)
        found.pop(f.name, None)
    if place is not None and found != seen:
        with contextlib.suppress(OSError):  # a place we cannot write: parsed again next time
            names = set(os.listdir(place))
            found = {k: v for k, v in found.items() if k in names}
            atomic_write(place / CHECKED, json.dumps(found, sort_keys=True).encode("ascii"))


def _checked(place: Path) -> dict:
    """The files :func:`discard_corrupt` found whole in ``place`` (empty where the record is
    missing, unreadable, not JSON, or not the user's own file)."""
    try:
        with open(place / CHECKED, "rb") as f:
            if os.name != "nt" and os.fstat(f.fileno()).st_uid != os.getuid():
                return {}
            found = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


@contextlib.contextmanager
def numba_cache_at(directory: str) -> Iterator[None]:
    """Functions that Numba decorates inside keep their machine code in ``directory``
    (``""``: beside their source file, in ``__pycache__``), whatever ``NUMBA_CACHE_DIR``
    says. Numba picks the place when a function is decorated, so this wraps an import. It
    sets Numba's process-wide setting under :data:`LOCK`: a function that another thread
    decorates meanwhile, outside symgrad, gets the same place."""
    from numba.core import config

    with LOCK:
        saved = config.CACHE_DIR
        config.CACHE_DIR = directory
        try:
            yield
        finally:
            config.CACHE_DIR = saved


def numba_locations(source_dir: Path) -> list[Path]:
    """Every place Numba may keep machine code of modules in ``source_dir``, in the order
    it tries them: ``$NUMBA_CACHE_DIR``'s folder for it (when set), ``__pycache__`` beside
    the source, and its folder in Numba's user-wide cache."""
    from numba.core import config
    from numba.misc.appdirs import AppDirs

    source = os.path.abspath(source_dir)  # as Numba names the folder
    sub = f"{os.path.basename(source)}_{hashlib.sha1(source.encode()).hexdigest()}"
    places = [Path(config.CACHE_DIR) / sub] if config.CACHE_DIR else []
    user_wide = AppDirs(appname="numba", appauthor=False).user_cache_dir
    return [*places, Path(source) / "__pycache__", Path(user_wide) / sub]


def numba_location(source_dir: Path) -> Path | None:
    """Where Numba will keep machine code of modules in ``source_dir`` now: the first of
    :func:`numba_locations` it can write (a missing one is created ``0o700``), or None."""
    for place in numba_locations(source_dir):
        try:
            place.mkdir(mode=0o700, parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=place).close()  # Numba's own test
        except OSError:
            continue
        return place
    return None
