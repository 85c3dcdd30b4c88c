"""Full-batch training of a matrix model on several threads, compiled once for every model.

A model whose program splits by samples (``symgrad.emit.split``) contributes only its
``chunk`` function, of signature :data:`CHUNK`: ``chunk(params, grad, work, m, n, dims)``
runs the model's code on the m samples laid out in ``work`` (their data, then the code's
buffers) of a batch of n, returns their loss and writes their gradient: the same
parameter-only part for every chunk plus the sums over its samples. This module does the
rest, the same for every model:

- the samples are cut into fixed chunks (:func:`chunk_size`: boundaries from the sample
  count only, never from the thread count), each with its own work vector (chunks writing
  column ranges of shared buffers ran ~35 % slower on two threads);
- one parallel region over all the epochs of a call (a region per epoch gains nothing);
  a chunk is run by whichever thread takes it first (a compare-and-swap on its epoch count,
  each thread trying its own chunk first) and writes its loss and gradient to its own row;
- the thread that completes an epoch's last chunk adds the rows in chunk order, takes off
  the parameter-only part counted once per extra chunk (``chunk`` on no samples), updates
  the parameters, runs the validation pass, and opens the next epoch: the same bits on one
  thread or eight;
- a thread that finds no chunk left waits for the next epoch, spinning (``pause``) and,
  after :data:`SPINS` spins, giving its core away (``sched_yield``) at each further look:
  the partner it waits for may need that core.

The threads are Python threads running :func:`worker` without the GIL (a Numba ``prange``
region over the same worker took ~33 s more to compile). Measured by hand on W2
(``benchmarks/w2_threads.py``): 6.9-8.7 us per epoch on two threads, 12.7-13.4 on one.
"""

import math
import platform
import threading
import time

import numpy as np
from llvmlite import ir
from numba import float64, int64, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .loops import DONE, end_epoch
from .optim import update

#: The model's chunk function: (params, grad, work, m, n, dims) -> loss.
CHUNK = float64(float64[::1], float64[::1], float64[::1], int64, int64, int64[::1])
#: Chunks are multiples of this many samples (LLVM's vector loops take 8 doubles x 4 per
#: iteration and do the rest one at a time: on one thread W2's chunks of 80 samples cost
#: 19.1 us per epoch against 12.7 for 160), and at least MIN_CHUNK samples (the loops'
#: set-up and tails: chunks of 40/64/104/152 samples took 1.45/1.19/1.11/1.07x the time of
#: the whole batch at once).
VECTOR_STEP = 32
MIN_CHUNK = 128
#: Spins (``pause``) before a waiting thread yields its core at each further look: 2/3/4/8
#: threads on 2 busy cores went from 38/67/84/162 to 28/32/38/28 us per W2 epoch.
SPINS = 2000
#: The control words' places, one cache line apart: chunks done, the open epoch, stop,
#: epochs run, status.
_DONE, _OPEN, _STOP, _RAN, _STATUS = 0, 8, 16, 24, 32


def chunk_size(n: int) -> int:
    """Samples per chunk for a batch of n, from n only: n shared by a power-of-two count of
    chunks of at least MIN_CHUNK samples, each rounded up to a multiple of VECTOR_STEP (the
    last takes the rest). The rounding can leave fewer chunks than that power of two (1025
    samples: 7 of 160, not 8), so shares on 2, 4, 8 ... threads are even only where it
    does not (a review found it; kept, not measured: no multiple of VECTOR_STEP gives 8
    chunks of 1025)."""
    count = 1 << int(math.log2(max(n // MIN_CHUNK, 1)))
    per = -(-n // count)
    return -(-per // VECTOR_STEP) * VECTOR_STEP


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


def _item(context, builder, aryty, ary, idx):
    arr = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, arr, [idx])


def _int64_array(a) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.int64 and a.ndim == 1


@intrinsic
def load_acquire(typingctx, a, i):
    """a[i], read with acquire ordering (what another thread wrote before releasing it)."""
    if not _int64_array(a):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_item(context, builder, sig.args[0], *args), "acquire", 8)

    return types.int64(a, i), codegen


@intrinsic
def store_release(typingctx, a, i, v):
    """a[i] = v with release ordering: everything written before is seen with it."""
    if not _int64_array(a):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(v, _item(context, builder, sig.args[0], args[0], args[1]),
                             "release", 8)
        return context.get_dummy_value()

    return types.none(a, i, v), codegen


@intrinsic
def fetch_add(typingctx, a, i):
    """a[i] += 1 atomically (acquire-release); the value before."""
    if not _int64_array(a):
        return None

    def codegen(context, builder, sig, args):
        one = context.get_constant(types.int64, 1)
        return builder.atomic_rmw("add", _item(context, builder, sig.args[0], *args), one,
                                  "acq_rel")

    return types.int64(a, i), codegen


@intrinsic
def swap_if(typingctx, a, i, old, new):
    """a[i] = new if a[i] == old, atomically; whether it did."""
    if not _int64_array(a):
        return None

    def codegen(context, builder, sig, args):
        o, nw = (context.cast(builder, v, t, types.int64)
                 for v, t in zip(args[2:], sig.args[2:]))
        r = builder.cmpxchg(_item(context, builder, sig.args[0], args[0], args[1]), o, nw,
                            "acq_rel", "acquire")
        return builder.extract_value(r, 1)

    return types.boolean(a, i, old, new), codegen


@intrinsic
def pause(typingctx):
    """The spin-wait hint (x86 ``pause``; nothing elsewhere)."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def yield_cpu(typingctx):
    """sched_yield(): let another runnable thread have this core."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                            "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


_A1, _A2, _I1 = float64[::1], float64[:, ::1], int64[::1]


@njit(cache=True, error_model="numpy")
def _close_epoch(chunk, grads, closs, g, g0, dims, val, nv, p, kind, state, step, hyper,
                 epoch, patience, losses, val_losses, best, best_params, before):
    """An epoch's serial part: the chunks' sums in chunk order, less the parameter-only
    part counted once per extra chunk, the update, the validation pass, end_epoch."""
    chunks, size = grads.shape[0] - 1, p.shape[0]
    loss = 0.0
    g[:] = 0.0
    for c in range(chunks):
        loss += closs[8 * c]
        for k in range(size):
            g[k] += grads[c, k]
    if chunks > 1:  # the part of parameters only: the last task's, of no samples
        extra = float(chunks - 1)
        loss -= extra * closs[8 * chunks]
        for k in range(size):
            g[k] -= extra * grads[chunks, k]
    if nv == 0:
        before[:] = p
    step[0] += 1
    update(kind, p, g, state, step[0], hyper)
    monitor = chunk(p, g0, val, nv, nv, dims) if nv > 0 else 0.0
    return end_epoch(epoch, loss, monitor, nv > 0, p, before, losses, val_losses, best,
                     best_params, patience)


@njit(cache=True, nogil=True)
def wait_open(ctl, e):
    """The open epoch (ctl[_OPEN]) once it is e or later, -1 once training stops (ctl[_STOP]
    set): :data:`SPINS` spins (``pause``), then a yield of the core at each further look."""
    spins = 0
    while True:
        if load_acquire(ctl, _STOP) != 0:
            return -1
        opened = load_acquire(ctl, _OPEN)
        if opened >= e:
            return opened
        spins += 1
        if spins < SPINS:
            pause()
        else:
            yield_cpu()


@njit(cache=True, nogil=True, error_model="numpy")
def worker(w, chunk, ctl, taken, works, widths, grads, closs, g, g0, n, dims, val, nv, p, kind,
           state, step, hyper, first, epochs, patience, losses, val_losses, best, best_params,
           before):
    """Thread ``w``'s share of ``epochs`` epochs: the tasks of the open epoch (task w
    first), until training stops. A task is a chunk (``works[c]``, ``widths[c]``: its work
    vector and sample count; ``grads[c]``, ``closs[8c]``: its gradient and loss) or, the
    last, the program on no samples (the parameter-only part). ``ctl`` (zeros on entry): the
    control words (:data:`_DONE` ...); ``taken[8c]``: task c's epochs so far."""
    chunks = works.shape[0]
    e = 0
    while True:
        e = wait_open(ctl, e)
        if e < 0:
            return
        for j in range(chunks):
            c = (w + j) % chunks
            if not swap_if(taken, 8 * c, e, e + 1):
                continue
            closs[8 * c] = chunk(p, grads[c], works[c], widths[c], n, dims)
            if fetch_add(ctl, _DONE) == (e + 1) * chunks - 1:  # the epoch's last chunk
                status = _close_epoch(chunk, grads, closs, g, g0, dims, val, nv, p, kind,
                                      state, step, hyper, first + e, patience, losses,
                                      val_losses, best, best_params, before)
                ctl[_RAN] = e + 1
                ctl[_STATUS] = status
                if status != DONE or e + 1 == epochs:
                    store_release(ctl, _STOP, 1)
                    return
                store_release(ctl, _OPEN, e + 1)
        e += 1


#: :func:`worker`'s one signature: with the chunk function as a first-class function, so
#: the worker compiles once for every model (a Numba dispatcher argument would make it
#: compile, and miss the disk cache, once per model and process).
WORKER = types.void(int64, types.FunctionType(CHUNK), _I1, _I1, _A2, _I1, _A2, _A1, _A1, _A1,
                    int64, _I1, _A1, int64, _A1, int64, _A2, _I1, _A1, int64, int64, int64,
                    _A1, _A1, _A1, _A1, _A1)


def compiled_worker():
    """:func:`worker`, compiled (or loaded from Numba's cache) for :data:`WORKER` only."""
    if not worker.signatures:
        worker.compile(WORKER)
        worker.disable_compile()
    return worker


def train(threads: int, chunk, works, widths, n: int, dims, val, nv: int, p, grad,
          kind: int, state, step, hyper, first: int, epochs: int, patience: int, losses,
          val_losses, best, best_params, timing: list | None = None) -> tuple[int, int]:
    """``epochs`` full-batch epochs from epoch ``first`` on ``threads`` threads (this one
    and threads - 1 more). ``works``, ``widths``: the tasks' work vectors (the chunks',
    filled with their data, and a last one for no samples) and sample counts; ``val``: the
    validation data's work vector, ``nv`` samples. Leaves the last epoch's gradient in
    ``grad``. Returns (epochs run, status) like the serial loop; appends the seconds the
    epochs took, threads started, to ``timing``."""
    run = compiled_worker()
    if epochs <= 0:
        return 0, DONE
    tasks, size = works.shape[0], p.shape[0]
    ctl = np.zeros(40, dtype=np.int64)
    taken = np.zeros(8 * tasks, dtype=np.int64)
    grads = np.zeros((tasks, -(-size // 8) * 8))  # rows on their own cache lines
    closs = np.zeros(8 * tasks)
    g0 = np.empty(size)
    before = np.empty_like(p)
    args = (chunk, ctl, taken, works, widths, grads, closs, grad, g0, n, dims, val, nv, p,
            kind, state, step, hyper, first, epochs, patience, losses, val_losses, best,
            best_params, before)
    others = [threading.Thread(target=run, args=(w, *args), daemon=True)
              for w in range(1, threads)]
    for t in others:
        t.start()
    t0 = time.perf_counter()
    try:
        run(0, *args)
    finally:
        if timing is not None:
            timing.append(time.perf_counter() - t0)
        for t in others:
            t.join()
    return int(ctl[_RAN]), int(ctl[_STATUS])


__all__ = ["CHUNK", "MIN_CHUNK", "SPINS", "VECTOR_STEP", "WORKER", "chunk_size", "compiled_worker",
           "train", "wait_open", "worker"]
