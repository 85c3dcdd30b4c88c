"""Matrix products through BLAS, split over two threads by hand, compiled once for every model.

``gemm(a, b, out)`` writes ``out = a @ b`` (2-D, float32 or float64; any of the layouts
generated matrix code passes: C rows, transposed views, slices of rows). A product of at
least ``SPLIT_FROM`` multiply-adds is cut into two halves along the longer side of ``out``,
each one single-threaded BLAS call (SciPy's, through Numba's own ``numba_xxgemm`` wrapper,
the one ``np.dot`` calls), run by a ``prange`` over the halves: on two of Numba's threads,
or one after the other on one (``numba.set_num_threads(1)``), with the same results to the
bit either way, and the same as one single-threaded call over the whole product. BLAS's own
threads must be off while it runs (``symgrad.train.arrays.call_train`` limits them to one):
with them, each half would start a team of its own.

Why not BLAS's threads: OpenBLAS splits the same products about as well (W3, 2 threads,
per product: forward 128x784x128 165-180 us by hand against 185-195 us, backward
784x128x128 173-206 against 188-198), but its results differ between one and two threads
(the forward product, by up to 2e-5), so a fit that falls back to one core when the
machine is busy (``all_cores_or_one``) would not give the same numbers; and its threads
spin beside Numba's. An operand with no unit stride is copied first.
"""

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic as _intrinsic
from numba.np.linalg import ensure_blas as _ensure_blas

_ensure_blas()  # SciPy's BLAS, which numba_xxgemm calls, loaded with this module

#: Products from this many multiply-adds are split over two threads (a parallel region
#: costs ~1.3 us; W3's forward product, 12.8 million, takes ~300 us on one thread).
SPLIT_FROM = 1 << 20

#: Numba's C wrapper of BLAS's ?gemm (column-major): kind ('s' or 'd'), transa, transb,
#: m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc.
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.intp))


@_intrinsic
def _at(typingctx, arr, offset):
    """The address of the element ``offset`` entries after the start of ``arr``'s data."""
    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.bitcast(builder.gep(a.data, [args[1]]), _cgutils.voidptr_t)
    return types.voidptr(arr, types.intp), codegen


@njit(cache=True)
def _blas_layout(x):
    """How BLAS reads ``x`` (rows, cols): (1, ld) rows contiguous (column-major, it is x.T
    with leading dimension ld), (0, ld) columns contiguous, (-1, 0) neither."""
    r, c = x.shape
    s0, s1 = x.strides[0] // x.itemsize, x.strides[1] // x.itemsize
    if (s1 == 1 or c == 1) and (r == 1 or s0 >= max(c, 1)):
        return 1, s0 if r > 1 else max(c, 1)
    if (s0 == 1 or r == 1) and (c == 1 or s1 >= max(r, 1)):
        return 0, s1 if c > 1 else max(r, 1)
    return -1, 0


@njit(cache=True)
def _call(ta, tb, m, n, k, a, oa, lda, b, ob, ldb, c, oc, ldc, one, zero):
    """c = op(a) op(b), column-major, from the given offsets (one BLAS call)."""
    kind = ord("s") if a.itemsize == 4 else ord("d")
    _xxgemm(kind, ord("t") if ta else ord("n"), ord("t") if tb else ord("n"), m, n, k,
            _at(one, 0), _at(a, oa), lda, _at(b, ob), ldb, _at(zero, 0), _at(c, oc), ldc)


@njit(cache=True, parallel=True)
def _halves(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, one, zero, along_m):
    """The column-major product c (m x n) = op(a) op(b) in two halves: rows of c (along_m)
    or columns, each a BLAS call of its own (two threads, or one after the other)."""
    for h in prange(2):
        if along_m:
            cut = m // 2 // 16 * 16
            lo, size = (0, cut) if h == 0 else (cut, m - cut)
            _call(ta, tb, size, n, k, a, lo * lda if ta else lo, lda, b, 0, ldb, c, lo, ldc,
                  one, zero)
        else:
            cut = n // 2 // 16 * 16
            lo, size = (0, cut) if h == 0 else (cut, n - cut)
            _call(ta, tb, m, size, k, a, 0, lda, b, lo if tb else lo * ldb, ldb, c,
                  lo * ldc, ldc, one, zero)


@njit(cache=True)
def gemm(a, b, out):
    """out = a @ b (see the module docstring); returns out."""
    M, K = a.shape
    N = b.shape[1]
    if b.shape[0] != K or out.shape[0] != M or out.shape[1] != N:
        raise ValueError("gemm: shapes do not match")
    if M == 0 or N == 0:
        return out
    if K == 0:
        out[:] = 0.0
        return out
    if _blas_layout(out)[0] < 0:  # written through a contiguous copy
        c = np.empty((M, N), out.dtype)
        _product(_usable(a), _usable(b), c)
        out[:] = c
    else:
        _product(_usable(a), _usable(b), out)
    return out


@njit(cache=True)
def _usable(x):
    """x, or a C-contiguous copy if BLAS cannot read it (no unit stride)."""
    if _blas_layout(x)[0] < 0:
        return np.ascontiguousarray(x)
    return x


@njit(cache=True)
def _product(a, b, out):
    """out = a @ b, every operand readable by BLAS, no dimension 0."""
    M, K = a.shape
    N = b.shape[1]
    fa, lda = _blas_layout(a)
    fb, ldb = _blas_layout(b)
    fc, ldc = _blas_layout(out)
    one = np.ones(1, out.dtype)
    zero = np.zeros(1, out.dtype)
    if fc == 1:  # out rows contiguous: BLAS computes out.T (N x M) = b.T a.T
        ta, tb, m, n = fb == 0, fa == 0, N, M
        if m * n * K >= SPLIT_FROM and max(m, n) >= 32:
            _halves(ta, tb, m, n, K, b, ldb, a, lda, out, ldc, one, zero, m >= n)
        else:
            _call(ta, tb, m, n, K, b, 0, ldb, a, 0, lda, out, 0, ldc, one, zero)
    else:  # out columns contiguous: out (M x N) = a b
        ta, tb, m, n = fa == 1, fb == 1, M, N
        if m * n * K >= SPLIT_FROM and max(m, n) >= 32:
            _halves(ta, tb, m, n, K, a, lda, b, ldb, out, ldc, one, zero, m >= n)
        else:
            _call(ta, tb, m, n, K, a, 0, lda, b, 0, ldb, out, 0, ldc, one, zero)
