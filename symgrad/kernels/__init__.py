"""symgrad's kernel library: the numeric code that is the same for every model.

Ordinary Python modules of ``@njit(cache=True)`` functions, importing only math, NumPy and
Numba, so Numba compiles each of them once per machine and loads it from its disk cache
afterwards; generated modules import them and compile only the model's own code:

- ``vecmath``: vectorizable exp, log, sin, cos, tanh, log1p, expm1 (pure arithmetic);
- ``loops``: the seeded shuffle, finiteness checks, row sums;
- ``optim``: the optimizers' update rules, one function for all of them;
- ``trainer``: the training loop (epochs, minibatches, block sums, early stopping) that
  calls a model's per-sample block kernel through a first-class function argument;
- ``tape_vm``: an interpreter of tapes (opcode rows over a slot array), which runs the
  programs of graphs too big to compile as flat code (``symgrad.compile.tape``).

A saved standalone module carries a copy of the kernels it needs (:func:`standalone`), so
it still runs with only NumPy and Numba.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

__all__ = ["MODULES", "standalone"]

#: The kernel modules in dependency order.
MODULES = ("vecmath", "loops", "optim", "trainer")


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


def warm() -> float:
    """Compile (or load) every kernel for the types symgrad uses, so that the first model
    on this machine does not pay for it; return the seconds it took. ``symgrad cache warm``
    runs it."""
    import time

    import numpy as np
    from numba import cfunc

    from . import loops, optim, trainer, vecmath

    start = time.perf_counter()
    for name in ("vexp", "vexpm1", "vtanh", "vlog", "vlog1p", "vsin", "vcos", "vsin_fast",
                 "vcos_fast"):
        getattr(vecmath, name)(0.5)

    @cfunc(trainer.BLOCK)
    def block(params, data, start, stop, buf):
        for i in range(start, stop):
            buf[0, i - start] = params[0] * data[0, i]
            buf[1, i - start] = data[0, i]

    data, val = np.ones((1, 4)), np.ones((1, 2))
    for parallel in (False, True):
        trainer.train(block, block, True, parallel, 0, np.zeros(1), np.zeros((1, 1)),
                      np.zeros(1, dtype=np.int64), np.array([0.1, 0.0, 0.0]), data, val, 0, 1,
                      2, False, True, 0, 0, np.zeros(1), np.zeros(1), np.array([np.inf, -1, 0]),
                      np.zeros(1))
    for dtype in (np.float64, np.float32):
        p = np.zeros(3, dtype=dtype)
        optim.update(6, p, p.copy(), np.zeros((3, 3), dtype=dtype), 1, np.zeros(6))
    loops.permute(np.empty(3, dtype=np.int64), 0)
    return time.perf_counter() - start
