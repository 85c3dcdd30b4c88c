"""A printed line's value, computed from its SymPy form: the program run as data.

The trace needs the value of every line of a listing. Instead of executing the printed text,
:func:`evaluate_line` walks the assignment's right-hand side and performs, node by node, the
operation :class:`~symgrad.emit.printer.FlatCodePrinter` prints for it: a product with
negative powers is a quotient (``a*b/c``), ``x**(1/2)`` is ``sqrt(x)`` and ``x**-1`` is
``1/x``, ``max``/``min`` are Python's, ``Piecewise`` is a chain of conditional expressions
(only the branch taken is computed), symgrad's activations follow the generated module's
helpers and a user's function its registered ``forward``. So every value is the one the
printed line computes, down to the last bit. Numbers are NumPy float64 scalars and math
functions NumPy's: run under ``np.errstate(all="ignore")``, a division by zero or the log of
a negative number gives inf or NaN as compiled code does instead of raising.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping

import numpy as np
import sympy as sp
from sympy.core.mul import _keep_coeff

from ..errors import SymgradError
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
from ..rules import lookup
from .printer import FlatCodePrinter, printed_as_quotient

__all__ = ["evaluate_line"]

Value = np.float64 | bool


def evaluate_line(expr: sp.Basic, values: Mapping[sp.Symbol, Value]) -> Value:
    """The value of ``expr`` (a line's right-hand side) as its printed code computes it.

    ``values`` maps the symbols in ``expr`` (the listing's names) to float64 numbers or
    bools. Returns a float64, or a bool for a condition.
    """
    return _Interpreter(values).value(expr)


def _float(f: Callable) -> Callable:
    """A ``math`` function on float64 numbers; domain and range errors become NaN and inf."""

    def run(*args):
        try:
            return np.float64(f(*map(float, args)))
        except OverflowError:
            return np.float64(math.inf)
        except ValueError:
            return np.float64(math.nan)

    return run


#: What each math name the printer emits computes (NumPy's versions: inf/NaN, no raise).
_MATH = {
    "exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "tanh": np.tanh, "sinh": np.sinh, "cosh": np.cosh, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "atan2": np.arctan2, "asinh": np.arcsinh, "acosh": np.arccosh,
    "atanh": np.arctanh, "log1p": np.log1p, "expm1": np.expm1, "log2": np.log2,
    "log10": np.log10, "floor": np.floor, "ceil": np.ceil, "abs": abs,
    "isinf": lambda x: bool(np.isinf(x)), "isnan": lambda x: bool(np.isnan(x)),
    "erf": _float(math.erf), "erfc": _float(math.erfc), "gamma": _float(math.gamma),
    "lgamma": _float(math.lgamma),
}


# The generated module's helpers (templates/helpers.py.j2), on Python floats with libm's
# math, as Numba compiles them; none of their math calls can overflow or leave the domain.
def _sigmoid(x):
    x = float(x)
    z = math.exp(-abs(x))
    r = 1.0 / (1.0 + z)
    return r if x >= 0.0 else z * r


def _relu(x):
    return 0.0 if x <= 0.0 else x


def _leaky_relu(x, alpha):
    return alpha * x if x <= 0.0 else x


def _elu(x, alpha):
    return alpha * math.expm1(float(x)) if x <= 0.0 else x


def _softplus(x):
    x = float(x)
    return (x if x > 0.0 else 0.0) + math.log1p(math.exp(-abs(x)))


def _log_sigmoid(x):
    x = float(x)
    return (x if x < 0.0 else 0.0) - math.log1p(math.exp(-abs(x)))


def _logaddexp(a, b):
    d = a - b
    if d != d:
        return a + b
    return (a if a > b else b) + math.log1p(math.exp(-abs(d)))


def _logsumexp(*xs):
    out = -math.inf
    for x in xs:
        out = _logaddexp(out, float(x))
    return out


def _sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else x * 0.0)


def _heaviside(x, at_zero=0.5):
    return 1.0 if x > 0.0 else (0.0 if x < 0.0 else (at_zero if x == 0.0 else x))


_HELPERS = {sigmoid: _sigmoid, relu: _relu, leaky_relu: _leaky_relu, elu: _elu,
            softplus: _softplus, sp.sign: _sign, sp.Heaviside: _heaviside,
            log_sigmoid: _log_sigmoid, logsumexp: _logsumexp}

_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}

#: The functions the printer prints as calls of a math name, keyed by SymPy class name.
_KNOWN = FlatCodePrinter().known_functions
#: Digits the printer gives constants it has no exact literal for (Catalan, EulerGamma, ...).
_PRECISION = FlatCodePrinter._default_settings["precision"]


class _Interpreter:
    def __init__(self, values: Mapping[sp.Symbol, Value]) -> None:
        self.values = values

    def value(self, e: sp.Basic) -> Value:
        if isinstance(e, sp.Symbol):
            return self.values[e]
        if e.is_Number or isinstance(e, sp.NumberSymbol):
            return _number(e)
        if e is sp.true or e is sp.false:
            return bool(e)
        if isinstance(e, sp.Add):
            out = self.value(e.args[0])
            for term in e.args[1:]:
                out = out + self.value(term)
            return out
        if isinstance(e, sp.Mul):
            return self.product(e)
        if isinstance(e, sp.Pow):
            return self.power(e)
        if isinstance(e, sp.Piecewise):
            for branch, condition in e.args:
                if condition == sp.true or self.value(condition):
                    return self.value(branch)
            return np.float64(math.nan)
        if isinstance(e, sp.core.relational.Relational):
            return bool(_COMPARE[e.rel_op](self.value(e.lhs), self.value(e.rhs)))
        if isinstance(e, sp.And):
            return all([bool(self.value(a)) for a in e.args])
        if isinstance(e, sp.Or):
            return any([bool(self.value(a)) for a in e.args])
        if isinstance(e, sp.Not):
            return not self.value(e.args[0])
        if isinstance(e, Identity):
            return self.value(e.args[0])
        if isinstance(e, (sp.Max, sp.Min)):  # Python's max/min: the first extreme argument
            better = operator.gt if isinstance(e, sp.Max) else operator.lt
            out = self.value(e.args[0])
            for a in e.args[1:]:
                v = self.value(a)
                if better(v, out):
                    out = v
            return out
        if isinstance(e, sp.Function):
            return self.function(e)
        raise SymgradError(f"cannot evaluate {type(e).__name__} in a listing; this is a "
                           "symgrad bug, please report it with the expression.")

    def product(self, e: sp.Mul) -> np.float64:
        """``sign*a1*a2/(b1*b2)``: the layout ``CodePrinter._print_Mul`` prints."""
        c, rest = e.as_coeff_Mul()
        negative = bool(c < 0)
        if negative:
            e = _keep_coeff(-c, rest)
        numerator, denominator = [], []
        for item in sp.Mul.make_args(e):
            if not (item.is_commutative and item.is_Pow and item.exp.is_Rational
                    and item.exp.is_negative):
                numerator.append(item)
            elif item.exp == -1:
                denominator.append(item.base)
            else:
                denominator.append(sp.Pow(item.base, -item.exp, evaluate=False))
        out = np.float64(1.0) if not numerator else self.value(numerator[0])
        for a in numerator[1:]:
            out = out * self.value(a)
        if denominator:
            below = self.value(denominator[0])
            for b in denominator[1:]:
                below = below * self.value(b)
            out = out / below
        return -out if negative else out

    def power(self, e: sp.Pow) -> np.float64:
        """As the printer lays it out: ``sqrt(x)``, ``1/sqrt(x)``, ``1/x``, ``1/x**n`` or
        ``x**n``."""
        base = self.value(e.base)
        if e.exp == sp.S.Half:
            return np.sqrt(base)
        if e.is_commutative and -e.exp is sp.S.Half:
            return np.float64(1.0) / np.sqrt(base)
        if e.is_commutative and e.exp is sp.S.NegativeOne:
            return np.float64(1.0) / base
        if printed_as_quotient(e):
            return np.float64(1.0) / base ** self.value(-e.exp)
        return base ** self.value(e.exp)

    def function(self, e: sp.Function):
        cls = type(e)
        args = [self.value(a) for a in e.args]
        helper = _HELPERS.get(cls)
        if helper is not None:
            return np.float64(helper(*args))
        known = _KNOWN.get(cls.__name__)
        if known is not None:
            return _MATH[known.rpartition(".")[2]](*args)
        dummies = [sp.Dummy(f"a{k}") for k in range(len(args))]
        body = lookup(cls).forward(*dummies)
        return _Interpreter(dict(zip(dummies, args))).value(body)


def _number(e: sp.Basic) -> np.float64:
    """A constant as the printed literal reads: ``p/q`` divides, pi and e are math's."""
    if e is sp.pi:
        return np.float64(math.pi)
    if e is sp.E:
        return np.float64(math.e)
    if e.is_Rational:
        return np.float64(e.p / e.q) if e.q != 1 else np.float64(e.p)
    if isinstance(e, sp.NumberSymbol):
        return np.float64(float(sp.Float(e.evalf(_PRECISION))))
    if e is sp.nan or e is sp.zoo:
        return np.float64(math.nan)
    return np.float64(float(e))
