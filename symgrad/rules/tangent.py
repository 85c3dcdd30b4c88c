"""Second order, forward over reverse: tangent lines through the forward and backward program.

Hessian times ``v`` is the directional derivative of the gradient along ``v``. This pass
walks the flat program (forward lines, then the ``grad_...`` lines) once and gives every
line whose value depends on a differentiated input a *tangent line*: ``y = f(a, b)``
becomes ``dot_y = df/da*dot_a + df/db*dot_b``, the partials coming from the same rule
registry as the reverse pass (a rule is linear in ``grad_out``, so ``rule(g=dot_a)`` is
``df/da*dot_a``). Lines with several operations (``grad_L*(1 - L)*L``) are differentiated
operation by operation: sums term by term, products by the product rule, ``Piecewise``
branch by branch (conditions carry no derivative), everything else by its rule. Inputs
``dot_w`` are the direction; the outputs ``dot_grad_w`` are the entries of ``H v``.

The tangent of a line only reads values that are final when the whole first-order program
has run (forward values are assigned once; an adjoint is complete before it is read), so
the tangent lines can run after it, in order: the listing reads forward, backward, tangent.
Their number is at most that of the program's lines: linear, no swell. Because every
partial comes from a first-order rule, the stable forms stay stable (``sigmoid``'s second
derivative is ``dot*(1 - L)*L`` products of bounded values, never ``exp(1000)``).

In a matrix model ``dot_x`` has the shape of ``x`` and, like the program's names, keeps it:
below ``s0 = X + b`` (a bias row broadcast over the batch) the line ``dot_s0 = dot_b``
fills every row of ``dot_s0`` with ``dot_b``, so ``dot_s1 = sum(dot_s0)`` sums n rows.
``Tangent.shapes`` says so for every tangent name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sympy as sp
from sympy.codegen.ast import AddAugmentedAssignment, Assignment
from sympy.logic.boolalg import Boolean

from ..errors import NotSupportedError
from ..graph import is_constant
from .arrays import TANGENTS, sum_of
from .registry import NodeView, lookup
from .reverse import Program, tidy

__all__ = ["Tangent", "linearize", "tangent_symbol"]


@dataclass(frozen=True)
class Tangent:
    """The tangent lines of a program: ``inputs`` (``dot_w``, the direction ``v``, in
    ``wrt`` order) in, ``outputs`` (``dot_grad_w``, the entries of ``H v``) out; ``shapes``
    (matrix models): the shape of each matrix-valued tangent name, its primal's (an
    assignment of a smaller value broadcasts, as in :class:`~symgrad.rules.Program`)."""

    lines: list[Assignment | AddAugmentedAssignment]
    inputs: list[sp.Symbol]
    outputs: list[sp.Symbol]
    shapes: Mapping[sp.Symbol, tuple] = field(default_factory=dict)


def tangent_symbol(symbol: sp.Symbol) -> sp.Symbol:
    """``dot_x``: the tangent of ``x`` (user names never start with ``dot_``)."""
    return sp.Symbol(f"dot_{symbol.name}")


def linearize(program: Program, wrt: Sequence[sp.Symbol],
              shapes: Mapping[sp.Symbol, tuple] | None = None) -> Tangent:
    """Tangent lines of ``program`` along the inputs ``wrt`` (their symbols in the code).

    ``shapes`` (a matrix model's program; ``program.shapes`` by default) gives the shape of
    each node's symbol; products, sums and the other whole-array operations then take their
    tangents from ``rules.arrays.TANGENTS`` and element-wise ones from their rules, entry by
    entry.
    """
    shapes = {**program.shapes, **(shapes or {})}
    inputs = [tangent_symbol(w) for w in wrt]
    dots: dict[sp.Symbol, sp.Symbol] = dict(zip(wrt, inputs))
    raw: list = []
    n_forward = len(program.forward)
    with sp.evaluate(False):  # once: entering it clears SymPy's cache
        for k, line in enumerate([*program.forward, *program.backward]):
            out = line.lhs if k < n_forward else None  # a forward line's lhs is its value
            d = _Linearizer(dots, shapes).jvp(line.rhs, out)
            augmented = isinstance(line, AddAugmentedAssignment)
            if d is None:
                if not augmented:
                    dots.pop(line.lhs, None)
                continue
            if augmented and line.lhs in dots:
                raw.append(AddAugmentedAssignment(dots[line.lhs], d))
            else:
                dots[line.lhs] = tangent_symbol(line.lhs)
                raw.append(Assignment(dots[line.lhs], d))
    lines = [type(a)(a.lhs, tidy(a.rhs)) for a in raw]
    outputs = []
    for g in program.grads:
        if g not in dots:
            dots[g] = tangent_symbol(g)
            lines.append(Assignment(dots[g], sp.Float(0.0)))
        outputs.append(dots[g])
    lines = _live(lines, outputs)
    dot_shapes = {tangent_symbol(x): shape for x, shape in shapes.items() if shape}
    named = {*inputs, *(line.lhs for line in lines)}
    return Tangent(lines, inputs, outputs, {d: s for d, s in dot_shapes.items() if d in named})


def _live(lines: list, outputs: list[sp.Symbol]) -> list:
    """The lines that an output reads, directly or not (forward tangents that no adjoint
    reads, such as the loss's own, are dropped)."""
    needed = set(outputs)
    kept = []
    for line in reversed(lines):
        if line.lhs not in needed:
            continue
        kept.append(line)
        if not isinstance(line, AddAugmentedAssignment):
            needed.discard(line.lhs)
        needed |= line.rhs.free_symbols
    return kept[::-1]


class _Linearizer:
    """The tangent of one line's right-hand side, operation by operation (memoized)."""

    def __init__(self, dots: dict[sp.Symbol, sp.Symbol], shapes: Mapping) -> None:
        self.dots = dots
        self.shapes = shapes
        self.memo: dict[sp.Basic, sp.Basic | None] = {}

    def jvp(self, expr: sp.Basic, out: sp.Symbol | None = None) -> sp.Basic | None:
        """The tangent of ``expr`` (None where it is zero); ``out`` names its value."""
        if expr in self.memo:
            return self.memo[expr]
        result = self._jvp(expr, expr if out is None else out)
        self.memo[expr] = result
        return result

    def _jvp(self, expr: sp.Basic, out: sp.Basic) -> sp.Basic | None:
        if isinstance(expr, sp.Symbol):
            return self.dots.get(expr)
        if is_constant(expr) or isinstance(expr, (Boolean, sp.core.relational.Relational)):
            return None
        if isinstance(expr, sp.Add):
            terms = [d for d in (self.jvp(a) for a in expr.args) if d is not None]
            return sum_of(*terms)
        if isinstance(expr, sp.Mul):
            args = expr.args
            terms = []
            for k, a in enumerate(args):
                d = self.jvp(a)
                if d is not None:
                    terms.append(sp.Mul(*args[:k], d, *args[k + 1:]))
            return sum_of(*terms)
        if isinstance(expr, sp.Piecewise):
            pairs = [(self.jvp(value), cond) for value, cond in expr.args]
            if all(d is None for d, _ in pairs):
                return None
            return sp.Piecewise(*[(sp.S.Zero if d is None else d, c) for d, c in pairs])
        args = expr.args
        if getattr(type(expr), "_symgrad_constant", False):
            return None  # not a function of its inputs (a dropout mask)
        dargs = [self.jvp(a) for a in args]
        if all(d is None for d in dargs):
            return None
        if getattr(type(expr), "_symgrad_array_op", False):
            tangent = TANGENTS.get(type(expr))
            if tangent is None:
                raise NotSupportedError(f"{type(expr).__name__} has no tangent rule, so "
                                        "second order is not available for this model.")
            return tangent(args, out, dargs, self._rows)
        rule = lookup(type(expr))
        view = NodeView(type(expr), tuple(args))
        terms = []
        for k, d in enumerate(dargs):
            if d is None:
                continue
            partial = rule.fn(view, out, d)[k]
            if partial is not None:
                terms.append(partial)
        return sum_of(*terms)

    def _rows(self, arg: sp.Basic):
        """The number of rows of a matrix argument (a number, or the batch-size symbol)."""
        shape = self.shapes.get(arg)
        if not shape:
            raise NotSupportedError(f"the shape of {arg} is unknown to the tangent pass.")
        return shape[0]
