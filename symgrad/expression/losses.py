"""Per-sample losses as SymPy expressions (the risk a Model minimises is their mean).

Each returns an ordinary SymPy expression in the prediction and the target, so it can be
printed, differentiated by ``sympy.diff`` and compiled like anything else. The stable forms
(``bce_with_logits``) are written with symgrad's ``softplus`` so that value and gradient stay
finite for logits as large as 1e3.
"""

from __future__ import annotations

import sympy as sp

from .functions import softplus

__all__ = ["bce", "bce_with_logits", "huber", "mae", "mse", "squared_error"]


def mse(pred: sp.Expr, target: sp.Expr) -> sp.Expr:
    """Squared error (pred - target)**2; its mean over samples is the MSE."""
    return (pred - target) ** 2


def squared_error(pred: sp.Expr, target: sp.Expr) -> sp.Expr:
    """The lecture's L2 loss 1/2 (target - pred)**2."""
    return (pred - target) ** 2 / 2


def mae(pred: sp.Expr, target: sp.Expr) -> sp.Expr:
    """Absolute error |pred - target|; its mean is the MAE."""
    return sp.Abs(pred - target)


def huber(pred: sp.Expr, target: sp.Expr, delta: float = 1.0) -> sp.Expr:
    """Quadratic within ``delta`` of the target, linear beyond (PyTorch's HuberLoss)."""
    r = sp.Abs(pred - target)
    d = sp.Float(delta)
    return sp.Piecewise((r**2 / 2, r <= d), (d * (r - d / 2), True))


def bce(prob: sp.Expr, target: sp.Expr) -> sp.Expr:
    """Binary cross-entropy of a probability; prefer ``bce_with_logits`` on raw scores."""
    return -(target * sp.log(prob) + (1 - target) * sp.log(1 - prob))


def bce_with_logits(logit: sp.Expr, target: sp.Expr) -> sp.Expr:
    """Binary cross-entropy of sigmoid(logit), as softplus(logit) - target*logit (stable)."""
    return softplus(logit) - target * logit
