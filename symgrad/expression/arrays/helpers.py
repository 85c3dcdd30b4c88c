"""What users write on matrices: element-wise functions, softmax, sums, penalties, losses.

Each helper returns a SymPy expression (a matrix expression, or a scalar for the sums and
losses) built from SymPy's matrix classes, the wrappers and the array ops; nothing is
computed until the model is lowered.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp
from sympy.matrices.expressions import HadamardProduct, MatrixExpr, OneMatrix

from ...errors import ExpressionError
from .lowering import matrix_shape
from .ops import sqnorm, total
from .wrappers import ColSum, Dropout, Elementwise, LogSoftmax, RowSum, Softmax

__all__ = [
    "dropout", "elementwise", "exp", "hinge", "l1", "l2", "log", "log_softmax_rows", "maxout",
    "mean", "softmax_rows", "sum", "tanh",
]


def elementwise(f: Callable[..., sp.Expr], *args):
    """``f(*args)`` entry by entry when an argument is a matrix, else plainly ``f(*args)``.

    ``f`` takes and returns scalar SymPy expressions, e.g. ``lambda x: x**2 + sin(x)``.
    """
    if not any(isinstance(a, MatrixExpr) for a in args):
        return f(*args)
    dummies = [sp.Dummy(f"x{k}") for k in range(len(args))]
    return Elementwise(sp.Lambda(tuple(dummies), f(*dummies)), *args)


def tanh(x):
    """tanh, element-wise on matrices."""
    return elementwise(sp.tanh, x)


def exp(x):
    """exp, element-wise on matrices."""
    return elementwise(sp.exp, x)


def log(x):
    """Natural log, element-wise on matrices."""
    return elementwise(sp.log, x)


def sum(x, axis: int | None = None):  # noqa: A001  (NumPy's name, on purpose)
    """Sum of all entries (a scalar), or over ``axis`` 0 (shape (1, cols)) or 1 ((rows, 1))."""
    _need_matrix(x, "sum")
    if axis is None:
        return total(x)
    if axis in (0, -2):
        return ColSum(x)
    if axis in (1, -1):
        return RowSum(x)
    raise ValueError(f"sum(axis=...) takes None, 0 or 1, got {axis!r}")


def mean(x):
    """Mean of all entries."""
    _need_matrix(x, "mean")
    rows, cols = matrix_shape(x)  # not x.shape: SymPy's (1, k) for softmax(X) + b
    return total(x) / (rows * cols)


def softmax_rows(x):
    """Row-wise softmax of a matrix (the lecture's class probabilities)."""
    _need_matrix(x, "softmax")
    return Softmax(x)


def log_softmax_rows(x):
    """Row-wise log-softmax of a matrix (stable)."""
    _need_matrix(x, "log_softmax")
    return LogSoftmax(x)


def dropout(x, p: float):
    """Inverted dropout (training only): ``x`` times a fresh random mask of keep-probability
    ``1 - p`` scaled by ``1/(1 - p)``; the identity when evaluating or predicting."""
    _need_matrix(x, "dropout")
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return HadamardProduct(x, Dropout(x, sp.Float(p)))


def l2(w):
    """The L2 penalty: sum of squared entries (add ``0.5*reg*l2(W)`` for the deck's form)."""
    _need_matrix(w, "l2")
    return sqnorm(w)


def l1(w):
    """The L1 penalty: sum of absolute entries."""
    _need_matrix(w, "l1")
    return total(elementwise(sp.Abs, w))


def maxout(*zs):
    """Entry-wise maximum of several pre-activations (a maxout unit over its pieces)."""
    if len(zs) < 2:
        raise ValueError("maxout takes at least two matrices (the pieces to take the max of)")
    return elementwise(sp.Max, *zs)


def hinge(scores, target):
    """Multiclass SVM (hinge) loss: mean over rows of sum_{j != y} max(0, s_j - s_y + 1).

    ``target`` is one-hot. Built from element-wise operations and row sums, so its gradient
    comes from their rules.
    """
    _need_matrix(scores, "hinge")
    rows, cols = matrix_shape(scores)
    correct = RowSum(HadamardProduct(scores, target)) * OneMatrix(1, cols)
    margins = elementwise(lambda s, c, y: (1 - y) * sp.Max(0, s - c + 1),
                          scores, correct, target)
    return total(margins) / rows


def _need_matrix(x, name: str) -> None:
    if not isinstance(x, MatrixExpr):
        raise ExpressionError(f"{name}() takes a matrix expression (built from "
                              f"sympy.MatrixSymbol), got {type(x).__name__}.")
