"""The training loop of per-sample models, compiled once for every model.

A model contributes only its *block kernel*: ``block(params, data, start, stop, sums)``
writes the sums over samples ``start..stop-1`` (columns of ``data``) of the per-sample loss
(``sums[0]``) and gradient (``sums[1..]``) into ``sums``, in one pass: each sample's values
stay in registers and go into running sums (``loops.accumulate``), so the loop over samples
vectorizes. It is a ``numba.cfunc`` of signature :data:`BLOCK`, passed to these functions
as a first-class function, so this module is compiled (and cached) once per machine and
only the model's flat code compiles per model. A model whose fast sin/cos may return NaN
(huge arguments) also passes an *exact* block with libm's; a block whose sums come out
non-finite is recomputed with it.
"""

import numpy as np
from numba import float64, int64, njit, prange, types

from .loops import DONE, claim, end_epoch, finite, permute
from .optim import update

#: The block kernel's signature: (params, data, start, stop, sums) -> None.
BLOCK = types.void(float64[::1], float64[:, ::1], int64, int64, float64[::1])
#: Samples per block (the unit the exact block redoes): each block call costs ~60 ns beside
#: its samples' ~3 ns each (W4), so 512 lost 3 % that 2048 does not. Runs of blocks (at most
#: CHUNKS) are the parallel work items.
BLOCK_SIZE = 2048
CHUNKS = 64


@njit(cache=True, error_model="numpy")
def block_sums(block, exact, has_exact, params, data, lo, hi, part):
    """Loss and gradient sums of samples lo..hi-1 into ``part``."""
    block(params, data, lo, hi, part)
    if has_exact:
        ok = True
        for k in range(part.shape[0]):
            ok = ok and finite(part[k])
        if not ok:
            exact(params, data, lo, hi, part)


@njit(cache=True, error_model="numpy")
def _chunk_sum(block, exact, has_exact, params, data, start, stop, c, chunks, part, own):
    """Sums of chunk ``c`` of ``chunks`` (a run of blocks) into ``own``."""
    blocks = (stop - start + BLOCK_SIZE - 1) // BLOCK_SIZE
    own[:] = 0.0
    for b in range(c * blocks // chunks, (c + 1) * blocks // chunks):
        lo = start + b * BLOCK_SIZE
        block_sums(block, exact, has_exact, params, data, lo, min(lo + BLOCK_SIZE, stop), part)
        for k in range(own.shape[0]):
            own[k] += part[k]


@njit(cache=True, error_model="numpy")
def _serial_sum(block, exact, has_exact, params, data, start, stop, acc):
    """The chunks of :func:`_parallel_sum` one after the other, added in the same order:
    the same sums to the bit, so a loop may switch between the two."""
    rows = acc.shape[0]
    chunks = min((stop - start + BLOCK_SIZE - 1) // BLOCK_SIZE, CHUNKS)
    part = np.empty(rows)
    own = np.empty(rows)
    for c in range(chunks):
        _chunk_sum(block, exact, has_exact, params, data, start, stop, c, chunks, part, own)
        for k in range(rows):
            acc[k] += own[k]


@njit(cache=True, error_model="numpy", parallel=True)
def _parallel_sum(block, exact, has_exact, params, data, start, stop, acc, handed):
    """Runs of blocks (chunks) handed out one at a time, to whichever thread asks first
    (``claim`` on ``handed``, zero on entry; the caller makes it: a counter allocated here
    came back unchanged from Numba's parfor pass): a thread slowed by another process
    takes fewer of them, where an even split left the other idle. Each chunk's sums go to
    its own row, added in chunk order: the result does not depend on which thread ran
    what."""
    rows = acc.shape[0]
    blocks = (stop - start + BLOCK_SIZE - 1) // BLOCK_SIZE
    chunks = min(blocks, CHUNKS)
    partial = np.zeros((chunks, rows))
    for _ in prange(chunks):  # a thread's first iteration claims chunks until none is left
        c = claim(handed)
        if c >= chunks:
            continue
        part = np.empty(rows)
        own = np.empty(rows)
        while c < chunks:
            _chunk_sum(block, exact, has_exact, params, data, start, stop, c, chunks, part, own)
            partial[c] = own  # one write per chunk: no cache line shared while summing
            c = claim(handed)
    for c in range(chunks):
        for k in range(rows):
            acc[k] += partial[c, k]


@njit(cache=True, error_model="numpy")
def loss_and_grad_sum(block, exact, has_exact, parallel, params, data, start, stop, grad):
    """Sum of the per-sample loss (returned) and of its gradient (into ``grad``) over
    samples start..stop-1; ``parallel`` runs blocks on all cores."""
    acc = np.zeros(params.shape[0] + 1)
    if parallel:
        _parallel_sum(block, exact, has_exact, params, data, start, stop, acc,
                      np.zeros(1, dtype=np.int64))
    else:
        _serial_sum(block, exact, has_exact, params, data, start, stop, acc)
    for k in range(params.shape[0]):
        grad[k] = acc[k + 1]
    return acc[0]


@njit(cache=True, error_model="numpy")
def loss_sum(block, exact, has_exact, parallel, params, data):
    """Sum of the per-sample loss over all samples of ``data``."""
    return loss_and_grad_sum(block, exact, has_exact, parallel, params, data, 0,
                             data.shape[1], np.empty(params.shape[0]))


@njit(cache=True, error_model="numpy")
def train(block, exact, has_exact, parallel, kind, params, state, step, hyper, data, val,
          first, epochs, batch, drop_last, shuffle, seed, patience, losses, val_losses, best,
          best_params):
    """Run epochs first..first+epochs-1: shuffle, minibatches, one update per batch.

    Writes each epoch's mean training loss (over the batches, at the parameters each batch
    saw) and validation loss (after the epoch) into losses/val_losses. Tracks the best
    monitored loss (validation if given, else training) in best = [loss, epoch, wait] and
    the parameters it belongs to in best_params (after the epoch when validating, else
    those the epoch started from; see loops.end_epoch). Returns (epochs run, status):
    DONE, DIVERGED (non-finite loss or parameters) or EARLY_STOPPING.
    """
    n = data.shape[1]
    size = n if batch <= 0 or batch > n else batch
    batches = n // size if drop_last else (n + size - 1) // size
    grad = np.empty(params.shape[0])
    buffer = np.empty((data.shape[0], size))
    order = np.empty(n, dtype=np.int64)
    before = np.empty_like(params)
    validating = val.shape[1] > 0
    for e in range(epochs):
        epoch = first + e
        if not validating:
            before[:] = params
        if shuffle:
            permute(order, seed * 1000003 + epoch)
        total = 0.0
        seen = 0
        for b in range(batches):
            start = b * size
            stop = min(start + size, n)
            m = stop - start
            if shuffle:
                for c in range(data.shape[0]):
                    for j in range(m):
                        buffer[c, j] = data[c, order[start + j]]
                total += loss_and_grad_sum(block, exact, has_exact, parallel, params, buffer,
                                           0, m, grad)
            else:
                total += loss_and_grad_sum(block, exact, has_exact, parallel, params, data,
                                           start, stop, grad)
            seen += m
            for k in range(grad.shape[0]):
                grad[k] /= m
            step[0] += 1
            update(kind, params, grad, state, step[0], hyper)
        monitor = (loss_sum(block, exact, has_exact, parallel, params, val) / val.shape[1]
                   if validating else 0.0)
        status = end_epoch(epoch, total / seen, monitor, validating, params, before, losses,
                           val_losses, best, best_params, patience)
        if status != DONE:
            return e + 1, status
    return epochs, DONE
