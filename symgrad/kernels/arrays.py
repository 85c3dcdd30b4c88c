"""The loop kernels of matrix models: sums, products, row-wise softmax and cross-entropy.

Generated matrix modules call these for the whole-array operations of their listing, so the
code that is the same for every model compiles once per machine, not once per model.
Matrices whose rows are the batch are stored transposed, (columns, samples): the row-wise
kernels take that layout, one sample per column. ``acc`` adds into ``out`` instead of
overwriting it (an adjoint that several lines add to). ``fast`` picks symgrad's
vectorizable exp and log (``vecmath``) over libm's, as the model's ``fast_math`` does.
Sums are reassociated (``SUMS``) so that they vectorize.
"""

import math

from numba import njit

from .loops import SUMS
from .vecmath import vcos, vexp, vlog, vsin, vtanh


@njit(cache=True, error_model="numpy")
def exp_of(x, fast):
    """exp(x): symgrad's vectorizable version if ``fast``, else libm's."""
    return vexp(x) if fast else math.exp(x)


@njit(cache=True, error_model="numpy")
def log_of(x, fast):
    """log(x): symgrad's vectorizable version if ``fast``, else libm's."""
    return vlog(x) if fast else math.log(x)


@njit(cache=True, error_model="numpy", fastmath=SUMS)
def sum1d(a, m):
    """The sum of a[:m]."""
    t = 0.0
    for k in range(m):
        t += a[k]
    return t


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


@njit(cache=True, error_model="numpy")
def zero(c):
    """c[:, :] = 0."""
    for x in range(c.shape[0]):
        for y in range(c.shape[1]):
            c[x, y] = 0.0


@njit(cache=True, error_model="numpy")
def matmul(a, b, c, a_t, b_t, c_t, acc):
    """c (+)= A @ B for small products, where A is stored in ``a`` (as its transpose if
    ``a_t``), B in ``b`` (``b_t``) and the product in ``c`` (``c_t``).

    The loops are ordered so that the innermost runs along contiguous memory: down the
    columns of c when it is stored transposed, along its rows otherwise; rows of a against
    rows of b are dot products (:func:`mm_dot`). The same arithmetic in the same order as
    the loops symgrad wrote into each model before, so results are unchanged.
    """
    n_i = c.shape[1] if c_t else c.shape[0]
    n_j = c.shape[0] if c_t else c.shape[1]
    n_k = a.shape[0] if a_t else a.shape[1]
    if not a_t and b_t:
        mm_dot(a, b, c, n_i, n_j, n_k, c_t, acc)
    elif c_t and a_t:  # c[j, i] += a[q, i] * B[q, j]
        if not acc:
            zero(c)
        for j in range(n_j):
            for q in range(n_k):
                x = b[j, q] if b_t else b[q, j]
                for i in range(n_i):
                    c[j, i] += a[q, i] * x
    elif not c_t and not b_t:  # c[i, j] += A[i, q] * b[q, j]
        if not acc:
            zero(c)
        for i in range(n_i):
            for q in range(n_k):
                x = a[q, i] if a_t else a[i, q]
                for j in range(n_j):
                    c[i, j] += x * b[q, j]
    elif c_t:  # a and b stored as they are, c transposed: a dot product per entry
        for i in range(n_i):
            for j in range(n_j):
                x = 0.0
                for q in range(n_k):
                    x += a[i, q] * b[q, j]
                c[j, i] = c[j, i] + x if acc else x
    else:  # a and b stored transposed, c as it is
        for i in range(n_i):
            for j in range(n_j):
                x = 0.0
                for q in range(n_k):
                    x += a[q, i] * b[j, q]
                c[i, j] = c[i, j] + x if acc else x


@njit(cache=True, error_model="numpy")
def row_lse(a, wm, wz, fast):
    """Row-wise log-sum-exp of a matrix stored (classes, samples): wz[i] for sample i
    (wm[i] its largest score)."""
    for i in range(a.shape[1]):
        wm[i] = a[0, i]
        wz[i] = 0.0
    for j in range(1, a.shape[0]):
        for i in range(a.shape[1]):
            wm[i] = max(wm[i], a[j, i])
    for j in range(a.shape[0]):
        for i in range(a.shape[1]):
            wz[i] += exp_of(a[j, i] - wm[i], fast)
    for i in range(a.shape[1]):
        wz[i] = wm[i] + log_of(wz[i], fast)


@njit(cache=True, error_model="numpy")
def softmax_t(a, out, wm, wz, acc, fast):
    """out (+)= softmax of each sample (column) of a, both stored (classes, samples)."""
    row_lse(a, wm, wz, fast)
    softmax_from_lse(a, out, wz, acc, fast)


@njit(cache=True, error_model="numpy")
def softmax_from_lse(a, out, lse, acc, fast):
    """out (+)= exp(a - lse) per sample (column), lse its log-sum-exp from the forward pass."""
    for j in range(a.shape[0]):
        for i in range(a.shape[1]):
            v = exp_of(a[j, i] - lse[i], fast)
            out[j, i] = out[j, i] + v if acc else v


@njit(cache=True, error_model="numpy")
def log_softmax_t(a, out, wm, wz, acc, fast):
    """out (+)= log-softmax of each sample (column) of a, both stored (classes, samples)."""
    row_lse(a, wm, wz, fast)
    for j in range(a.shape[0]):
        for i in range(a.shape[1]):
            v = a[j, i] - wz[i]
            out[j, i] = out[j, i] + v if acc else v


@njit(cache=True, error_model="numpy")
def sce_t(s, y, wm, wz, wl, fast):
    """Mean over samples of sum_j y[j, i] * (logsumexp_j s[:, i] - s[j, i]), both stored
    (classes, samples); leaves the log-sum-exp of each sample in wz."""
    row_lse(s, wm, wz, fast)
    for i in range(s.shape[1]):
        wl[i] = 0.0
    for j in range(s.shape[0]):
        for i in range(s.shape[1]):
            wl[i] += y[j, i] * (wz[i] - s[j, i])
    return sum1d(wl, s.shape[1]) / s.shape[1]


@njit(cache=True, error_model="numpy")
def map_exp(a, out):
    """out = exp(a), element-wise, with symgrad's vectorizable exp."""
    for r in range(a.shape[0]):
        for c in range(a.shape[1]):
            out[r, c] = vexp(a[r, c])


@njit(cache=True, error_model="numpy")
def map_log(a, out):
    """out = log(a), element-wise, with symgrad's vectorizable log."""
    for r in range(a.shape[0]):
        for c in range(a.shape[1]):
            out[r, c] = vlog(a[r, c])


@njit(cache=True, error_model="numpy")
def map_tanh(a, out):
    """out = tanh(a), element-wise, with symgrad's vectorizable tanh."""
    for r in range(a.shape[0]):
        for c in range(a.shape[1]):
            out[r, c] = vtanh(a[r, c])


@njit(cache=True, error_model="numpy")
def map_sin(a, out):
    """out = sin(a), element-wise, with symgrad's vectorizable sin."""
    for r in range(a.shape[0]):
        for c in range(a.shape[1]):
            out[r, c] = vsin(a[r, c])


@njit(cache=True, error_model="numpy")
def map_cos(a, out):
    """out = cos(a), element-wise, with symgrad's vectorizable cos."""
    for r in range(a.shape[0]):
        for c in range(a.shape[1]):
            out[r, c] = vcos(a[r, c])
