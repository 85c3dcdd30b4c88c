"""Turning what a user passes into a SymPy expression symgrad can work on.

Nothing here calls ``sympify``/``parse_expr`` (they ``eval`` strings): a string is refused.
The checks are one iterative walk over the distinct nodes of the expression, so a deep
expression with heavy sharing (a DAG whose tree form is exponential) costs its DAG size,
and the walk stops at the first node it cannot accept, naming it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import sympy as sp
from sympy.matrices.expressions import MatrixExpr

from ..errors import ExpressionError

__all__ = ["as_expression", "check_constants", "free_symbols", "walk"]

_NEEDS_DOIT = (sp.Derivative, sp.Integral, sp.Sum, sp.Product, sp.Limit)


def walk(expr: sp.Basic) -> Iterator[sp.Basic]:
    """Yield each distinct node of ``expr`` once, parents before children (iterative)."""
    seen: set[int] = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        stack.extend(reversed(node.args))


def as_expression(obj: object) -> sp.Expr:
    """Return ``obj`` as a scalar SymPy expression, or raise ExpressionError saying why not."""
    if isinstance(obj, str):
        raise ExpressionError(
            "symgrad takes SymPy expressions, not strings (strings would have to be eval'd). "
            "Build the expression with sympy.symbols(...) and operators instead."
        )
    if isinstance(obj, bool):
        raise ExpressionError("expected a SymPy expression, got a bool.")
    if isinstance(obj, numbers.Integral):
        return sp.Integer(int(obj))
    if isinstance(obj, numbers.Real):
        return sp.Float(float(obj))
    if isinstance(obj, (sp.MatrixBase, MatrixExpr)):
        raise ExpressionError(
            f"expected a scalar expression, got a matrix of shape {obj.shape}. Reduce it to a "
            "scalar loss (e.g. sum or mean of its entries) before compiling."
        )
    if not isinstance(obj, sp.Basic):
        raise ExpressionError(
            f"expected a SymPy expression, got {type(obj).__name__}. Build it from "
            "sympy.symbols(...) and SymPy/symgrad functions."
        )
    is_condition = isinstance(obj, (sp.logic.boolalg.Boolean, sp.core.relational.Relational))
    if is_condition and not isinstance(obj, sp.Symbol):
        raise ExpressionError(
            f"the expression {_short(obj)} is a condition (true/false), not a number; wrap it "
            "in sympy.Piecewise to give each case a value."
        )
    for node in walk(obj):
        _check_node(node)
    return obj


def free_symbols(expr: sp.Basic) -> list[sp.Symbol]:
    """The symbols of ``expr`` in a deterministic order (first met in a depth-first walk)."""
    return [node for node in walk(expr) if isinstance(node, sp.Symbol)]


def _check_node(node: sp.Basic) -> None:
    if node is sp.I or isinstance(node, sp.core.numbers.ImaginaryUnit):
        raise ExpressionError(
            f"the expression contains the imaginary unit (in {_short(node)}); symgrad works "
            "with real numbers only."
        )
    _check_constants(node)
    if isinstance(node, _NEEDS_DOIT):
        raise ExpressionError(
            f"the expression contains an unevaluated {type(node).__name__}: {_short(node)}. "
            "Call .doit() on it first (or write the closed form)."
        )
    if isinstance(node, (MatrixExpr, sp.MatrixBase)):
        raise ExpressionError(
            f"the expression contains the matrix {_short(node)} of shape {node.shape}; "
            "compile() takes scalar expressions. Train a model written with matrices with "
            "symgrad.Model(loss, params, data), whose value_and_grad(data) gives the loss and "
            "a gradient per matrix."
        )
    if isinstance(node, (sp.Indexed, sp.IndexedBase)):
        raise ExpressionError(
            f"indexed objects such as {_short(node)} are not supported; use one symbol per "
            "value."
        )


def check_constants(expr: sp.Basic) -> None:
    """Refuse NaN and infinite constants anywhere in ``expr`` (``as_expression`` does this
    too; matrix losses are checked after lowering)."""
    for node in walk(expr):
        _check_constants(node)


def _check_constants(node: sp.Basic) -> None:
    if node is sp.nan or node is sp.zoo:
        raise ExpressionError(
            f"the expression contains {node} (undefined, e.g. from a division by zero); "
            "check how it was built."
        )
    for part in (node, *node.args):
        if part is sp.oo or part is sp.S.NegativeInfinity:
            where = "" if part is node else f" (in {_short(node)})"
            raise ExpressionError(
                f"the expression contains the infinite constant {part}{where}; symgrad "
                "computes with finite constants (with oo, 0*oo and oo - oo give NaN, not the "
                "limit oo may stand for). Write the limit by hand, or use a finite number."
            )
    if isinstance(node, sp.Number) and node.is_finite and math.isinf(_as_float(node)):
        raise ExpressionError(
            f"the constant {_magnitude(node)} is too large for a float64 (largest "
            f"{_FLOAT_MAX:.4g}), the precision the generated code computes in; rescale the "
            "expression (other units, or work with its logarithm)."
        )


_FLOAT_MAX = 1.7976931348623157e308


def _as_float(number: sp.Number) -> float:
    try:
        return float(number)
    except OverflowError:
        return math.inf


def _magnitude(number: sp.Number) -> str:
    """``1.0000e+400``; a huge integer by its digits (Python refuses to print those)."""
    if number.is_Integer and abs(number.p).bit_length() > 10_000:
        return f"of about {int(abs(number.p).bit_length() * math.log10(2)) + 1} digits"
    return str(sp.Float(number, 5))


def _short(node: sp.Basic, limit: int = 60) -> str:
    text = f"<{type(node).__name__} expression>"
    if _small(node):
        try:
            text = sp.sstr(node)
        except ValueError:  # an integer beyond Python's digit limit for printing
            pass
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _small(node: sp.Basic, budget: int = 200) -> bool:
    """True when ``node``'s tree is small enough to print (a swollen DAG prints exponentially)."""
    count = 0
    stack = [node]
    while stack:
        count += 1
        if count > budget:
            return False
        stack.extend(stack.pop().args)
    return True
