"""The loop kernels of matrix models: sums, small products, row-wise softmax, cross-entropy.

Generated matrix modules do not import these: they carry a copy of the ones they use
(:func:`symgrad.kernels.copy_functions`, names prefixed with ``_``), so that Numba compiles
them together with the model's loops and can inline and fuse them there. (Calling a
separately compiled library instead made W3 about 30 % slower per step.) This module is
their one written form, linted and tested against NumPy.

Matrices whose rows are the batch are stored transposed, (columns, samples): the row-wise
kernels take that layout, one sample per column. ``acc`` adds into ``out`` instead of
overwriting it (an adjoint that several lines add to). ``exp``, ``log``, ``tanh``, ``sin``
and ``cos`` are libm's here; in a generated module with ``fast_math`` the same names are
symgrad's vectorizable versions (``vecmath``). Sums are reassociated (``SUMS``) so that they
vectorize; nothing else is, so the vectorizable math keeps its exact arithmetic.
"""

from math import cos, exp, log, sin, tanh

from numba import njit

from .loops import SUMS


@njit(cache=True, error_model="numpy", fastmath=SUMS)
def sum2d(a, rows, cols):
    """The sum of a[:rows, :cols]."""
    t = 0.0
    for r in range(rows):
        for c in range(cols):
            t += a[r, c]
    return t


@njit(cache=True, error_model="numpy", fastmath=SUMS)
def sumsq2d(a, rows, cols):
    """The sum of the squares of a[:rows, :cols]."""
    t = 0.0
    for r in range(rows):
        for c in range(cols):
            t += a[r, c] * a[r, c]
    return t


@njit(cache=True, error_model="numpy", fastmath=SUMS)
def rowsums(a, rows, cols, out, acc):
    """out[r] (+)= sum of a[r, :cols], for r < rows."""
    for r in range(rows):
        t = 0.0
        for c in range(cols):
            t += a[r, c]
        out[r] = out[r] + t if acc else t


@njit(cache=True, error_model="numpy")
def map_cos(a, out):
    """out = cos(a), entry by entry, for 1-D a and out (see :func:`map_tanh`)."""
    for i in range(a.shape[0]):
        out[i] = cos(a[i])


@njit(cache=True, error_model="numpy")
def map_exp(a, out):
    """out = exp(a), entry by entry, for 1-D a and out (see :func:`map_tanh`)."""
    for i in range(a.shape[0]):
        out[i] = exp(a[i])


@njit(cache=True, error_model="numpy")
def map_log(a, out):
    """out = log(a), entry by entry, for 1-D a and out (see :func:`map_tanh`)."""
    for i in range(a.shape[0]):
        out[i] = log(a[i])


@njit(cache=True, error_model="numpy")
def map_sin(a, out):
    """out = sin(a), entry by entry, for 1-D a and out (see :func:`map_tanh`)."""
    for i in range(a.shape[0]):
        out[i] = sin(a[i])


@njit(cache=True, error_model="numpy")
def map_tanh(a, out):
    """out = tanh(a), entry by entry, for 1-D a and out. One loop, not a loop nest: LLVM
    keeps the ~25 constants of a vectorizable function (``vecmath``) that do not fit in
    registers on the stack, read as memory operands; in the inner loop of a nest it loaded
    each one again in every iteration instead (on x86-64 an address and a broadcast each,
    ~50 more instructions per vector: W2's chunk on 300 samples took 0.91x the time on one
    thread, its tanh pass ~3.0 ns per value instead of ~3.5). A generated module passes
    contiguous buffers flat and other matrices row by row."""
    for i in range(a.shape[0]):
        out[i] = tanh(a[i])


@njit(cache=True, error_model="numpy")
def col_max(a, wm, w0):
    """wm[i] = the largest entry of column (sample) i of a; w0[i] = 0."""
    for i in range(a.shape[1]):
        wm[i] = a[0, i]
        w0[i] = 0.0
    for j in range(1, a.shape[0]):
        for i in range(a.shape[1]):
            wm[i] = max(wm[i], a[j, i])


@njit(cache=True, error_model="numpy")
def row_lse(a, wm, wz):
    """Row-wise log-sum-exp of a matrix stored (classes, samples): wz[i] for sample i (wm[i]
    its largest score)."""
    col_max(a, wm, wz)
    for j in range(a.shape[0]):
        for i in range(a.shape[1]):
            wz[i] += exp(a[j, i] - wm[i])
    for i in range(a.shape[1]):
        wz[i] = wm[i] + log(wz[i])


@njit(cache=True, error_model="numpy")
def softmax_t(a, out, wm, wz, acc):
    """out (+)= softmax of each sample (column) of a, both stored (classes, samples)."""
    row_lse(a, wm, wz)
    for j in range(a.shape[0]):
        for i in range(a.shape[1]):
            v = exp(a[j, i] - wz[i])
            out[j, i] = out[j, i] + v if acc else v


@njit(cache=True, error_model="numpy")
def softmax_from_lse(a, out, lse, acc):
    """out (+)= exp(a - lse) per sample (column), lse its log-sum-exp from the forward pass."""
    for j in range(a.shape[0]):
        for i in range(a.shape[1]):
            v = exp(a[j, i] - lse[i])
            out[j, i] = out[j, i] + v if acc else v


@njit(cache=True, error_model="numpy")
def log_softmax_t(a, out, wm, wz, acc):
    """out (+)= log-softmax of each sample (column) of a, both stored (classes, samples)."""
    row_lse(a, wm, wz)
    for j in range(a.shape[0]):
        for i in range(a.shape[1]):
            v = a[j, i] - wz[i]
            out[j, i] = out[j, i] + v if acc else v


@njit(cache=True, error_model="numpy")
def sce_t(s, y, wm, wz, wl, count):
    """Sum over samples of sum_j y[j, i] * (logsumexp_j s[:, i] - s[j, i]), both stored
    (classes, samples), divided by ``count`` (the batch size: a mean; more than s's samples
    when s holds one chunk of the batch); leaves each sample's log-sum-exp in wz (for the
    backward softmax)."""
    row_lse(s, wm, wz)
    for i in range(s.shape[1]):
        wl[i] = 0.0
    for j in range(s.shape[0]):
        for i in range(s.shape[1]):
            wl[i] += y[j, i] * (wz[i] - s[j, i])
    return sum1d(wl, s.shape[1]) / count


@njit(cache=True, error_model="numpy")
def sce_probs_t(s, y, wm, wz, wl, count, p):
    """:func:`sce_t` (the same loss, the same log-sum-exp left in wz), and the softmax of each
    sample into p, stored like s: exp(s - max) times the reciprocal of its sum, from the
    exponentials the loss needs anyway, so the backward pass's softmax costs no exp of its
    own (one division per sample, not per entry). The loss of each sample goes to wm, in the
    pass that scales p (wm's maxima are spent by then)."""
    col_max(s, wm, wl)
    for j in range(s.shape[0]):
        for i in range(s.shape[1]):
            v = exp(s[j, i] - wm[i])
            p[j, i] = v
            wl[i] += v
    for i in range(s.shape[1]):
        wz[i] = wm[i] + log(wl[i])
        wl[i] = 1.0 / wl[i]
        wm[i] = 0.0
    for j in range(s.shape[0]):
        for i in range(s.shape[1]):
            p[j, i] = p[j, i] * wl[i]
            wm[i] += y[j, i] * (wz[i] - s[j, i])
    return sum1d(wm, s.shape[1]) / count


@njit(cache=True, error_model="numpy", fastmath=SUMS)
def sum1d(a, m):
    """The sum of a[:m]."""
    t = 0.0
    for k in range(m):
        t += a[k]
    return t


@njit(cache=True, error_model="numpy", fastmath=SUMS)
def mm_dot(a, b, c, m, l, k, flip, acc):
    """c[x, y] (c[y, x] if flip) (+)= sum over z < k of a[x, z] * b[y, z]."""
    for x in range(m):
        for y in range(l):
            t = 0.0
            for z in range(k):
                t += a[x, z] * b[y, z]
            if flip:
                c[y, x] = c[y, x] + t if acc else t
            else:
                c[x, y] = c[x, y] + t if acc else t
