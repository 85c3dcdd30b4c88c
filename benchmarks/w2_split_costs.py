"""Where a W2 epoch goes on one thread: the serial ``train``, the chunked loop on one thread, and
the generated ``chunk`` on chunks of several sizes (issue #15).

Times are CPU time of the measuring thread (``time.thread_time``), not wall time: on a machine
shared with other measuring processes, wall times of one fit swing 2x, thread times a few per
cent. Each repeat runs every variant once, in turn (interleaved); the medians and the ratio of
the chunked loop on one thread to the serial loop are printed with the load average.

What it showed (AMD EPYC Zen 3, AVX2, 2 vCPUs, load 2.7-5: per-epoch thread times run ~1.5x
a quiet machine's and change with the host's load): serial ``train`` 28-38 us per epoch,
the chunked loop on one thread 1.06-1.07x that (chunks of 160 and 140 samples and the
parameter-only task); ``chunk`` costs ~0.6-0.8 us with no samples and ~113 ns per sample
at 128-160 samples (~104 at 300). The tanh pass is ~63 % of a chunk (16 tanh per sample,
~4.4 ns each); the no-sample task and the threads' control words on one thread are ~1 %
each.

Run: ``PYTHONPATH=. python benchmarks/w2_split_costs.py [repeats] [epochs]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
import sympy as sp
from numba import njit

import symgrad as sg
from benchmarks.workloads import w2
from symgrad.kernels.split import train as split_train
from symgrad.train.arrays import loop_arguments, split_chunk, split_chunks, split_work


@njit
def _calls(chunk, p, g, w, m, n, dims, k):
    t = 0.0
    for _ in range(k):
        t += chunk(p, g, w, m, n, dims)
    return t


def main(repeats: int = 15, epochs: int = 500) -> None:
    X, _, Y = w2.data()
    n = sp.Symbol("n", integer=True, positive=True)
    Xs, Ys = sp.MatrixSymbol("X", n, w2.D), sp.MatrixSymbol("Y", n, w2.K)
    W1, b1, W2, b2 = syms = [sp.MatrixSymbol(s, *shape) for s, shape in zip(w2.NAMES, w2.SHAPES)]
    scores = sg.tanh(Xs * W1 + b1) * W2 + b2
    loss = sg.softmax_cross_entropy(scores, Ys) + 0.5 * w2.REG * (sg.l2(W1) + sg.l2(W2))
    model = sg.Model(loss, params=dict(zip(syms, w2.init())), data=[Xs, Ys],
                     optimizer=sg.optim.SGD(lr=w2.LR), dtype="float64")
    model.fit({Xs: X, Ys: Y}, epochs=1, verbose=0, engine="compiled")
    module, flipped, batched = model.trainer, model._flipped(), model._batched()
    size, rows = model._values.size, X.shape[0]
    data = tuple(np.ascontiguousarray(a.T) if f else a for a, f in zip((X, Y), flipped))
    none = tuple(np.ascontiguousarray(a[:0].T) if f else a[:0] for a, f in zip((X, Y), flipped))
    works, widths = split_chunks(module, data, batched, flipped, rows)
    val = split_work(module, none, batched, flipped, 0, 0)
    grad, buffers = loop_arguments(module, data, rows, 0, batched, flipped, np.float64, size)
    opt, chunk = model.optimizer, split_chunk(module)
    hyper = opt.hyper()

    def fresh():
        p = model._values.copy()
        return (p, opt.state_for(size, np.float64), np.zeros(1, np.int64),
                np.full(epochs, np.nan), np.full(epochs, np.nan), np.array([np.inf, -1.0, 0.0]),
                p.copy())

    def serial():
        p, state, step, losses, val_losses, best, best_params = fresh()
        t0 = time.thread_time()
        module.train(p, grad, state, step, hyper, opt.kind, data, none, buffers, module.DIMS, 0,
                     epochs, rows, False, False, 0, 0, losses, val_losses, best, best_params)
        return (time.thread_time() - t0) / epochs

    def chunked():
        p, state, step, losses, val_losses, best, best_params = fresh()
        t0 = time.thread_time()
        split_train(1, chunk, works, widths, rows, module.DIMS, val, 0, p, grad, opt.kind,
                    state, step, hyper, 0, epochs, 0, losses, val_losses, best, best_params)
        return (time.thread_time() - t0) / epochs

    def calls(m):
        w, p = split_work(module, data, batched, flipped, 0, m), model._values.copy()

        def run():
            t0 = time.thread_time()
            _calls(chunk, p, grad, w, m, rows, module.DIMS, epochs)
            return (time.thread_time() - t0) / epochs
        return run

    variants = {"serial train": serial, "chunked, 1 thread": chunked,
                **{f"chunk, {m} samples": calls(m) for m in (0, 32, 64, 128, 140, 160, rows)}}
    for f in variants.values():
        f()
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, f in variants.items():
            times[k].append(f() * 1e6)
    print(f"W2, chunks {widths.tolist()}; load average {os.getloadavg()}; thread time, "
          f"median of {repeats} interleaved repeats of {epochs} epochs or calls:")
    for k, v in times.items():
        print(f"  {k:20s} {statistics.median(v):7.2f} us  ({min(v):.2f} .. {max(v):.2f})")
    ratio = [a / b for a, b in zip(times["chunked, 1 thread"], times["serial train"])]
    print(f"chunked on 1 thread / serial: median {statistics.median(ratio):.3f} "
          f"({min(ratio):.3f} .. {max(ratio):.3f})")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
