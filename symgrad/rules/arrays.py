"""Derivative rules of the operations on whole arrays (matrix models).

Element-wise operations need no rules of their own: they are the scalar rules, applied entry
by entry, and the reverse pass sums an adjoint over any axis its input was broadcast along.
These are the lecture's vectorized rules ("the only way to make shapes match up").
"""

from __future__ import annotations

import sympy as sp

from ..expression.arrays import (
    colsum,
    dropout_mask,
    log_softmax,
    matmul,
    rowsum,
    softmax,
    softmax_cross_entropy,
    sqnorm,
    total,
    transpose,
)
from .registry import rule


@rule(matmul)
def _matmul(node, out, g):
    a, b = node.args
    return (matmul(g, transpose(b)), matmul(transpose(a), g))


@rule(transpose)
def _transpose(node, out, g):
    return (transpose(g),)


@rule(rowsum)
def _rowsum(node, out, g):
    return (g,)


@rule(colsum)
def _colsum(node, out, g):
    return (g,)


@rule(total)
def _total(node, out, g):
    return (g,)


@rule(sqnorm)
def _sqnorm(node, out, g):
    (a,) = node.args
    return (2 * g * a,)


@rule(softmax)
def _softmax(node, out, g):
    return (out * (g - rowsum(g * out)),)


@rule(log_softmax)
def _log_softmax(node, out, g):
    return (g - sp.exp(out) * rowsum(g),)


@rule(softmax_cross_entropy)
def _softmax_cross_entropy(node, out, g):
    s, y = node.args
    rows = node.arg_shapes[0][0]
    return (g * (softmax(s) - y) / rows, -g * log_softmax(s) / rows)


@rule(dropout_mask)
def _dropout_mask(node, out, g):
    return (None, None)  # random, not a function of its argument (which only gives the shape)


# -- tangents (forward mode, for second order): d(op) along the inputs' tangents ----------
# Element-wise operations use their rule (``rule(g=dot)`` is ``f'(x)*dot`` entry by entry);
# whole-array operations are not their own transpose, so each has its tangent here:
# ``fn(args, out, dots, rows)`` with ``dots[k]`` None where input k has no tangent and
# ``rows(arg)`` the number of rows of an argument.


def _linear(op):
    return lambda args, out, dots, rows: op(dots[0]) if dots[0] is not None else None


def sum_of(*terms):
    terms = [t for t in terms if t is not None]
    return sp.Add(*terms) if len(terms) > 1 else (terms[0] if terms else None)


def _matmul_tangent(args, out, dots, rows):
    (a, b), (da, db) = args, dots
    return sum_of(matmul(da, b) if da is not None else None,
                   matmul(a, db) if db is not None else None)


def _sqnorm_tangent(args, out, dots, rows):
    return 2 * total(args[0] * dots[0]) if dots[0] is not None else None


def _softmax_tangent(args, out, dots, rows):
    d = dots[0]
    return out * (d - rowsum(d * out)) if d is not None else None


def _log_softmax_tangent(args, out, dots, rows):
    d = dots[0]
    return d - rowsum(sp.exp(out) * d) if d is not None else None


def _softmax_cross_entropy_tangent(args, out, dots, rows):
    (s, y), (ds, dy) = args, dots
    n = rows(s)
    return sum_of(total((softmax(s) - y) * ds) / n if ds is not None else None,
                   -total(log_softmax(s) * dy) / n if dy is not None else None)


TANGENTS = {
    matmul: _matmul_tangent,
    transpose: _linear(transpose),
    rowsum: _linear(rowsum),
    colsum: _linear(colsum),
    total: _linear(total),
    sqnorm: _sqnorm_tangent,
    softmax: _softmax_tangent,
    log_softmax: _log_softmax_tangent,
    softmax_cross_entropy: _softmax_cross_entropy_tangent,
}
