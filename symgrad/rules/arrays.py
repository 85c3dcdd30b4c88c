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
