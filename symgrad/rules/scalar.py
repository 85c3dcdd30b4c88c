"""Derivative rules of scalar operations: ``(node, out, grad_out) -> one adjoint per input``."""

from __future__ import annotations

import math
import operator

import sympy as sp

from ..expression.functions import (
    elu,
    leaky_relu,
    log_sigmoid,
    logsumexp,
    relu,
    sigmoid,
    softplus,
)
from ..graph import Identity
from .registry import rule

_TWO_OVER_SQRT_PI = sp.Float(2 / math.sqrt(math.pi))


@rule(sp.Add)
def _add(node, out, g):
    return tuple(g for _ in node.args)


@rule(sp.Mul)
def _mul(node, out, g):
    a, b = node.args
    return (g * b, g * a)


@rule(Identity)
def _identity(node, out, g):
    return (g,)


@rule(sp.Pow)
def _pow(node, out, g):
    """``x**n``: ``n x**(n-1)`` and ``x**n log(x)``, with PyTorch's values where these are
    0 * inf: the exponent's gradient is 0 at x = 0 for n >= 0 (``0**n`` does not depend on
    ``n`` there), the base's is 0 for n = 0 (``x**0`` is constant)."""
    x, n = node.args
    if n == sp.S.Half:
        dx = g / (2 * out)
    elif n == -1:
        dx = -g / x**2
    elif n.is_number:
        dx = g * n * x ** (n - 1)
    else:
        dx = sp.Piecewise((0, sp.Eq(n, 0)), (g * n * x ** (n - 1), True))
    if x.is_number:
        return (dx, g * out * sp.log(x))
    return (dx, sp.Piecewise((0, sp.Eq(x, 0) & (n >= 0)), (g * out * sp.log(x), True)))


@rule(sp.exp)
def _exp(node, out, g):
    return (g * out,)


@rule(sp.log)
def _log(node, out, g):
    (x,) = node.args
    return (g / x,)


@rule(sp.sin)
def _sin(node, out, g):
    (x,) = node.args
    return (g * sp.cos(x),)


@rule(sp.cos)
def _cos(node, out, g):
    (x,) = node.args
    return (-g * sp.sin(x),)


@rule(sp.tan)
def _tan(node, out, g):
    return (g * (1 + out**2),)


@rule(sp.tanh)
def _tanh(node, out, g):
    return (g * (1 - out**2),)


@rule(sp.sinh)
def _sinh(node, out, g):
    (x,) = node.args
    return (g * sp.cosh(x),)


@rule(sp.cosh)
def _cosh(node, out, g):
    (x,) = node.args
    return (g * sp.sinh(x),)


@rule(sp.asin)
def _asin(node, out, g):
    (x,) = node.args
    return (g / sp.sqrt(1 - x**2),)


@rule(sp.acos)
def _acos(node, out, g):
    (x,) = node.args
    return (-g / sp.sqrt(1 - x**2),)


@rule(sp.atan)
def _atan(node, out, g):
    (x,) = node.args
    return (g / (1 + x**2),)


@rule(sp.atan2)
def _atan2(node, out, g):
    y, x = node.args
    return (g * x / (x**2 + y**2), -g * y / (x**2 + y**2))


@rule(sp.asinh)
def _asinh(node, out, g):
    (x,) = node.args
    return (g / sp.sqrt(x**2 + 1),)


@rule(sp.acosh)
def _acosh(node, out, g):
    (x,) = node.args
    return (g / sp.sqrt(x**2 - 1),)


@rule(sp.atanh)
def _atanh(node, out, g):
    (x,) = node.args
    return (g / (1 - x**2),)


@rule(sp.erf)
def _erf(node, out, g):
    (x,) = node.args
    return (g * _TWO_OVER_SQRT_PI * sp.exp(-(x**2)),)


@rule(sp.erfc)
def _erfc(node, out, g):
    (x,) = node.args
    return (-g * _TWO_OVER_SQRT_PI * sp.exp(-(x**2)),)


@rule(sp.Abs)
def _abs(node, out, g):
    (x,) = node.args
    return (g * sp.sign(x),)


def _router(node, out, g, wins):
    """Gradient router of max/min: the winner takes it all; at a tie the tied inputs share it
    evenly (1/2 each of two, 1/3 each of three tied among three, ...).

    Splitting a tie evenly is PyTorch's convention for ``torch.maximum``/``minimum``: it is a
    valid subgradient, symmetric in the inputs, and keeps the sum of the adjoints equal to the
    upstream gradient (the lecture's formula would give both inputs all of it). The graph
    keeps a max/min of three or more inputs as one node (nested binary nodes would split a
    three-way tie 1/4, 1/4, 1/2): each input gets ``g / ties`` when it equals the output,
    ``ties`` counting the inputs that do.
    """
    if len(node.args) == 2:
        a, b = node.args
        tie = sp.Eq(a, b)
        return (
            sp.Piecewise((g, wins(a, b)), (g / 2, tie), (0, True)),
            sp.Piecewise((0, wins(a, b)), (g / 2, tie), (g, True)),
        )
    ties = sp.Add(*[sp.Piecewise((1, sp.Eq(a, out)), (0, True)) for a in node.args])
    return tuple(sp.Piecewise((g / ties, sp.Eq(a, out)), (0, True)) for a in node.args)


@rule(sp.Max)
def _max(node, out, g):
    return _router(node, out, g, operator.gt)


@rule(sp.Min)
def _min(node, out, g):
    return _router(node, out, g, operator.lt)


@rule(sp.Piecewise)
def _piecewise(node, out, g):
    """Router: the branch that was taken gets the gradient; conditions get none."""
    adjoints = []
    conditions = node.args[1::2]
    for k in range(len(conditions)):
        earlier = [(0, c) for c in conditions[:k]]
        adjoints += [sp.Piecewise(*earlier, (g, conditions[k]), (0, True)), None]
    return tuple(adjoints)


@rule(sigmoid)
def _sigmoid(node, out, g):
    return (g * (1 - out) * out,)


@rule(relu)
def _relu(node, out, g):
    (x,) = node.args
    return (sp.Piecewise((g, x > 0), (0, True)),)


@rule(leaky_relu)
def _leaky_relu(node, out, g):
    x, alpha = node.args
    return (sp.Piecewise((g, x > 0), (alpha * g, True)), sp.Piecewise((0, x > 0), (g * x, True)))


@rule(elu)
def _elu(node, out, g):
    x, alpha = node.args
    return (
        sp.Piecewise((g, x > 0), (g * (out + alpha), True)),
        sp.Piecewise((0, x > 0), (g * (sp.exp(x) - 1), True)),
    )


@rule(softplus)
def _softplus(node, out, g):
    (x,) = node.args
    return (g * sigmoid(x),)


@rule(log_sigmoid)
def _log_sigmoid(node, out, g):
    (x,) = node.args
    return (g * sigmoid(-x),)


@rule(logsumexp)
def _logsumexp(node, out, g):
    return tuple(g * sp.exp(x - out) for x in node.args)


def _no_gradient(node, out, g):
    """Piecewise-constant or boolean operations: zero gradient almost everywhere."""
    return tuple(None for _ in node.args)


for _op in (
    sp.sign,
    sp.Heaviside,
    sp.floor,
    sp.ceiling,
    sp.StrictGreaterThan,
    sp.GreaterThan,
    sp.StrictLessThan,
    sp.LessThan,
    sp.Equality,
    sp.Unequality,
    sp.And,
    sp.Or,
    sp.Not,
):
    rule(_op)(_no_gradient)
