"""Losses as SymPy expressions.

On scalars each is the per-sample loss (the risk a Model minimises is its mean); on matrices
(``MatrixSymbol`` expressions of one shape) it is the mean over all entries, ready to be a
matrix model's loss. Each returns an ordinary SymPy expression in the prediction and the
target, so it can be printed, differentiated by ``sympy.diff`` and compiled like anything
else. The stable forms (``bce_with_logits``) are written with symgrad's ``softplus`` so that
value and gradient stay finite for logits as large as 1e3.
"""

from __future__ import annotations

import functools

import sympy as sp
from sympy.matrices.expressions import HadamardProduct, MatrixExpr

from .arrays import elementwise, mean, total
from .functions import softplus

__all__ = ["bce", "bce_with_logits", "dice", "huber", "mae", "mse", "squared_error"]


def _entrywise(loss):
    """On matrices: the mean over all entries of the scalar loss applied entry by entry."""

    @functools.wraps(loss)
    def wrapped(pred, target, *args):
        if isinstance(pred, MatrixExpr) or isinstance(target, MatrixExpr):
            return mean(elementwise(lambda p, t: loss(p, t, *args), pred, target))
        return loss(pred, target, *args)

    return wrapped


@_entrywise
def mse(pred: sp.Expr, target: sp.Expr) -> sp.Expr:
    """Squared error (pred - target)**2; its mean over samples is the MSE."""
    return (pred - target) ** 2


@_entrywise
def squared_error(pred: sp.Expr, target: sp.Expr) -> sp.Expr:
    """The lecture's L2 loss 1/2 (target - pred)**2."""
    return (pred - target) ** 2 / 2


@_entrywise
def mae(pred: sp.Expr, target: sp.Expr) -> sp.Expr:
    """Absolute error |pred - target|; its mean is the MAE."""
    return sp.Abs(pred - target)


@_entrywise
def huber(pred: sp.Expr, target: sp.Expr, delta: float = 1.0) -> sp.Expr:
    """Quadratic within ``delta`` of the target, linear beyond (PyTorch's HuberLoss)."""
    r = sp.Abs(pred - target)
    d = sp.Float(delta)
    return sp.Piecewise((r**2 / 2, r <= d), (d * (r - d / 2), True))


@_entrywise
def bce(prob: sp.Expr, target: sp.Expr) -> sp.Expr:
    """Binary cross-entropy of a probability; prefer ``bce_with_logits`` on raw scores."""
    return -(target * sp.log(prob) + (1 - target) * sp.log(1 - prob))


@_entrywise
def bce_with_logits(logit: sp.Expr, target: sp.Expr) -> sp.Expr:
    """Binary cross-entropy of sigmoid(logit), as softplus(logit) - target*logit (stable)."""
    return softplus(logit) - target * logit


def dice(prob, target, smooth: float = 1.0):
    """Dice loss of matrices: 1 - (2 sum(P*T) + smooth) / (sum(P) + sum(T) + smooth).

    ``smooth`` keeps it defined when both are empty (as segmentation code does).
    """
    if not (isinstance(prob, MatrixExpr) and isinstance(target, MatrixExpr)):
        raise TypeError("dice takes two matrices of one shape (probabilities and targets)")
    k = sp.Float(smooth)
    overlap = total(HadamardProduct(prob, target))
    return 1 - (2 * overlap + k) / (total(prob) + total(target) + k)
