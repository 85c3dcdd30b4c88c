"""Printing SymPy expressions as Numba-compilable Python, one line per assignment.

:class:`FlatCodePrinter` subclasses SymPy's ``PythonCodePrinter`` and adds a ``_print_X``
method for each node type whose default printing is wrong for us: symgrad's activations
become calls of helpers defined in the generated module, math functions print bare
(``exp(s0)``, imported from ``math``), constants print as exact float literals (never a
name a user symbol could shadow), ``Piecewise`` prints as a conditional expression, and
anything unknown raises (``strict``) instead of printing something that would not run.
The printer records which helpers and math names it used so the module imports only those.
"""

from __future__ import annotations

import math

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from ..expression.functions import (
    elu,
    leaky_relu,
    log_sigmoid,
    logsumexp,
    relu,
    sigmoid,
    softplus,
)
from ..graph import GENERATED_CODE_NAMES
from ..rules import lookup

__all__ = ["FLOAT_ROUNDING", "FlatCodePrinter", "printed_as_quotient"]

#: Printed as math's names but imported from NumPy: Numba's math.floor and math.ceil return an
#: int64, which is garbage past 2**63, at inf and at NaN (floor(1e19) = -9.2e18); NumPy's
#: return the float. The name is the same in every line (no libm twin needed).
FLOAT_ROUNDING = ("floor", "ceil")


def printed_as_quotient(e: sp.Pow) -> bool:
    """``x**-n`` for an integer ``n`` in 2..0x10000, which the printer writes ``1/x**n``.

    Numba's ``x**-n`` inverts outside the numpy error model: ZeroDivisionError where ``x**n``
    is 0 (x = 0, or 1e-200**2). ``1/x**n`` is the same arithmetic (x**n unrolled, then 1/r)
    and gives inf there. (Beyond 0x10000 Numba calls pow, which does not raise.)"""
    return e.is_commutative and e.exp.is_Integer and -0x10000 <= e.exp.p <= -2

_HELPERS = {sigmoid: "sigmoid", relu: "relu", leaky_relu: "leaky_relu", elu: "elu",
            softplus: "softplus", sp.sign: "sign", sp.Heaviside: "heaviside",
            log_sigmoid: "log_sigmoid", logsumexp: "logsumexp"}


class FlatCodePrinter(PythonCodePrinter):
    """Python printer for flat generated code; see the module docstring for what it changes."""

    printmethod = "_symgrad_code"
    _default_settings = dict(
        PythonCodePrinter._default_settings,
        order="none",
        strict=True,
        fully_qualified_modules=False,
    )

    def __init__(self, settings=None):
        super().__init__(settings)
        self.helpers: set[str] = set()
        self.math_names: set[str] = set()
        self.user_functions: dict[str, tuple[type, int]] = {}

    def _module_format(self, fqn, register=True):
        module, _, name = fqn.rpartition(".")
        if not module and name in ("abs", "max", "min"):
            return name
        if module != "math" or name not in GENERATED_CODE_NAMES:
            raise NotImplementedError(f"generated code may not use {fqn}")
        if self._settings["fully_qualified_modules"] and name not in FLOAT_ROUNDING:
            return fqn
        self.math_names.add(name)
        return name

    def _print_Assignment(self, expr):
        return f"{self._print(expr.lhs)} = {self._print(expr.rhs)}"

    def _print_AddAugmentedAssignment(self, expr):
        return f"{self._print(expr.lhs)} += {self._print(expr.rhs)}"

    def _print_Float(self, expr):
        return self._float_literal(float(expr))

    def _print_Integer(self, expr):
        # Numba types an integer literal as int64: a larger one is printed as the float64 it
        # would be converted to in the arithmetic (a literal of 10**20 does not compile).
        if -(2**63) <= expr.p < 2**63:
            return str(expr.p)
        try:
            return self._float_literal(float(expr.p))
        except OverflowError:
            return self._float_literal(math.copysign(math.inf, expr.p))

    def _print_Pow(self, expr, rational=False):
        if printed_as_quotient(expr):  # as a base of another power it is parenthesized
            return "1/" + self._print(sp.Pow(expr.base, -expr.exp, evaluate=False))
        return super()._print_Pow(expr, rational=rational)

    def _float_literal(self, value: float) -> str:
        if math.isinf(value):  # a derived constant beyond float64 (the user's are refused)
            return ("-" if value < 0 else "") + self._module_format("math.inf")
        return repr(value)

    def _print_Exp1(self, expr):
        return repr(math.e)

    def _print_Pi(self, expr):
        return repr(math.pi)

    def _print_Infinity(self, expr):
        return self._module_format("math.inf")

    def _print_NegativeInfinity(self, expr):
        return "-" + self._module_format("math.inf")

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"

    def _print_Identity(self, expr):
        return self._print(expr.args[0])

    def _print_Piecewise(self, expr):
        parts = []
        for value, cond in expr.args:
            if cond == sp.true:
                parts.append(self._print(value))
                break
            parts.append(f"{self._print(value)} if {self._print(cond)} else")
        else:
            parts.append(self._module_format("math.nan"))
        return "(" + " ".join(parts) + ")"

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_Function(self, expr):
        cls = type(expr)
        if cls in _HELPERS:
            self.helpers.add(_HELPERS[cls])
            return f"{_HELPERS[cls]}({', '.join(self._print(a) for a in expr.args)})"
        if cls.__name__.lower() in self.known_functions or cls.__name__ in self.known_functions:
            return super()._print_Function(expr)
        rule = lookup(cls)
        if rule.forward is None:
            raise NotImplementedError(
                f"{cls.__name__} has a derivative rule but no forward=...; register it with "
                f"symgrad.rule({cls.__name__}, forward=lambda *args: <its value>)"
            )
        self.user_functions[cls.__name__] = (cls, len(expr.args))
        return f"{cls.__name__}({', '.join(self._print(a) for a in expr.args)})"

    _print_sign = _print_Function
    _print_Heaviside = _print_Function

    def _print_Max(self, expr):
        return f"max({', '.join(self._print(a) for a in expr.args)})"

    def _print_Min(self, expr):
        return f"min({', '.join(self._print(a) for a in expr.args)})"
