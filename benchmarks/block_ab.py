"""Interleaved A/B of two block kernels on one thread, in one process (issue #15).

``--write FILE`` writes W4's generated trainer module (the block kernel symgrad makes for
y = a*exp(-b*x)*sin(c*x + d) + e, squared error) to FILE; copy and edit it (its lines, its
imports: a copy of ``symgrad/kernels/vecmath.py`` imported instead of symgrad's) into a
variant B. ``A.py B.py`` then loads both, checks their sums over W4's 1e6 samples, and times
one-thread passes (``kernels.trainer._serial_sum``, thread time) alternately A, B / B, A,
``--pairs`` times, printing the median of each and the median and quartiles of B/A with the
load before and after. On a shared machine a ratio in one process is steady to ~1 % while
whole passes differ by ~20 % between processes, and the ratio of two different blocks can
sit in one of two clusters ~8 % apart from process to process (``block_asm.py``): run it in
many processes, each with a new NUMBA_CACHE_DIR (compiling both afresh), before believing
a few per cent. A tool for levers, not a benchmark (``run.py`` is).

Run: ``PYTHONPATH=. python benchmarks/block_ab.py --write /tmp/a.py``, then
``PYTHONPATH=. python benchmarks/block_ab.py /tmp/a.py /tmp/b.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_w4(path: str) -> None:
    os.environ.setdefault("SYMGRAD_CACHE_DIR", tempfile.mkdtemp())
    import sympy as sp

    import symgrad as sg

    a, b, c, d, e, x, y = sp.symbols("a b c d e x y")
    loss = (a * sp.exp(-b * x) * sp.sin(c * x + d) + e - y) ** 2
    model = sg.Model(loss=loss, params={p: 0.5 for p in (a, b, c, d, e)}, data=[x, y])
    Path(path).write_text(model.generated.source)


def load(path: str):
    sys.path.insert(0, str(Path(path).resolve().parent))  # its sibling modules (a vecmath copy)
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="A.py B.py")
    parser.add_argument("--write", help="write W4's generated trainer module here")
    parser.add_argument("--pairs", type=int, default=30)
    args = parser.parse_args()
    if args.write:
        write_w4(args.write)
        return
    if len(args.modules) != 2:
        parser.error("give two module files (A.py B.py) or --write FILE")
    from benchmarks.workloads.w4 import INIT, data
    from symgrad.kernels.trainer import _serial_sum

    x, y = data()
    columns = np.ascontiguousarray(np.stack([x, y]))
    params = np.array(INIT)
    mods = [load(m) for m in args.modules]

    def run(m):
        acc = np.zeros(params.shape[0] + 1)
        t0 = time.thread_time()
        _serial_sum(m.block, m.exact, m.HAS_EXACT, params, columns, 0, x.shape[0], acc)
        return time.thread_time() - t0, acc

    (_, sa), (_, sb) = run(mods[0]), run(mods[1])
    print("largest relative difference of the sums:",
          float(np.max(np.abs(sa - sb) / np.abs(sa))))
    print("load before:", os.getloadavg())
    times: list[list[float]] = [[], []]
    for i in range(args.pairs):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            times[k].append(run(mods[k])[0])
    ratio = [b / a for a, b in zip(*times)]
    q = statistics.quantiles(ratio, n=4)
    print(f"A {statistics.median(times[0]) * 1e3:.3f} ms  B {statistics.median(times[1]) * 1e3:.3f}"
          f" ms  B/A median {statistics.median(ratio):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f})")
    print("load after:", os.getloadavg())


if __name__ == "__main__":
    main()
