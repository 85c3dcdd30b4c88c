"""Evaluating (matrix) expressions with NumPy, by interpreting their lowered form.

No code is generated or ``eval``'d: each operation maps to a NumPy function. Used for
predictions, metrics and the matrix trace, where one NumPy pass is fast enough, and as a
second implementation beside the compiled loops.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Mapping

import numpy as np
import sympy as sp
from sympy.functions.elementary.piecewise import ExprCondPair

from ..errors import ExpressionError, InputError
from .arrays import Lowered, lower

__all__ = ["byproduct", "evaluate_numpy", "evaluate_lowered", "lower_any", "numpy_function",
           "resolved", "stored"]


def evaluate_numpy(expr: sp.Basic | Lowered, env: Mapping) -> np.ndarray:
    """Evaluate a (matrix) expression with NumPy; ``env`` maps its matrices to arrays.

    ``expr`` may be given lowered already (``lower_any(expr)``), to evaluate it repeatedly.

    An interpreter over the lowered expression (no code is generated or eval'd): used for
    predictions and metrics, where one NumPy pass per call is fast enough.
    """
    lowered = expr if isinstance(expr, Lowered) else lower_any(expr)
    values = {lowered.matrices[m]: np.asarray(v, dtype=float) for m, v in env.items()
              if m in lowered.matrices}
    missing = [m.name for m, s in lowered.matrices.items() if s not in values]
    if missing:
        raise InputError(f"evaluating needs values for {', '.join(missing)}.")
    if lowered.batch is not None:
        for m, s in lowered.matrices.items():
            if not isinstance(m.shape[0], (int, sp.Integer)):
                values.setdefault(lowered.batch, float(values[s].shape[0]))
    return evaluate_lowered(lowered.expr, values)


def evaluate_lowered(expr: sp.Basic, values: Mapping) -> np.ndarray | float:
    """A lowered expression's value; ``values`` maps its symbols to arrays or numbers."""
    memo: dict = {}

    def ev(e):
        if e in memo:
            return memo[e]
        r = _eval_node(e, ev, values)
        memo[e] = r
        return r

    return ev(expr)


def numpy_function(expr: sp.Basic, slots: Mapping[sp.Basic, int], keep: int | None = None):
    """``expr`` (lowered) as a Python function of a list of values (``slots`` maps each of
    its symbols to a position), to evaluate it many times: the expression is walked once
    into nested closures, one NumPy call per node (a program's assignments are flat, one
    primitive per line, so nothing is computed twice). An argument that is a symbol or a
    number is read inside its parent's closure, not by a closure of its own; ``n``-ary sums
    and products are folded left to right, as ``sum`` and ``math.prod`` add and multiply.

    ``slots`` may also map a sub-expression that is not a symbol (``softmax(s8)``) to the
    position where a runner keeps its value: it is read there, not computed again. With
    ``keep``, ``expr``'s own node must have a :func:`byproduct`; the function then also
    stores that value at position ``keep`` (``softmax_cross_entropy(s, y)`` leaves
    ``softmax(s)``, which the backward pass reads)."""
    ops = _ops()

    def leaf(e):
        """("slot", k), ("value", v), or None for a node that needs a closure."""
        if e in slots:
            return ("slot", slots[e])
        if isinstance(e, sp.Symbol):
            raise InputError(f"evaluating needs a value for {e.name}.")
        if e.is_Number or isinstance(e, sp.NumberSymbol):
            return ("value", float(e))
        if e is sp.true or e is sp.false:
            return ("value", bool(e))
        return None

    def arg(e):
        """How ``e`` is read: ("slot", k), ("value", v) or a closure."""
        return leaf(e) or build(e)

    def build(e):
        found = leaf(e)
        if found is not None:
            kind, v = found
            return (lambda env: env[v]) if kind == "slot" else (lambda env: v)
        if isinstance(e, sp.Mul):  # folded left to right, one pair at a time
            run = arg(e.args[0])
            for a in e.args[1:]:
                run = _call(operator.mul, [run, arg(a)])
            return run
        if isinstance(e, sp.Add):  # the same, a term -x subtracted: acc + -1.0*x is acc - x
            terms = list(e.args)
            if _negated(terms[0]) is not None and len(terms) > 1 and _negated(terms[1]) is None:
                terms[:2] = terms[1], terms[0]  # -x + y is y - x: the same bits
            run = arg(terms[0])
            for a in terms[1:]:
                x = _negated(a)
                run = (_call(operator.sub, [run, arg(x)]) if x is not None else
                       _call(operator.add, [run, arg(a)]))
            return run
        fn = ops.get(type(e))
        if fn is None:
            _unsupported(e)
        return _call(fn, [arg(a) for a in e.args])

    if keep is None:
        return build(expr)
    both = _with_byproduct()[type(expr)]
    getters = [_getter(arg(a)) for a in expr.args]

    def run(env):
        value, env[keep] = both(*[g(env) for g in getters])
        return value

    return run


def _negated(e: sp.Basic) -> sp.Basic | None:
    """``x`` if ``e`` is ``-x`` (``Mul(-1, x)``), else None."""
    if isinstance(e, sp.Mul) and e.args[0] is sp.S.NegativeOne:
        rest = e.args[1:]
        return rest[0] if len(rest) == 1 else sp.Mul(*rest, evaluate=False)
    return None


def _getter(a):
    """A closure of ``env`` for what :func:`_call` takes as one argument."""
    if callable(a):
        return a
    kind, v = a
    return (lambda env: env[v]) if kind == "slot" else (lambda env: v)


def _call(fn, got: list):
    """A closure ``env -> fn(*args)``; each of ``got`` is a closure of ``env`` or a value
    read inline: ("slot", k) (``env[k]``) or ("value", v)."""
    if len(got) == 1:
        (a,) = got
        if callable(a):
            return lambda env: fn(a(env))
        kind, v = a
        return (lambda env: fn(env[v])) if kind == "slot" else (lambda env: fn(v))
    if len(got) == 2:
        a, b = got
        ka, va = ("fn", a) if callable(a) else a
        kb, vb = ("fn", b) if callable(b) else b
        return _BINARY[ka, kb](fn, va, vb)
    getters = [_getter(a) for a in got]
    return lambda env: fn(*[g(env) for g in getters])


#: Closures of a two-argument call, by how each argument is read: a closure ("fn"), a
#: position in the values ("slot") or a number ("value").
_BINARY = {
    ("slot", "slot"): lambda f, a, b: lambda env: f(env[a], env[b]),
    ("slot", "value"): lambda f, a, b: lambda env: f(env[a], b),
    ("value", "slot"): lambda f, a, b: lambda env: f(a, env[b]),
    ("fn", "slot"): lambda f, a, b: lambda env: f(a(env), env[b]),
    ("slot", "fn"): lambda f, a, b: lambda env: f(env[a], b(env)),
    ("fn", "value"): lambda f, a, b: lambda env: f(a(env), b),
    ("value", "fn"): lambda f, a, b: lambda env: f(a, b(env)),
    ("fn", "fn"): lambda f, a, b: lambda env: f(a(env), b(env)),
    ("value", "value"): lambda f, a, b: lambda env: f(a, b),
}


def byproduct(e: sp.Basic) -> sp.Basic | None:
    """The node whose value evaluating ``e`` computes on the way, or None:
    ``softmax_cross_entropy(s, y)`` computes ``softmax(s)`` (its gradient's factor)."""
    from . import arrays as A

    if type(e) is A.softmax_cross_entropy:
        return A.softmax(e.args[0])
    return None


def resolved(shape: tuple, rows) -> tuple[int, ...]:
    """A program name's shape in numbers: a dimension that is not a number is the batch
    size, ``rows`` (a model has one batch-size symbol)."""
    return tuple(int(d) if isinstance(d, int) or d.is_Integer else int(rows) for d in shape)


def stored(value, dims: tuple[int, ...], dtype=None):
    """``value`` as a program's name of shape ``dims`` holds it: a smaller value (a scalar
    adjoint below a sum, a bias row's tangent) broadcast, as the compiled loop fills the
    name's preallocated buffer (in its ``dtype``); a value of that shape as it is."""
    if not dims or np.shape(value) == dims:
        return value
    return np.broadcast_to(np.asarray(value, dtype=dtype), dims)


def lower_any(expr):
    """``lower`` for an expression that may be matrix-valued (a prediction)."""
    from sympy.matrices.expressions import MatrixExpr

    from .arrays import total

    if not isinstance(expr, MatrixExpr):
        return lower(expr)
    probe = lower(total(expr))
    probe.expr = probe.expr.args[0]
    return probe


#: Row reductions over at most this many columns run column by column (a reduction along a
#: short last axis costs NumPy a loop per row: 17 us for the maxima of a (300, 2) matrix
#: against 1.4 us for one np.maximum of its columns); up to 7 columns NumPy's own sum adds
#: them left to right too, so the sums are the same bits.
FEW_COLUMNS = 7


def _sum(a):
    """``np.sum(a)`` without its Python-level dispatch (the same reduction)."""
    return np.add.reduce(a, axis=None)


def _rowmax(a):
    if np.ndim(a) == 2 and 1 < a.shape[1] <= FEW_COLUMNS:
        out = np.maximum(a[:, 0:1], a[:, 1:2])
        for j in range(2, a.shape[1]):
            np.maximum(out, a[:, j:j + 1], out=out)
        return out
    return a.max(axis=1, keepdims=True)


def _rowsum(a):
    if np.ndim(a) == 2 and 1 < a.shape[1] <= FEW_COLUMNS:
        out = a[:, 0:1] + a[:, 1:2]
        for j in range(2, a.shape[1]):
            out += a[:, j:j + 1]
        out += 0.0  # a sum from 0.0, as the compiled loops' (a row of -0.0 sums to +0.0)
        return out
    return a.sum(axis=1, keepdims=True)


def _softmax(a):
    z = np.exp(a - _rowmax(a))
    return z / _rowsum(z)


def _log_softmax(a):
    z = a - _rowmax(a)
    return z - np.log(_rowsum(np.exp(z)))


def _cross_entropy_and_softmax(s, y):
    """``softmax_cross_entropy(s, y)`` and ``softmax(s)`` from one pass (the same operations
    as :func:`_log_softmax` and :func:`_softmax`, so the same bits)."""
    z = s - _rowmax(s)
    e = np.exp(z)
    total = _rowsum(e)
    return -_sum(y * (z - np.log(total))) / s.shape[0], e / total


def _sigmoid(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))),
                    np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def _eval_node(e, ev, values):
    if isinstance(e, sp.Symbol):
        if e not in values:
            raise InputError(f"evaluating needs a value for {e.name}.")
        return values[e]
    if e.is_Number or isinstance(e, sp.NumberSymbol):
        return float(e)
    if e is sp.true or e is sp.false:
        return bool(e)
    args = [ev(a) for a in e.args]
    fn = _ops().get(type(e))
    if fn is None:
        _unsupported(e)
    return fn(*args)


def _unsupported(e):
    raise ExpressionError(f"symgrad cannot evaluate {type(e).__name__} with NumPy yet "
                          "(predictions and traces of matrix models); the compiled loss "
                          "and gradient support it.")


@functools.cache
def _ops() -> dict:
    """The NumPy function of every node type a lowered expression can hold."""
    from . import arrays as A
    from .functions import elu, leaky_relu, log_sigmoid, logsumexp, relu, sigmoid, softplus

    return {
        sp.Add: lambda *a: sum(a[1:], a[0]),
        sp.Mul: lambda *a: math.prod(a[1:], start=a[0]),
        sp.Pow: lambda a, b: a ** b,
        sp.exp: np.exp, sp.log: np.log, sp.tanh: np.tanh, sp.sin: np.sin, sp.cos: np.cos,
        sp.Abs: np.abs, sp.sign: np.sign,
        sp.Max: lambda *a: _reduce(np.maximum, a), sp.Min: lambda *a: _reduce(np.minimum, a),
        sigmoid: _sigmoid, relu: lambda x: np.maximum(x, 0.0),
        leaky_relu: lambda x, a: np.where(x > 0, x, a * x),
        elu: lambda x, a: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))),
        softplus: lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))),
        log_sigmoid: lambda x: np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x))),
        logsumexp: lambda *a: _reduce(np.logaddexp, a),
        A.matmul: lambda a, b: a @ b, A.transpose: lambda a: a.T,
        A.rowsum: _rowsum,
        A.colsum: lambda a: np.add.reduce(a, axis=0, keepdims=True),
        A.total: _sum, A.sqnorm: lambda a: _sum(a * a),
        A.softmax: _softmax, A.log_softmax: _log_softmax,
        A.softmax_cross_entropy: lambda s, y: -_sum(y * _log_softmax(s)) / s.shape[0],
        A.dropout_mask: lambda a, p: np.ones_like(a),
        ExprCondPair: lambda v, c: (v, c),
        sp.Piecewise: _piecewise,
        sp.StrictGreaterThan: np.greater, sp.GreaterThan: np.greater_equal,
        sp.StrictLessThan: np.less, sp.LessThan: np.less_equal, sp.Eq: np.equal,
        sp.Ne: np.not_equal, sp.And: np.logical_and, sp.Or: np.logical_or,
        sp.Not: np.logical_not, sp.Heaviside: lambda x, h=0.5: np.heaviside(x, h),
    }


@functools.cache
def _with_byproduct() -> dict:
    from . import arrays as A

    return {A.softmax_cross_entropy: _cross_entropy_and_softmax}


def _piecewise(*pairs):
    """np.select over the pairs, in the values' own dtype (a float32 model stays float32:
    Python numbers among the values do not widen it)."""
    dtype = np.result_type(*(v for v, _ in pairs))
    if len(pairs) == 2 and pairs[1][1] is True:  # (a if c else b): the common case
        (a, c), (b, _) = pairs
        return np.where(c, a, b).astype(dtype, copy=False)
    values = [np.asarray(v, dtype=dtype) for v, _ in pairs]
    conds = [np.asarray(c, dtype=bool) for _, c in pairs]
    shape = np.broadcast_shapes(*(v.shape for v in values), *(c.shape for c in conds))
    return np.select([np.broadcast_to(c, shape) for c in conds],
                     [np.broadcast_to(v, shape) for v in values], np.nan)


def _reduce(f, args):
    out = args[0]
    for a in args[1:]:
        out = f(out, a)
    return out
