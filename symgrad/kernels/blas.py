"""Matrix products through BLAS, split over two threads by hand, compiled once for every model.

``gemm(a, b, out)`` writes ``out = a @ b`` (2-D, float32 or float64; any of the layouts
generated matrix code passes: C rows, transposed views, slices of rows). A product of at
least ``SPLIT_FROM`` multiply-adds is cut into two halves, each one single-threaded BLAS
call (SciPy's, through Numba's own ``numba_xxgemm`` wrapper, the one ``np.dot`` calls), run
by a ``prange`` over the halves: on two of Numba's threads, or one after the other on one
(``numba.set_num_threads(1)``), with the same results to the bit either way. BLAS's own
threads must be off while it runs (``symgrad.train.arrays.call_train`` limits them to one):
with them, each half would start a team of its own.

Where to cut (:func:`_split_axis`, from the shapes only): each BLAS call packs the parts of
both operands it reads. Halves of the rows of ``out`` both pack all of the right operand,
halves of its columns all of the left one; halves of the inner dimension pack half of each
but leave two partial products, the second added to the first after both are done (an extra
pass over ``out``). The cut that copies the fewest entries wins: W3's forward product (out
128 x 128, an inner dimension of 784) is cut along the 784, its backward one (out 784 x 128,
the inner dimension the batch of 128) along the 784. Either way the numbers do not depend
on the thread count; they are not always those of one call over the whole product (float32
halves cut along rows or columns differed by ~1e-5 on entries of ~10 from one call with
SciPy's OpenBLAS, a review found; float64 matched), and cut along the inner dimension each
entry is the sum of the two halves' dot products, in that order.

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


@njit(cache=True, parallel=True)
def _inner_halves(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, part, one, zero):
    """The column-major product c (m x n) = op(a) op(b) as two BLAS calls over the two halves
    of the inner dimension k (two threads, or one after the other): the first into c, the
    second into ``part`` (m x n, leading dimension m); the caller adds part to c."""
    cut = k // 2 // 16 * 16
    for h in prange(2):
        lo, size = (0, cut) if h == 0 else (cut, k - cut)
        if h == 0:
            _call(ta, tb, m, n, size, a, 0, lda, b, 0, ldb, c, 0, ldc, one, zero)
        else:
            _call(ta, tb, m, n, size, a, lo if ta else lo * lda, lda, b, lo * ldb if tb else lo,
                  ldb, part, 0, m, one, zero)


@njit(cache=True)
def _add_into(rows, part):
    """rows += part (both n x m, rows contiguous): the second half of an inner cut."""
    for j in range(rows.shape[0]):
        for i in range(rows.shape[1]):
            rows[j, i] += part[j, i]


@njit(cache=True)
def _split_axis(m, n, k):
    """How the column-major product (m x n) = (m x k)(k x n) is cut in two: 0 none (under
    SPLIT_FROM multiply-adds, or no side of 32), 1 along m, 2 along n, 3 along k; the cut
    whose BLAS calls copy the fewest entries (see the module docstring): along m the second
    operand (k n) is packed twice, along n the first (m k), along k neither, but the partial
    product is written, read back and added (counted as 2 m n)."""
    if m * n * k < SPLIT_FROM:
        return 0
    best, axis = -1, 0
    for which, size, extra in ((1, m, k * n), (2, n, m * k), (3, k, 2 * m * n)):
        if size >= 32 and (best < 0 or extra < best):
            best, axis = extra, which
    return axis


@njit(cache=True)
def _split(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, rows, one, zero):
    """c = op(a) op(b) (column-major, c's columns the rows of ``rows``, an (n, m) view of c
    with unit inner stride), one BLAS call or two halves (:func:`_split_axis`)."""
    axis = _split_axis(m, n, k)
    if axis == 0:
        _call(ta, tb, m, n, k, a, 0, lda, b, 0, ldb, c, 0, ldc, one, zero)
    elif axis == 3:
        part = np.empty((n, m), rows.dtype)
        _inner_halves(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, part, one, zero)
        _add_into(rows, part)
    else:
        _halves(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, one, zero, axis == 1)


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
        _split(fb == 0, fa == 0, N, M, K, b, ldb, a, lda, out, ldc, out, one, zero)
    else:  # out columns contiguous: out (M x N) = a b
        _split(fa == 1, fb == 1, M, N, K, a, lda, b, ldb, out, ldc, out.T, one, zero)
