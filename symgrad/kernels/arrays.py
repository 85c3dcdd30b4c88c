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
