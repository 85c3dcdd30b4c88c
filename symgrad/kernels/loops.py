"""Small loop kernels shared by every training loop: finiteness, the seeded shuffle, sums."""

import numba
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed

#: Fast-math flags for plain sums only: reassociation lets them vectorize.
SUMS = {"reassoc", "contract", "arcp", "nsz"}
_SUM_FLAGS = tuple(sorted(SUMS))
#: How a training loop's epochs ended (``symgrad.train.history`` names them the same way).
DONE, DIVERGED, EARLY_STOPPING = 0, 1, 2


@njit(cache=True, error_model="numpy")
def finite(x):
    """True unless x is NaN or infinite (x - x is NaN exactly then)."""
    return x - x == 0.0


@njit(cache=True, error_model="numpy")
def permute(order, key):
    """Fisher-Yates shuffle of arange(n) into ``order``, driven by splitmix64 seeded with key."""
    state = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1)
    for k in range(order.shape[0]):
        order[k] = k
    for k in range(order.shape[0] - 1, 0, -1):
        state += np.uint64(0x9E3779B97F4A7C15)
        z = state
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        j = np.int64(z % np.uint64(k + 1))
        tmp = order[k]
        order[k] = order[j]
        order[j] = tmp


@numba.extending.intrinsic
def accumulate(typingctx, total, value):
    """total + value as one float64 addition that may be reassociated (``SUMS`` flags on it
    alone): a loop that sums with it vectorizes, while the code computing ``value`` keeps
    exact IEEE arithmetic. Block kernels add each sample's loss and gradient to their running
    sums with it. A float32 running total is added to in float32 (a float32 model's sums, as
    BLAS sums: a vector register holds 16 of them, not 8). An intrinsic, so each use is one
    instruction with nothing to compile, type or link (a call per sum cost Numba ~2 ms per
    model)."""
    if not all(isinstance(t, (types.Float, types.Integer, types.Boolean))
               for t in (total, value)):
        return None
    kind = types.float32 if total == types.float32 else types.float64

    def codegen(context, builder, signature, args):
        t, v = (context.cast(builder, a, ty, kind) for a, ty in zip(args, signature.args))
        return builder.fadd(t, v, flags=_SUM_FLAGS)

    return kind(total, value), codegen


@numba.extending.intrinsic
def claim(typingctx, counter):
    """counter[0] += 1 as one atomic operation, returning the value before: threads that
    take work items by number get each one exactly once."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", data, context.get_constant(types.int64, 1),
                                  "monotonic")

    return types.int64(counter), codegen


@numba.extending.intrinsic
def view2d(typingctx, a, start, rows, cols):
    """a[start:start + rows * cols].reshape((rows, cols)) for a contiguous vector ``a``,
    without reshape's run-time checks (~14 ns each, a dozen per call of a matrix model's
    ``chunk``, whose caller sizes ``a``). Shares ``a``'s memory (and keeps it alive)."""
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
            and all(isinstance(t, types.Integer) for t in (start, rows, cols))):
        return None
    out_type = a.copy(ndim=2, layout="C")

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        o, r, c = (context.cast(builder, v, t, types.intp)
                   for v, t in zip(args[1:], signature.args[1:]))
        item = context.get_constant(types.intp,
                                    context.get_abi_sizeof(context.get_data_type(a.dtype)))
        out = context.make_array(out_type)(context, builder)
        context.populate_array(out, data=builder.gep(src.data, [o]),
                               shape=cgutils.pack_array(builder, [r, c]),
                               strides=cgutils.pack_array(builder, [builder.mul(c, item), item]),
                               itemsize=item, meminfo=src.meminfo, parent=None)
        return impl_ret_borrowed(context, builder, out_type, out._getvalue())

    return out_type(a, start, rows, cols), codegen


@njit(cache=True, error_model="numpy")
def end_epoch(epoch, loss, monitor, validating, params, before, losses, val_losses, best,
              best_params, patience):
    """The end of an epoch, the same in every training loop: record its loss (and the
    validation loss ``monitor`` when ``validating``), keep the best monitored loss in
    best = [loss, epoch, wait] with the parameters it belongs to, stop on a non-finite loss
    or parameter (DIVERGED), stop after ``patience`` epochs without improvement
    (EARLY_STOPPING, when patience > 0); otherwise DONE (go on).

    The validation loss is measured after the epoch's updates, at ``params``; the training
    loss during the epoch, starting at ``before`` (the parameters when the epoch began: for
    full-batch training the epoch's loss is exactly their loss). So the best parameters kept
    are ``params`` when validating and ``before`` otherwise, and a best loss is kept even
    when the epoch's update then diverged.
    """
    losses[epoch] = loss
    ok = finite(loss)
    for k in range(params.shape[0]):
        ok = ok and finite(params[k])
    if validating:
        val_losses[epoch] = monitor
        ok = ok and finite(monitor)
        kept = params
    else:
        monitor = loss
        kept = before
    if finite(monitor) and monitor < best[0]:
        for k in range(kept.shape[0]):
            if not finite(kept[k]):
                return DIVERGED
        best[0] = monitor
        best[1] = epoch
        best[2] = 0
        for k in range(kept.shape[0]):
            best_params[k] = kept[k]
    elif ok:
        best[2] += 1
        if patience > 0 and best[2] >= patience:
            return EARLY_STOPPING
    return DONE if ok else DIVERGED


@njit(cache=True, error_model="numpy")
def relayout(src, dst, blocks, into_working):
    """dst = src, row by row (each row a vector laid out like a matrix model's parameters:
    the parameters, the gradient, optimizer state rows), with the matrices ``blocks`` (int64
    rows (offset, rows, columns) in the model's layout, by increasing offset, not
    overlapping) transposed: into the working layout of the compiled loop (``into_working``)
    or back. src and dst are 2-D, C-contiguous, of one shape, and do not overlap. Replaces
    NumPy's strided transposing copies (W3's parameters, 101,770 float32 values with two
    matrices, one thread: ~240 us per vector there; here ~70 us into memory already
    touched, ~180 us into the freshly allocated arrays fit converts into)."""
    n = src.shape[1]
    for k in range(src.shape[0]):
        s = src[k]
        d = dst[k]
        done = 0
        for b in range(blocks.shape[0]):
            lo, r, c = blocks[b, 0], blocks[b, 1], blocks[b, 2]
            for i in range(done, lo):
                d[i] = s[i]
            if not into_working:
                r, c = c, r
            _transpose_strips(s[lo:lo + r * c].reshape((r, c)), d[lo:lo + r * c].reshape((c, r)))
            done = lo + r * c
        for i in range(done, n):
            d[i] = s[i]


@njit(cache=True, error_model="numpy")
def _transpose_strips(a, t):
    """t = a.T, by rows of t in strips of 8 rows of a (each read along its rows)."""
    m = a.shape[0] - a.shape[0] % 8
    for i0 in range(0, m, 8):
        for j in range(a.shape[1]):
            for i in range(i0, i0 + 8):
                t[j, i] = a[i, j]
    for i in range(m, a.shape[0]):
        for j in range(a.shape[1]):
            t[j, i] = a[i, j]
