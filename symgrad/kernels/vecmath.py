"""Vectorizable float64 exp, log, sin, cos, tanh, log1p and expm1 for Numba loops.

Why: pip's Numba has no Intel SVML, so math.exp, math.sin, ... inside an njit loop stay
scalar libm calls (about 4 ns per element for exp, 15 ns for sin) and keep LLVM from
vectorizing the loop. These versions are plain arithmetic (range reduction, polynomials,
integer bit tricks, selects instead of branches) that LLVM inlines and vectorizes.

Contract: float64 -> float64 over the full domain (NaN, +-inf, +-0, subnormals, overflow,
|x| up to 1.8e308 for sin/cos), under 1 ulp from the exact result. Every function is
compiled once per machine (Numba's disk cache) and marked forceinline, so LLVM inlines it
into the caller's loop when the caller is linked (without it, the larger ones stay calls
and the loop does not vectorize); its instructions keep their own (no fast-math) flags, so
a fastmath caller cannot break the error-free transformations (``fastmath=False`` is set
explicitly: Numba compiles a callee that leaves it unset with its caller's flags, and caches
that code for every later caller). The fused multiply-add comes
from llvm.fma: one instruction on x86-64-v3 and AArch64, a slow (but correct) libm call on
CPUs without FMA.
sin and cos reduce every argument with Payne-Hanek: a branch to math.sin for huge |x|
does not stay rare, LLVM speculates the call for every lane of the vector.

vsin_fast and vcos_fast are the cheap variants (about 4x faster than vsin/vcos, and
quicker to compile): a table-free 3-part Cody-Waite reduction with FMA, valid for
|x| <= SIN_FAST_LIMIT = 2**40 (about 1.1e12), where they are under 1 ulp from the exact
result like vsin/vcos. For |x| > SIN_FAST_LIMIT, +-inf and nan they return nan, on
purpose: nan means "cannot", not sin(x). A caller that may see larger arguments uses
vsin/vcos (full range), or checks its results (or a block's sums) for nan and recomputes
with math.sin/math.cos. sin(-0.0) = -0.0 and sin(x) = x for tiny x as usual. sin and cos
of the same x in one loop share the reduction and both polynomials.
This module imports only math, numpy, numba and llvmlite (Numba's own dependency):
generated modules import it, and saved standalone modules carry a copy of its source.
"""
import math

import numba
import numpy as np
from llvmlite import ir as _ir  # private: a saved module's user helpers take public names


@numba.extending.intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma)."""
    sig = numba.float64(numba.float64, numba.float64, numba.float64)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


def _min_max_intrinsic(name):
    def impl(typingctx, a, b):
        sig = numba.float64(numba.float64, numba.float64)

        def codegen(context, builder, signature, args):
            fnty = _ir.FunctionType(_ir.DoubleType(), [_ir.DoubleType(), _ir.DoubleType()])
            fn = builder.module.declare_intrinsic(f"llvm.{name}.f64", fnty=fnty)
            return builder.call(fn, args)

        return sig, codegen

    impl.__name__ = f"_{name}"
    return numba.extending.intrinsic(impl)


@numba.extending.intrinsic
def _ldexp(typingctx, y, k):
    """y * 2**k rounded once (llvm.ldexp: one vscalefpd per vector with AVX-512). Only where
    _SCALEF: without AVX-512, LLVM makes it a call to libm's ldexp."""
    sig = numba.float64(numba.float64, numba.int64)

    def codegen(context, builder, signature, args):
        fnty = _ir.FunctionType(_ir.DoubleType(), [_ir.DoubleType(), _ir.IntType(64)])
        fn = builder.module.declare_intrinsic("llvm.ldexp.f64.i64", fnty=fnty)
        return builder.call(fn, args)

    return sig, codegen


def _target_has_avx512():
    """Whether Numba compiles for a CPU with AVX-512F (its NUMBA_CPU_FEATURES, else the host's)."""
    features = numba.core.config.CPU_FEATURES
    if features is None:
        features = numba.core.codegen.get_host_cpu_features()
    return "+avx512f" in features.split(",")


#: With AVX-512, vexp_fast scales by 2**k with llvm.ldexp (one vscalefpd: the same double,
#: rounded once) instead of integer arithmetic on the exponent bits and a multiplication,
#: and lets a nan argument run through its arithmetic (one compare and select fewer).
_SCALEF = _target_has_avx512()


#: min(a, b) and max(a, b) as llvm.minnum / llvm.maxnum: a NaN argument gives the other one.
#: With a constant b, one vminpd / vmaxpd on x86-64 (fminnm / fmaxnm on AArch64), where the
#: same clamp written as two selects became two compares and two blends.
_minnum = _min_max_intrinsic("minnum")
_maxnum = _min_max_intrinsic("maxnum")
#: The same as llvm.minimum / llvm.maximum: a NaN argument gives NaN. With a constant b (not
#: +-0.0), also one vminpd / vmaxpd on x86-64 with AVX-512 (b first: x86's min returns its
#: second operand when one is NaN).
_minimum = _min_max_intrinsic("minimum")
_maximum = _min_max_intrinsic("maximum")


_jit = numba.njit(error_model="numpy", cache=True, forceinline=True, fastmath=False)

_INF = math.inf
_SHIFT = 6755399441055744.0  # 1.5 * 2**52: x + _SHIFT - _SHIFT rounds x to an integer
_SHIFT_BITS = 0x4338000000000000
_SIGN = -0x8000000000000000  # the sign bit, as int64
_LN2_HI = 0.6931471805599453
_LN2_LO = 2.3190468138462996e-17
_INV_LN2 = 1.4426950408889634
_PIO2_HI = 1.5707963267948966
_PIO2_LO = 6.123233995736766e-17
_PIO2_LO2 = -1.4973849048591698e-33  # pi/2 - _PIO2_HI - _PIO2_LO
_INV_PIO2 = 0.6366197723675814

# exp(r) = 1 + r + r*r/2 + r**3 * Q(r) on |r| <= ln2/2 (minimax, relative error 5e-17)
_E0 = 0.16666666666666669
_E1 = 0.041666666666666664
_E2 = 0.008333333333330055
_E3 = 0.0013888888888886548
_E4 = 0.00019841269863088255
_E5 = 2.4801587317169235e-05
_E6 = 2.7557268406190795e-06
_E7 = 2.7557282931125736e-07
_E8 = 2.51004110820149e-08
_E9 = 2.091125490208877e-09

# vexp_fast's Q, one degree lower: exp(r) = 1 + r + r*r/2 + r**3 * Q(r) on |r| <= ln2/2
# (Remez minimax, relative error 2.4e-17)
_EF0 = 0.16666666666661958
_EF1 = 0.04166666666661997
_EF2 = 0.008333333336528082
_EF3 = 0.0013888888920512454
_EF4 = 0.00019841262672948745
_EF5 = 2.48015163461156e-05
_EF6 = 2.7563857313781282e-06
_EF7 = 2.7622226471754874e-07
_EF8 = 2.2976449071956866e-08

# tanh: below _TANH_SMALL, tanh(x) = x + x*w*P(w) with w = x*x (Remez minimax on
# |x| <= 0.35: |tanh(x)/x - 1 - w*P(w)| < 1.2e-17); above it 1 - 2/(exp(2|x|) + 1), with
# exp(r) = 1 + r + r*r*Q(r) on |r| <= ln2/2 (Remez minimax with the first two terms exact:
# relative error 2.7e-17)
_TANH_SMALL = 0.35
_TP0 = -0.33333333333332527
_TP1 = 0.13333333333119243
_TP2 = -0.05396825377342384
_TP3 = 0.02186947995078362
_TP4 = -0.008863025760768965
_TP5 = 0.0035891288548065858
_TP6 = -0.0014307465089824893
_TP7 = 0.00047474726147895874
_TQ2 = 0.5000000000000001
_TQ3 = 0.16666666666665997
_TQ4 = 0.041666666666626044
_TQ5 = 0.008333333333899845
_TQ6 = 0.0013888888916716521
_TQ7 = 0.00019841268389465908
_TQ8 = 2.4801520827272588e-05
_TQ9 = 2.7558729466247817e-06
_TQ10 = 2.7620749123315065e-07
_TQ11 = 2.460883836892636e-08

# fdlibm e_log.c: log(1+f) = f - f*f/2 + s*(f*f/2 + R(s*s)), s = f/(2+f)
_FD_LN2_HI = 6.93147180369123816490e-01  # 32 significant bits: k * _FD_LN2_HI is exact
_FD_LN2_LO = 1.90821492927058770002e-10
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01

# fdlibm k_sin.c / k_cos.c on |r| <= pi/4
_S1 = -1.66666666666666324348e-01
_S2 = 8.33333333332248946124e-03
_S3 = -1.98412698298579493134e-04
_S4 = 2.75573137070700676789e-06
_S5 = -2.50507602534068634195e-08
_S6 = 1.58969099521155010221e-10
_C1 = 4.16666666666666019037e-02
_C2 = -1.38888888888741095749e-03
_C3 = 2.48015872894767294178e-05
_C4 = -2.75573143513906633035e-07
_C5 = 2.08757232129817482790e-09
_C6 = -1.13596475577881948265e-11


def _two_over_pi_table():
    """Per binary exponent E of |x| (row max(E - 52, 0)): the bits of 2/pi that matter
    for x * 2/pi mod 4, as four 53-bit chunks; rows for E > 600 are scaled by 2**600."""
    guard = 1440

    def atan_inv(n):
        total, term, k, sign = 0, (1 << guard) // n, 1, 1
        while term:
            total += sign * (term // k)
            term //= n * n
            k += 2
            sign = -sign
        return total

    pi = 16 * atan_inv(5) - 4 * atan_inv(239)  # pi * 2**guard
    two_over_pi = (1 << (2 * guard + 1)) // pi  # bit guard + w has weight 2**w
    rows = np.empty((1024 - 52, 4))
    for e in range(52, 1024):
        top = min(53 - e, -1)
        scale = 600 if e > 600 else 0
        for j in range(4):
            low = top - 53 * j - 52
            chunk = (two_over_pi >> (guard + low)) & ((1 << 53) - 1)
            rows[e - 52, j] = math.ldexp(float(chunk), low + scale)
    return rows


_TWO_OVER_PI = _two_over_pi_table()


@_jit
def _bits(x):
    return np.float64(x).view(np.int64)


@_jit
def _float(i):
    return np.int64(i).view(np.float64)


@_jit
def _pow2(k):
    """2**k for integer -1022 <= k <= 1023."""
    return _float((k + 1023) << 52)


@_jit
def _exp_q(r):
    """Q(r) of exp(r) = 1 + r + r*r/2 + r**3 * Q(r), by Horner."""
    q = _fma(r, _E9, _E8)
    q = _fma(r, q, _E7)
    q = _fma(r, q, _E6)
    q = _fma(r, q, _E5)
    q = _fma(r, q, _E4)
    q = _fma(r, q, _E3)
    q = _fma(r, q, _E2)
    q = _fma(r, q, _E1)
    return _fma(r, q, _E0)


@_jit
def _exp_q_split(r, r2):
    """vexp_fast's Q(r), one degree lower than _exp_q (one multiply-add fewer), as its even
    and odd halves, each a Horner in r2 = r*r: chains of 4 and 3 and one more where Horner
    has one chain of 8. A loop over samples waits on that chain (W4's block: 2 % faster)."""
    even = _fma(r2, _fma(r2, _fma(r2, _fma(r2, _EF8, _EF6), _EF4), _EF2), _EF0)
    odd = _fma(r2, _fma(r2, _fma(r2, _EF7, _EF5), _EF3), _EF1)
    return _fma(r, odd, even)


@_jit
def _exp_reduce(x):
    """For finite -746 <= x <= 710: k and exp(x) = 2**k * (1 + s + t), |t| << |s|."""
    z = x * _INV_LN2 + _SHIFT
    kf = z - _SHIFT
    k = _bits(z) - _SHIFT_BITS
    r = _fma(-kf, _LN2_HI, x)  # exact
    rl = -kf * _LN2_LO
    qh = r * r
    ql = _fma(r, r, -qh)
    hq = 0.5 * qh
    s = r + hq
    se = (r - s) + hq
    q = _exp_q(r)
    t = se + _fma(0.5, ql, r * qh * q)
    return k, s, _fma(rl, (1.0 + s) + t, t)


@_jit
def _exp_scale(y, k):
    """y * 2**k for -1076 <= k <= 1024, rounding once (overflow and subnormals too)."""
    k1 = k >> 1
    return y * _pow2(k1) * _pow2(k - k1)


@_jit
def _exp_scale_bits(y, k):
    """y * 2**k for 0.7 < y < 1.42 and -1076 <= k <= 1024, as _exp_scale does it (the same
    double: one rounding), with one multiplication: y * 2**k1, k1 = k clamped to
    [-1021, 1023], is exact (a normal number, made by adding k1 to y's exponent), then
    times 2**(k - k1), -55 <= k - k1 <= 1. Not for nan y (the integer add can make a
    number of it)."""
    k1 = max(min(k, 1023), -1021)
    return _float(_bits(y) + (k1 << 52)) * _pow2(k - k1)


@_jit
def _exp_scale_once(y, k):
    """_exp_scale_bits(y, k); with AVX-512 one vscalefpd (the same double)."""
    if _SCALEF:
        return _ldexp(y, k)
    return _exp_scale_bits(y, k)


@_jit
def _expm1_dd(k, s, t):
    """2**k * (1 + s + t) - 1 as a double-double, for -80 <= k <= 1023."""
    tk = _pow2(k)
    big = tk if k >= 0 else -1.0
    small = -1.0 if k >= 0 else tk
    a = big + small
    ae = (big - a) + small
    b = tk * s
    u = a + b
    bv = u - a
    ue = (a - (u - bv)) + (b - bv)
    lo = ue + (ae + tk * t)
    hi = u + lo
    return hi, (u - hi) + lo


@_jit
def vexp(x):
    """exp(x); overflows to inf above 709.78, underflows gradually to 0 below -708.4."""
    xc = x if x < 710.0 else 710.0
    xc = xc if xc > -746.0 else -746.0
    k, s, t = _exp_reduce(xc)
    hi = 1.0 + s
    lo = ((1.0 - hi) + s) + t
    y = _exp_scale(hi + lo, k)
    return y if x == x else x


@_jit
def vexp_fast(x):
    """exp(x) like vexp (same domain, same inf, 0 and nan; subnormal results within 1 ulp
    of vexp's), under 0.85 ulp where vexp is under 0.53 (measured: 0.81 ulp, 120M random
    arguments against long double, the worst re-checked with mpmath; 0.656 with vexp's
    polynomial): the reduced argument is one double plus its rounding error and the
    polynomial one degree lower, plain multiply-adds (even and odd halves), without vexp's
    double-double terms. About 30 % fewer instructions, which is what a loop over samples
    is bound by (W4's block: 13 % faster, 1-2 % more for the lower degree); generated
    block kernels use it for exp."""
    if _SCALEF:  # nan stays nan, through to vscalefpd's result
        xc = _maximum(_minimum(x, 710.0), -746.0)
    else:  # nan -> 710, the result is x then
        xc = _maxnum(_minnum(x, 710.0), -746.0)
    z = _fma(xc, _INV_LN2, _SHIFT)
    kf = z - _SHIFT
    k = _bits(z) - _SHIFT_BITS
    rh = _fma(-kf, _LN2_HI, xc)  # exact
    r = _fma(-kf, _LN2_LO, rh)
    rr = _fma(-kf, _LN2_LO, rh - r)  # r + rr = rh - kf * _LN2_LO (rh - r is exact)
    r2 = r * r
    q = _exp_q_split(r, r2)
    t = _fma(r2, _fma(r, q, 0.5), rr)  # exp(r + rr) - 1 - r, but for rr * (exp(r) - 1)
    hi = 1.0 + r
    lo = ((1.0 - hi) + r) + t
    y = _exp_scale_once(hi + lo, k)
    return y if _SCALEF or x == x else x


@_jit
def vexpm1(x):
    """exp(x) - 1, accurate near 0 (expm1(-0.0) = -0.0)."""
    xc = x if x < 710.0 else 710.0
    xc = xc if xc > -50.0 else -50.0
    k, s, t = _exp_reduce(xc)
    hi, lo = _expm1_dd(k if k < 60 else 60, s, t)
    h1 = 1.0 + s
    l1 = ((1.0 - h1) + s) + t
    big = _exp_scale(h1 + l1, k)
    y = big if k > 56 else hi + lo
    y = y if x != 0.0 else x
    return y if x == x else x


@_jit
def vtanh(x):
    """tanh(x), odd: an odd polynomial below |x| = 0.35 (subnormals and +-0.0 come back
    unchanged), above it 1 - 2/(exp(2|x|) + 1) with exp(2|x|) + 1 and the quotient carried
    to double-double precision (one division); exactly +-1 from |x| = 19.06 on. Max error
    0.74 ulp: 0.73 over 64e6 random arguments against long double and mpmath, 0.7433 at
    x = 0.520029420142674 (found by a review; the same before and after Estrin), worst just
    below tanh(x) = 0.5, where the result's ulp halves. Both polynomials are evaluated with
    their first term by Horner and the rest in Estrin's scheme (independent multiply-adds
    on powers of w or r): a loop over samples waits on the chain of dependent multiply-adds,
    and Horner's chains (8 and 10 long) made the pass latency-bound with AVX2's 4 lanes (W2's
    epoch, one thread: ~10 % faster; over 40e6 random arguments 0.724 ulp before and after; all
    of Estrin's rounding errors are scaled by the first term's factor w or r)."""
    a = abs(x)
    w = a * a
    w2 = w * w
    p = _fma(w2, _fma(w2, _fma(w, _TP7, _TP6), _fma(w, _TP5, _TP4)), _fma(w, _TP3, _TP2))
    p = _fma(w, _fma(w, p, _TP1), _TP0)
    small = _fma(a * w, p, a)
    a2 = 2.0 * (a if a < 20.0 else 20.0)  # inf, nan -> 40 (nan takes the small branch)
    z = _fma(a2, _INV_LN2, _SHIFT)
    k = _bits(z) - _SHIFT_BITS  # 0 <= k <= 58
    kf = z - _SHIFT
    r = _fma(-kf, _LN2_HI, a2)  # exact: exp(2a) = 2**k * exp(r + rl)
    rl = -kf * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    q = _fma(r4, _fma(r2, _fma(r2, _TQ11, _fma(r, _TQ10, _TQ9)), _fma(r, _TQ8, _TQ7)),
             _fma(r2, _fma(r, _TQ6, _TQ5), _fma(r, _TQ4, _TQ3)))
    q = _fma(r, q, _TQ2)
    t = r2 * q  # exp(r) = 1 + r + t
    m = _pow2(-k)
    c = 1.0 + m  # exact
    u = c + r  # (exp(2a) + 1) * 2**-k = c + r + t + rl = dh + dl (Fast2Sums)
    dh = u + t
    dl = ((u - dh) + t) + (((c - u) + r) + rl)
    inv = 1.0 / dh
    num = m + m
    q = num * inv  # 2 / (exp(2a) + 1) = q + corr
    corr = _fma(-q, dl, _fma(-q, dh, num)) * inv
    h = 1.0 - q
    big = h + (((1.0 - h) - q) - corr)
    y = big if a >= _TANH_SMALL else small
    return math.copysign(y, x)


@_jit
def _log_split(x):
    """For finite x > 0 (subnormals too): (k as float, f) with x = 2**k * (1 + f),
    sqrt(2)/2 <= 1 + f < sqrt(2), and the integer k."""
    sub = x < 2.2250738585072014e-308
    xs = x * 18014398509481984.0 if sub else x
    ix = _bits(xs)
    e = ix >> 52
    m = _float((ix & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > 1.4142135623730951
    m = 0.5 * m if big else m
    ik = e - 1023 - (54 if sub else 0) + (1 if big else 0)
    kf = _float(e | 0x4330000000000000) - 4503599627370496.0
    kf = kf - (1077.0 if sub else 1023.0) + (1.0 if big else 0.0)
    return kf, m - 1.0, ik


@_jit
def _log_kernel(kf, f, c):
    """k*log(2) + log(1 + f + c) for |c| << |f| or f = 0 (fdlibm e_log.c, < 1 ulp)."""
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * _fma(w, _fma(w, _LG6, _LG4), _LG2)
    t2 = z * _fma(w, _fma(w, _fma(w, _LG7, _LG5), _LG3), _LG1)
    r = t2 + t1
    om = 1.0 - s
    corr = c * om * om * (1.0 + z)  # c / (1 + f)
    return kf * _FD_LN2_HI - ((hfsq - (s * (hfsq + r) + (kf * _FD_LN2_LO + corr))) - f)


@_jit
def vlog(x):
    """Natural log: log(0) = -inf, log(x < 0) = nan, log(inf) = inf."""
    kf, f, _ = _log_split(x)
    y = _log_kernel(kf, f, 0.0)
    special = -_INF if x == 0.0 else (x if x == _INF else math.nan)
    return y if (x > 0.0) & (x < _INF) else special


@_jit
def vlog1p(x):
    """log(1 + x), accurate near 0: log1p(-1) = -inf, log1p(x < -1) = nan."""
    u = 1.0 + x
    bv = u - 1.0
    c = (1.0 - (u - bv)) + (x - bv)  # u + c == 1 + x exactly
    kf, f, ik = _log_split(u)
    c = c * _pow2(-ik if ik < 1022 else -1022) if ik != 0 else 0.0
    y = _log_kernel(kf, f if ik != 0 else x, c)  # ik == 0: 1 + f == u, f + c == x
    y = y if abs(x) > 5.6e-17 else x
    special = -_INF if x == -1.0 else (x if x == _INF else math.nan)
    return y if (x > -1.0) & (x < _INF) else special


@_jit
def _trig_reduce(ax):
    """For finite ax >= 2**-27: n mod 4 and r (= rh + rl) with ax = n*pi/2 + r, |r| <~ pi/4.
    Payne-Hanek with exact products (FMA) and error-free sums; no branches."""
    e = _bits(ax) >> 52
    row = e - 1075
    row = row if row > 0 else 0
    xs = ax * 2.409919865102884e-181 if e > 1623 else ax  # 2**-600, see _two_over_pi_table
    t0 = _TWO_OVER_PI[row, 0]
    t1 = _TWO_OVER_PI[row, 1]
    t2 = _TWO_OVER_PI[row, 2]
    t3 = _TWO_OVER_PI[row, 3]
    p0 = xs * t0
    e0 = _fma(xs, t0, -p0)
    p1 = xs * t1
    e1 = _fma(xs, t1, -p1)
    p2 = xs * t2
    e2 = _fma(xs, t2, -p2)
    p3 = xs * t3
    f0 = p0 - 4.0 * ((0.25 * p0 + _SHIFT) - _SHIFT)  # exact, = p0 mod 4
    g = f0 + e0  # f0 is a multiple of ulp(p0) > 2|e0|: Fast2Sum
    ge = e0 - (g - f0)
    h = g + p1
    bv = h - g
    he = (g - (h - bv)) + (p1 - bv)
    z = h + _SHIFT
    n = _bits(z) & 3
    h = h - (z - _SHIFT)  # exact, |h| <= 1/2, a multiple of ulp(h) > 2|he|
    a = h + he
    lo = he - (a - h)
    b = a + ge
    bv = b - a
    lo += (a - (b - bv)) + (ge - bv)
    a = b + e1
    bv = a - b
    lo += (b - (a - bv)) + (e1 - bv)
    b = a + p2
    bv = b - a
    lo += (a - (b - bv)) + (p2 - bv)
    lo += e2 + p3
    rh = b * _PIO2_HI
    rl = _fma(b, _PIO2_HI, -rh) + _fma(b, _PIO2_LO, lo * _PIO2_HI)
    r = rh + rl
    return n, r, (rh - r) + rl


@_jit
def _ksin(x, y):
    """sin(x + y) for |x| <= pi/4, |y| << |x| (fdlibm k_sin.c)."""
    z = x * x
    w = z * z
    r = _fma(z, _fma(z, _S4, _S3), _S2) + z * w * _fma(z, _S6, _S5)
    v = z * x
    return x - _fma(-v, _S1, _fma(z, _fma(-v, r, 0.5 * y), -y))


@_jit
def _kcos(x, y):
    """cos(x + y) for |x| <= pi/4, |y| << |x| (fdlibm k_cos.c)."""
    z = x * x
    w = z * z
    r = z * _fma(z, _fma(z, _C3, _C2), _C1) + w * w * _fma(z, _fma(z, _C6, _C5), _C4)
    hz = 0.5 * z
    w = 1.0 - hz
    return w + (((1.0 - w) - hz) + _fma(z, r, -x * y))


@_jit
def vsin(x):
    """sin(x) for all x; sin(+-inf) = nan."""
    ax = abs(x)
    n, rh, rl = _trig_reduce(ax)
    s = _ksin(rh, rl)
    c = _kcos(rh, rl)
    y = s if (n & 1) == 0 else c
    y = -y if (n & 2) != 0 else y
    y = math.copysign(1.0, x) * y
    y = y if ax > 7.450580596923828e-09 else x
    return y if ax < _INF else x - x


@_jit
def vcos(x):
    """cos(x) for all x; cos(+-inf) = nan."""
    ax = abs(x)
    n, rh, rl = _trig_reduce(ax)
    s = _ksin(rh, rl)
    c = _kcos(rh, rl)
    y = c if (n & 1) == 0 else s
    y = -y if ((n + 1) & 2) != 0 else y
    y = y if ax > 7.450580596923828e-09 else 1.0
    return y if ax < _INF else x - x




# vsin_fast / vcos_fast: see the module docstring. Up to 2**40 the 3-part Cody-Waite
# reduction leaves a relative error below 2**-59 in r even for the x closest to a multiple
# of pi/2 (|r| >= 2**-60.5 there); above ~2**47 the quotient from the rounded 2/pi can be
# off by one and |r| outgrows the pi/4 the polynomials are fitted on.
SIN_FAST_LIMIT = 2.0**40


@_jit
def _trig_reduce_fast(x):
    """For finite |x| <= SIN_FAST_LIMIT: z, whose low bits hold n = rint(x * 2/pi), and
    s + lo = x - n*pi/2 with |s + lo| <~ pi/4 and |lo| <= ulp(s)/2 + 2**-67.
    Cody-Waite with pi/2 split in 3 doubles and FMA; no branches, no tables."""
    z = _fma(x, _INV_PIO2, _SHIFT)
    kf = z - _SHIFT
    r1 = _fma(-kf, _PIO2_HI, x)  # exact: a multiple of 2**-52 below 2 (Sterbenz if |x| < 1)
    th = kf * _PIO2_LO
    tl = _fma(kf, _PIO2_LO, -th)  # th + tl = kf * _PIO2_LO exactly
    s = r1 - th
    se = (r1 - s) - th  # Fast2Sum, exact: r1 is a multiple of ulp(th), or |r1| > |th|
    return z, s, se - _fma(kf, _PIO2_LO2, tl)


@_jit
def _ksincos_fast(x, y):
    """(sin(x + y), cos(x + y)) for |x| <~ pi/4 and |y| << |x|: the k_sin.c and k_cos.c
    polynomials, each as head - (-tail). Callers pick per lane among the results, not
    among the arguments: vsin_fast and vcos_fast of the same x then share all of it (LLVM
    CSE) but two selects, where picking the arguments left four selects and a
    multiply-add each."""
    z = x * x
    hz = 0.5 * z
    w = 1.0 - hz
    ps = _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _S6, _S5), _S4), _S3), _S2), _S1)
    pc = _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _C6, _C5), _C4), _C3), _C2), _C1)
    # sin = x + (x*z*ps + y*(1 - z/2)), cos = w + ((1 - w - z/2) + z*z*pc - x*y);
    # head - (-tail) rather than head + tail keeps sin(-0.0) == -0.0
    sin = x - _fma(z * x, -ps, _fma(hz, y, -y))
    cos = w - _fma(z * z, -pc, _fma(x, y, hz - (1.0 - w)))
    return sin, cos


@_jit
def vsin_fast(x):
    """sin(x) for |x| <= SIN_FAST_LIMIT; nan beyond it, for +-inf and for nan."""
    z, rh, rl = _trig_reduce_fast(x)
    n = _bits(z)
    s, c = _ksincos_fast(rh, rl)
    y = c if (n & 1) != 0 else s
    y = _float(_bits(y) ^ ((n << 62) & _SIGN))  # -y if n & 2
    return y if abs(x) <= SIN_FAST_LIMIT else math.nan


@_jit
def vcos_fast(x):
    """cos(x) for |x| <= SIN_FAST_LIMIT; nan beyond it, for +-inf and for nan."""
    z, rh, rl = _trig_reduce_fast(x)
    n = _bits(z)
    s, c = _ksincos_fast(rh, rl)
    y = s if (n & 1) != 0 else c
    y = _float(_bits(y) ^ (((n + 1) << 62) & _SIGN))  # -y if (n + 1) & 2
    return y if abs(x) <= SIN_FAST_LIMIT else math.nan
