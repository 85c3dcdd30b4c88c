"""symgrad's kernel library: the numeric code that is the same for every model.

Ordinary Python modules of ``@njit(cache=True)`` functions, importing only math, NumPy and
Numba, so Numba compiles each of them once per machine and loads it from its disk cache
afterwards; generated modules import them and compile only the model's own code:

- ``vecmath``: vectorizable exp, log, sin, cos, tanh, log1p, expm1 (pure arithmetic);
- ``loops``: the seeded shuffle, finiteness checks, the reassociable add of running sums;
- ``optim``: the optimizers' update rules, one function for all of them;
- ``blas``: large matrix products of matrix models, BLAS calls split over two threads;
- ``trainer``: the training loop (epochs, minibatches, block sums, early stopping) that
  calls a model's per-sample block kernel through a first-class function argument;
- ``arrays``: the loops of matrix models (sums, small products, row-wise softmax and
  cross-entropy), which generated matrix modules carry a copy of (:func:`copy_functions`)
  so that Numba compiles them with the model's own loops;
- ``tape_vm``: an interpreter of tapes (opcode rows over a slot array), which runs the
  programs of graphs too big to compile as flat code (``symgrad.compile.tape``).

A saved standalone module carries a copy of the kernels it needs (:func:`standalone`), so
it still runs with only NumPy and Numba.

Numba keeps the library's machine code beside it (``__pycache__``), in ``$NUMBA_CACHE_DIR``
or in its user-wide cache, whichever it can write. :func:`ready`, which symgrad calls before
any kernel can compile, checks that place first (:mod:`symgrad.trust`: the user, root or the
package's owner owns it and its files, and nobody else can write them) and removes damaged
files; if the place is not trusted, the kernels keep their machine code in a private
temporary directory instead (one warning; they then compile once per process). Importing
this package itself does not import Numba.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import io
import tokenize
from pathlib import Path

from ..trust import (
    LOCK,
    atomic_write,
    discard_corrupt,
    fallback,
    numba_cache_at,
    numba_location,
    numba_locations,
)
from ..trust import problem as trust_problem

__all__ = ["MODULES", "cache_files", "cache_location", "copy_functions", "fingerprint", "ready",
           "standalone"]

#: The kernel modules in dependency order.
MODULES = ("vecmath", "loops", "optim", "blas", "trainer")
#: Every module of Numba functions here (the tape interpreter is not copied into saved
#: modules, generated modules copy single functions of ``arrays``, and ``split``, the
#: two-core loop of matrix models, is called by fit only, so none is in :data:`MODULES`).
ALL = (*MODULES, "arrays", "tape_vm", "split")
_HERE = Path(__file__).parent
_LOCATION: list[Path] = []


def ready() -> Path:
    """Check Numba's cache for the kernel modules (once per process); return where their
    machine code is kept. Call it before a kernel can first compile or load. The modules
    are imported where they are used (a per-sample model never imports ``arrays``,
    ``blas``, ``split`` or ``tape_vm``: ~25 ms), except when the cache moves to the private
    place: then every one is imported here, to point its functions there."""
    with LOCK:  # the cache layer's lock: one lock, so no two can be taken in turn
        if not _LOCATION:
            _LOCATION.append(_check())
        return _LOCATION[0]


@functools.cache
def fingerprint() -> str:
    """The first 16 hex digits of the SHA-256 of every kernel module's source.

    Numba keys a cached function on its own file's time stamp only, not on the kernels it
    calls from other files: after an edit of ``loops.py`` alone, ``trainer.py``'s cached
    machine code would still carry the old ``end_epoch`` (and could crash if its signature
    changed). So the kernels' cache is stamped with this fingerprint and emptied when it
    differs, and generated modules name it in their first line, so their content hash (and
    cache entry) changes with the kernels they import."""
    digest = hashlib.sha256()
    for name in ALL:
        digest.update((_HERE / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]


def _restamp(place: Path, files: list[Path]) -> None:
    """Empty Numba's files for the kernels at ``place`` unless they were compiled from the
    kernel sources of :func:`fingerprint` (see there), and stamp the place."""
    stamp = place / "symgrad-kernels.stamp"
    try:
        if stamp.is_file() and stamp.read_text(encoding="ascii") == fingerprint():
            return
        for f in files:
            f.unlink(missing_ok=True)
        atomic_write(stamp, fingerprint().encode("ascii"))
    except OSError:  # a place Numba can use but we cannot stamp: Numba's own checks remain
        pass


def _check() -> Path:
    """Where the kernel modules keep their machine code: Numba's place for them if it passes
    the trust checks (damaged files removed), else the private directory."""
    place = numba_location(_HERE)
    if place is None:
        reason = "Numba can write none of its cache places for symgrad's kernel library"
    else:
        files = [f for name in ALL for f in place.glob(f"{name}.*.nb[ic]")]
        owner = (_HERE.stat().st_uid,) if place == _HERE / "__pycache__" else ()
        reason = trust_problem([place, *files], owner)
        if reason is None:
            discard_corrupt(files, place)
            _restamp(place, [f for f in files if f.exists()])
            return place
    private = fallback(place or _HERE, reason, "make the path named yours and writable by "
                       "you only (chmod go-w), or set NUMBA_CACHE_DIR to a directory only you "
                       "can write")
    from numba.core.dispatcher import Dispatcher

    modules = [importlib.import_module(f"{__name__}.{name}") for name in ALL]
    with numba_cache_at(str(private)):  # nothing compiled yet: point the caches there
        for module in modules:
            for obj in vars(module).values():
                if isinstance(obj, Dispatcher) and obj.py_func.__module__ == module.__name__:
                    obj.enable_caching()
        return numba_locations(_HERE)[0]


def cache_location() -> Path | None:
    """Where Numba keeps the kernel library's machine code in this process (after
    :func:`ready`; before it, where it would: None if Numba can write nowhere)."""
    return _LOCATION[0] if _LOCATION else numba_location(_HERE)


def cache_files() -> list[Path]:
    """Numba's files for the kernel library in :func:`cache_location`."""
    place = cache_location()
    return [] if place is None else sorted(f for name in ALL for f in place.glob(f"{name}.*.nb*"))


@functools.cache
def _parts(name: str) -> tuple[str, tuple[str, ...]]:
    """Kernel module ``name``'s source without its imports of other kernel modules, and the
    kernel modules it imports."""
    source = (Path(__file__).parent / f"{name}.py").read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    uses = []
    for node in reversed(ast.parse(source).body):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in MODULES:
            uses.append(node.module)
            del lines[node.lineno - 1:node.end_lineno]
    return "".join(lines), tuple(uses)


def standalone(names: tuple[str, ...] = MODULES) -> str:
    """The kernel modules ``names`` (and those they import) as one block of source text,
    for a saved module that must run without symgrad."""
    needed, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(_parts(name)[1])
    return "\n\n".join(f"# ---- symgrad.kernels.{m} (copied) ----\n{_parts(m)[0]}"
                       for m in MODULES if m in needed)


@functools.cache
def _functions(name: str) -> tuple[str, dict[str, tuple[int, int, frozenset[str]]]]:
    """Kernel module ``name``'s source and, for each top-level function, its lines (from its
    first decorator to its end) and the module-level names it reads (imports, functions)."""
    source = (_HERE / f"{name}.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    defined = {a.asname or a.name for node in tree.body
               if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    defined |= {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            reads = frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name)) & defined
            found[node.name] = (start, node.end_lineno, reads)
    return source, found


def copy_functions(module: str, names, prefix: str = "_") -> tuple[str, frozenset[str]]:
    """The source of the functions ``names`` of kernel module ``module`` and of the module's
    functions they call, in the module's order, each renamed ``prefix + name`` (calls
    included), for a generated module to carry (so Numba compiles them with its code); and
    the names the module imports that they read (``njit``, math functions, ``SUMS``), which
    the generated module must bind."""
    source, found = _functions(module)
    needed, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(found[name][2] & found.keys())
    lines = source.splitlines(keepends=True)
    blocks, reads = [], set()
    for name, (start, end, used) in found.items():
        if name in needed:
            blocks.append(_renamed("".join(lines[start - 1:end]), needed, prefix))
            reads |= used - found.keys()
    return "\n\n".join(blocks), frozenset(reads)


def _renamed(text: str, names: set[str], prefix: str) -> str:
    """``text`` with every identifier token in ``names`` prefixed (comments, strings and
    attribute names other than those identifiers are left as they are)."""
    lines = text.splitlines(keepends=True)
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
              if t.type == tokenize.NAME and t.string in names]
    for t in reversed(tokens):
        row, col = t.start
        line = lines[row - 1]
        lines[row - 1] = line[:col] + prefix + line[col:]
    return "".join(lines)


def warm() -> float:
    """Compile (or load) every kernel for the types symgrad uses, so that the first model
    on this machine does not pay for it; return the seconds it took. ``symgrad cache warm``
    runs it."""
    import time

    import numpy as np
    from numba import cfunc

    from . import blas, loops, optim, trainer, vecmath

    start = time.perf_counter()
    ready()
    for name in ("vexp", "vexp_fast", "vexpm1", "vtanh", "vlog", "vlog1p", "vsin", "vcos",
                 "vsin_fast", "vcos_fast"):
        getattr(vecmath, name)(0.5)

    @cfunc(trainer.BLOCK)
    def block(params, data, start, stop, sums):
        sums[0] = sums[1] = 0.0
        for i in range(start, stop):
            sums[0] = loops.accumulate(sums[0], params[0] * data[0, i])
            sums[1] = loops.accumulate(sums[1], data[0, i])

    data, val = np.ones((1, 4)), np.ones((1, 2))
    for parallel in (False, True):
        trainer.train(block, block, True, parallel, 0, np.zeros(1), np.zeros((1, 1)),
                      np.zeros(1, dtype=np.int64), np.array([0.1, 0.0, 0.0]), data, val, 0, 1,
                      2, False, True, 0, 0, np.zeros(1), np.zeros(1), np.array([np.inf, -1, 0]),
                      np.zeros(1))
    for dtype in (np.float64, np.float32):
        p = np.zeros(3, dtype=dtype)
        optim.update(6, p, p.copy(), np.zeros((3, 3), dtype=dtype), 1, np.zeros(6))
        optim.update_halves(6, p, p.copy(), np.zeros((3, 3), dtype=dtype), 1, np.zeros(6))
        a, out = np.ones((2, 2), dtype=dtype), np.empty((2, 2), dtype=dtype)
        for left, right in ((a, a), (a.T, a), (a, a.T)):  # the operand layouts emit writes
            blas.gemm(left, right, out)
        rows = np.ones((2, 6), dtype=dtype)  # fit's conversions into the working layout,
        blocks = np.array([[0, 2, 2]])  # whose blocks fit passes read-only (another type)
        blocks.flags.writeable = False
        loops.relayout(rows, np.empty_like(rows), blocks, True)
    loops.permute(np.empty(3, dtype=np.int64), 0)
    from . import split

    split.compiled_worker()  # the two-core loop of matrix models
    return time.perf_counter() - start
