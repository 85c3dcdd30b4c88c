"""W2 on two cores, written by hand: what one parallel region over all epochs buys (issue #15).

(Built into the library since: ``symgrad/emit/split.py`` decides which programs split by
samples, ``symgrad/kernels/split.py`` runs them; this script stays as the measurement.)
A prototype, not library code: W2's generated training loop (``model.generated.source``)
rewritten by hand so that both cores share each epoch. The batch's samples are split into
fixed chunks (a multiple of 32 samples each, boundaries from the sample count only); each
chunk runs the model's per-sample loop nests over its samples and writes its sums (loss,
gradient) to its own row of ``partial``; the thread that completes an epoch's last chunk
adds the rows in chunk order, updates the parameters and opens the next epoch. The same
bits with one thread or two (checked below). Synchronisation as in ``kernels.trainer``
(no thread assumes it has a partner): a chunk is taken by whichever thread swaps its
counter first (``_take``), each thread trying its own chunk first; a thread that finds no
chunk left spins only on the epoch that a running thread will open.

What it showed (2 vCPUs, AMD EPYC under KVM, numba 0.68.1, the machine shared with two other
measuring processes, load 2-3; so per-epoch times come from the time-stamp counter inside the
loop, over the epochs in which both threads took a chunk):

- Epochs: 8.2-8.7 us on two threads against 12.7-13.4 us for the same chunked code on one
  (1.5x; chunks of 160 and 140 samples, or 152 and 148) and ~12.2-12.7 us for the
  generated loop; on one thread the chunked code of 152-sample chunks costs ~1.07x the
  generated loop (two chunks' tails, the serial part apart). Fit wall times under this
  load favour one thread (a waiting thread has nothing to do while its partner is
  descheduled): a library path needs fit's all-cores-or-one choice.
- Loop bounds from arguments: ``for i in range(lo, hi)`` with a signed ``lo`` kept Numba's
  negative-index wraparound in every access, and no loop vectorized (3.7x slower, 49 vs
  13.4 us for the whole batch); indices as ``np.uint64`` restore it.
- Small chunks cost their loops' set-up and scalar tails: one thread over chunks of 40,
  64, 104, 152 samples took 1.45x, 1.19x, 1.11x, 1.07x the whole-batch time.
- Chunks writing disjoint column ranges of shared (16, N) buffers (rows padded to 64-byte
  boundaries) ran ~35 % slower when both threads ran at once (8.4-9.4 us against 6.1-6.8 us
  per half; cause not isolated: prefetching across the boundary, or chunks changing cores);
  with buffers of its own per chunk, 6.3-6.8 us: each chunk has its own buffers here.
- Compile: the prange region took ~33 s to compile beyond its parts (load ~2.8; the parfor
  pass compiles the worker again inside it); the same worker as ``njit(nogil=True)`` started
  from Python threads a few seconds. The base W2 model's compile took 14.7 s at that load.
- A waiting thread yields its core (``sched_yield``) after kernels.split.SPINS pause spins
  (``wait_open``, which the threads here share with the library's): 2/3/4/8 threads on the
  2 busy cores went from 38/67/84/162 to 28/32/38/28 us per epoch.

Run: ``PYTHONPATH=. python benchmarks/w2_threads.py [rounds] [epochs per fit]``.
"""

from __future__ import annotations

import math
import sys
import time

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from symgrad.kernels.loops import DONE, accumulate, end_epoch
from symgrad.kernels.optim import update
from symgrad.kernels.split import fetch_add, store_release, swap_if, wait_open
from symgrad.kernels.vecmath import vexp_fast as exp
from symgrad.kernels.vecmath import vlog as log
from symgrad.kernels.vecmath import vtanh as tanh

H = 16
#: Rows of one chunk's buffers: s5 (H), s6 (H), s8, grad_s8, t0 (2 each), wm, wz, wl.
ROWS = 2 * H + 9
MIN_CHUNK = 128  # samples


@intrinsic
def cycles(typingctx):
    """The time-stamp counter."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(64), []), "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


@njit(error_model="numpy")
def _chunk(W1, b1, W2, b2, X, Y, n, buf, lo, hi, part):
    """W2's per-sample loop nests (the generated module's, fused the same way) over samples
    lo..hi-1 of X, Y (features x samples); this chunk's intermediates in ``buf`` (column
    k is sample lo + k); the sums of its samples' loss (part[0]) and gradient (part[1:],
    laid out like the parameters). Indices are unsigned: no wraparound test, loops vectorize."""
    lo = np.uint64(lo)
    m = np.uint64(hi) - lo
    s5, s6, s8, grad_s8, t0 = buf[0:16], buf[16:32], buf[32:34], buf[34:36], buf[36:38]
    wm, wz, wl = buf[38], buf[39], buf[40]
    grad_W1 = part[1:33].reshape((2, 16))
    grad_b1 = part[33:49].reshape((1, 16))
    grad_W2 = part[49:81].reshape((16, 2))
    grad_b2 = part[81:83].reshape((1, 2))
    for a in range(16):
        for k in range(m):
            s5[a, k] = b1[0, a] + (X[0, lo + k] * W1[0, a] + X[1, lo + k] * W1[1, a])
    for a in range(16):
        for k in range(m):
            s6[a, k] = tanh(s5[a, k])
    for a in range(2):
        for k in range(m):
            s8[a, k] = b2[0, a] + (
                s6[0, k] * W2[0, a] + s6[1, k] * W2[1, a] + s6[2, k] * W2[2, a]
                + s6[3, k] * W2[3, a] + s6[4, k] * W2[4, a] + s6[5, k] * W2[5, a]
                + s6[6, k] * W2[6, a] + s6[7, k] * W2[7, a] + s6[8, k] * W2[8, a]
                + s6[9, k] * W2[9, a] + s6[10, k] * W2[10, a] + s6[11, k] * W2[11, a]
                + s6[12, k] * W2[12, a] + s6[13, k] * W2[13, a] + s6[14, k] * W2[14, a]
                + s6[15, k] * W2[15, a])
    # softmax cross-entropy (kernels.arrays.sce_probs_t), its loss sum into part[0]
    for k in range(m):
        wm[k] = max(s8[0, k], s8[1, k])
        wl[k] = 0.0
    for a in range(2):
        for k in range(m):
            v = exp(s8[a, k] - wm[k])
            t0[a, k] = v
            wl[k] += v
    for k in range(m):
        wz[k] = wm[k] + log(wl[k])
        wl[k] = 1.0 / wl[k]
        wm[k] = 0.0
    for a in range(2):
        for k in range(m):
            t0[a, k] = t0[a, k] * wl[k]
            wm[k] += Y[a, lo + k] * (wz[k] - s8[a, k])
    t = 0.0
    for k in range(m):
        t = accumulate(t, wm[k])
    part[0] = t
    for a in range(2):
        r0 = 0.0
        for k in range(m):
            grad_s8[a, k] = (-Y[a, lo + k] + t0[a, k]) / float(n)
            r0 = accumulate(r0, grad_s8[a, k])
        grad_b2[0, a] = r0
    for a in range(16):
        r0 = r1 = r2 = r3 = r4 = 0.0
        for k in range(m):
            v3 = grad_s8[0, k] * W2[a, 0] + grad_s8[1, k] * W2[a, 1]
            r0 = accumulate(r0, s6[a, k] * grad_s8[0, k])
            r1 = accumulate(r1, s6[a, k] * grad_s8[1, k])
            v2 = (1 - s6[a, k] ** 2) * v3
            r2 = accumulate(r2, v2)
            r3 = accumulate(r3, X[0, lo + k] * v2)
            r4 = accumulate(r4, X[1, lo + k] * v2)
        grad_W2[a, 0] = r0
        grad_W2[a, 1] = r1
        grad_b1[0, a] = r2
        grad_W1[0, a] = r3
        grad_W1[1, a] = r4


@njit(error_model="numpy")
def _end_of_epoch(p, g, partial, n, kind, state, step, hyper, epoch, before, losses,
                  val_losses, best, best_params, patience):
    """The serial part: the chunks' sums in chunk order, the penalty terms, the update."""
    g[:] = 0.0
    total = 0.0
    for c in range(partial.shape[0]):
        total += partial[c, 0]
        for k in range(g.shape[0]):
            g[k] += partial[c, k + 1]
    sq1 = 0.0
    for k in range(0, 32):
        sq1 = accumulate(sq1, p[k] * p[k])
    sq2 = 0.0
    for k in range(48, 80):
        sq2 = accumulate(sq2, p[k] * p[k])
    loss = (0.005 * sq1 + 0.005 * sq2) + total / n
    for k in range(0, 32):
        g[k] += 2 * 0.005 * p[k]
    for k in range(48, 80):
        g[k] += 2 * 0.005 * p[k]
    before[:] = p
    step[0] += 1
    update(kind, p, g, state, step[0], hyper)
    return end_epoch(epoch, loss, 0.0, False, p, before, losses, val_losses, best,
                     best_params, patience)


@njit(error_model="numpy")
def _worker(w, ctl, taken, partial, bufs, size, first, epochs, p, g, X, Y, kind, state, step,
            hyper, before, losses, val_losses, best, best_params, patience, stamps, owner):
    """One thread's share: chunks of the open epoch (its own first), until training stops.
    ctl[0] chunks done, ctl[8] the open epoch, ctl[16] stop, ctl[24] epochs, ctl[32]
    status (one cache line each)."""
    n = X.shape[1]
    chunks = partial.shape[0]
    W1 = p[0:32].reshape((2, 16))
    b1 = p[32:48].reshape((1, 16))
    W2 = p[48:80].reshape((16, 2))
    b2 = p[80:82].reshape((1, 2))
    e = 0
    while True:
        e = wait_open(ctl, e)  # ctl[8] open epoch, ctl[16] stop: kernels.split's places
        if e < 0:
            return
        for j in range(chunks):
            c = (w + j) % chunks
            if not swap_if(taken, 8 * c, e, e + 1):  # taken[8c]: chunk c's epochs so far
                continue
            lo = c * size
            _chunk(W1, b1, W2, b2, X, Y, n, bufs[c], lo, min(lo + size, n), partial[c])
            owner[e, c] = w
            if fetch_add(ctl, 0) == (e + 1) * chunks - 1:  # the epoch's last chunk
                status = _end_of_epoch(p, g, partial, n, kind, state, step, hyper, first + e,
                                       before, losses, val_losses, best, best_params,
                                       patience)
                stamps[e] = cycles()
                ctl[24] = e + 1
                ctl[32] = status
                if status != DONE or e + 1 == epochs:
                    store_release(ctl, 16, 1)
                    return
                store_release(ctl, 8, e + 1)
        e += 1


@njit(error_model="numpy", parallel=True)
def _all_threads(ctl, taken, partial, bufs, size, first, epochs, p, g, X, Y, kind, state, step,
                 hyper, before, losses, val_losses, best, best_params, patience, stamps,
                 owner):
    for w in prange(numba.get_num_threads()):
        _worker(w, ctl, taken, partial, bufs, size, first, epochs, p, g, X, Y, kind, state,
                step, hyper, before, losses, val_losses, best, best_params, patience, stamps,
                owner)


@njit(error_model="numpy")
def train_chunked(p, g, state, step, hyper, kind, X, Y, size, first, epochs, patience, losses,
                  val_losses, best, best_params, stamps, owner):
    """Full-batch training of W2 on all of Numba's threads; (epochs run, status)."""
    n = X.shape[1]
    chunks = (n + size - 1) // size
    bufs = np.empty((chunks, ROWS, size))
    partial = np.zeros((chunks, (p.shape[0] + 8) // 8 * 8))
    ctl = np.zeros(40, dtype=np.int64)
    taken = np.zeros(8 * chunks, dtype=np.int64)
    before = np.empty_like(p)
    # allocated here, the counters are passed to the parallel function (one allocated inside
    # it came back unchanged from Numba's parfor pass, as kernels.trainer notes)
    _all_threads(ctl, taken, partial, bufs, size, first, epochs, p, g, X, Y, kind, state, step,
                 hyper, before, losses, val_losses, best, best_params, patience, stamps, owner)
    return ctl[24], ctl[32]


#: The same worker without Numba's parallel region: started from Python threads, it runs
#: without the GIL (compiles in seconds, not the parfor region's ~33 s).
_worker_nogil = njit(error_model="numpy", nogil=True)(_worker.py_func)


@njit(error_model="numpy")
def _shared(p, n, size):
    chunks = (n + size - 1) // size
    return (np.empty((chunks, ROWS, size)), np.zeros((chunks, (p.shape[0] + 8) // 8 * 8)),
            np.zeros(40, dtype=np.int64), np.zeros(8 * chunks, dtype=np.int64),
            np.empty_like(p))


def train_threads(threads, p, g, state, step, hyper, kind, X, Y, size, first, epochs, patience,
                  losses, val_losses, best, best_params, stamps, owner):
    """:func:`train_chunked` on ``threads`` Python threads (this one and threads - 1 more)."""
    import threading

    bufs, partial, ctl, taken, before = _shared(p, X.shape[1], size)
    args = (ctl, taken, partial, bufs, size, first, epochs, p, g, X, Y, kind, state, step,
            hyper, before, losses, val_losses, best, best_params, patience, stamps, owner)
    others = [threading.Thread(target=_worker_nogil, args=(w, *args))
              for w in range(1, threads)]
    for t in others:
        t.start()
    _worker_nogil(0, *args)
    for t in others:
        t.join()
    return int(ctl[24]), int(ctl[32])


#: Chunks are multiples of this many samples: LLVM's vector loops here take 8 doubles x 4
#: (interleaved) per iteration and finish the rest one sample at a time; on one thread,
#: chunks of 80 cost 19.1 us per epoch against 13.9 for 96 and 12.7 for 160 (152: 13.3).
VECTOR_STEP = 32


def chunk_size(n: int) -> int:
    """Samples per chunk, from n only: a power-of-two count of chunks (even shares on 2, 4,
    8 ... threads) of at least MIN_CHUNK samples, each a multiple of VECTOR_STEP."""
    count = 1 << int(math.log2(max(n // MIN_CHUNK, 1)))
    per = -(-n // count)  # ceil(n / count)
    return -(-per // VECTOR_STEP) * VECTOR_STEP


def main(rounds: int = 100, epochs: int = 300) -> None:
    import sympy as sp

    import symgrad as sg
    from benchmarks.workloads import w2
    from symgrad.train.arrays import loop_arguments

    X, _, Y = w2.data()
    Xs, Ys = np.ascontiguousarray(X.T), np.ascontiguousarray(Y.T)
    n = Xs.shape[1]
    ns = sp.Symbol("n", integer=True, positive=True)
    Xm, Ym = sp.MatrixSymbol("X", ns, 2), sp.MatrixSymbol("Y", ns, 2)
    W1, b1, W2, b2 = syms = [sp.MatrixSymbol(a, *s) for a, s in zip(w2.NAMES, w2.SHAPES)]
    loss = (sg.softmax_cross_entropy(sg.tanh(Xm * W1 + b1) * W2 + b2, Ym)
            + 0.5 * w2.REG * (sg.l2(W1) + sg.l2(W2)))
    model = sg.Model(loss, params=dict(zip(syms, w2.init())), data=[Xm, Ym],
                     optimizer=sg.optim.SGD(lr=w2.LR), dtype="float64")
    module = model.pipeline.module
    hyper = np.array([w2.LR, 0.0, 0.0])
    size = chunk_size(n)

    def init():
        return np.concatenate([a.ravel() for a in w2.init()])

    def book(E):
        return (np.full(E, np.nan), np.full(E, np.nan), np.array([np.inf, -1.0, 0.0]))

    def base(E):
        p = init()
        grad, buffers = loop_arguments(module, (Xs, Ys), n, 0, [True, True], [True, True],
                                       np.float64, p.size)
        losses, vl, best = book(E)
        module.train(p, grad, np.zeros((1, p.size)), np.zeros(1, np.int64), hyper, 0,
                     (Xs, Ys), (Xs[:, :0].copy(), Ys[:, :0].copy()), buffers, module.DIMS, 0,
                     E, n, False, False, 0, 0, losses, vl, best, p.copy())
        return p, losses, None, None

    def chunked(threads, python_threads=False):
        def fit(E):
            numba.set_num_threads(threads)
            p = init()
            losses, vl, best = book(E)
            stamps = np.zeros(E, np.int64)
            owner = np.zeros((E, (n + size - 1) // size), np.int64)
            args = (p, np.empty_like(p), np.zeros((1, p.size)), np.zeros(1, np.int64), hyper,
                    0, Xs, Ys, size, 0, E, 0, losses, vl, best, p.copy(), stamps, owner)
            ran, _ = (train_threads(threads, *args) if python_threads
                      else train_chunked(*args))
            assert ran == E
            return p, losses, stamps, owner
        return fit

    fits = {"base": base, "chunked, 1 thread": chunked(1), "chunked, 2 threads": chunked(2),
            "nogil, 2 threads": chunked(2, True)}
    out = {k: f(w2.EPOCHS) for k, f in fits.items()}
    p1, p2, p3 = (out[k] for k in ("chunked, 1 thread", "chunked, 2 threads",
                                   "nogil, 2 threads"))
    same = all(np.array_equal(p1[0], q[0]) and np.array_equal(p1[1], q[1]) for q in (p2, p3))
    print(f"N={n}, chunks of {size}; 1 and 2 threads the same bits: {same}; final loss "
          f"{p2[1][-1]:.8f} (base {out['base'][1][-1]:.8f}), max param diff to base "
          f"{np.abs(p2[0] - out['base'][0]).max():.1e}")
    c0 = cycles_now()
    t0 = time.perf_counter()
    time.sleep(0.2)
    ghz = (cycles_now() - c0) / (time.perf_counter() - t0) / 1e9
    walls = {k: [] for k in fits}
    inner = {k: [] for k in fits if k != "base"}
    for _ in range(rounds):  # interleaved
        for k, f in fits.items():
            t0 = time.perf_counter()
            _, _, stamps, owner = f(epochs)
            walls[k].append((time.perf_counter() - t0) / epochs * 1e6)
            if stamps is not None:
                d = np.diff(stamps) / ghz / 1e3
                both = owner.min(axis=1)[1:] != owner.max(axis=1)[1:]
                inner[k].append(d[both] if "2 threads" in k else d)
    print(f"us per epoch over {rounds} interleaved fits of {epochs} epochs (p10 / median):")
    for k, v in walls.items():
        print(f"  {k:20s} fit wall {np.percentile(v, 10):6.2f} / {np.median(v):6.2f}", end="")
        if k in inner:
            d = np.concatenate(inner[k])
            print(f"   in-loop epochs ({d.size}, 2 threads: both worked) "
                  + (f"{np.percentile(d, 10):6.2f} / {np.median(d):6.2f}" if d.size else "-"),
                  end="")
        print()


@njit
def cycles_now():
    return cycles()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
