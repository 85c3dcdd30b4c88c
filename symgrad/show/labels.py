"""What a picture of the graph says: gate symbols, wires with their value and gradient.

A wire runs from a node to each node that uses it (and from the output to the right
margin). It carries the source's forward value and the gradient that flows back along it:
``grad_out * local derivative`` of that one consumer, so at a fan-out the wires show the
terms the lecture's "gradient adder" sums, and elsewhere the source's whole adjoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sympy as sp

from ..expression import sigmoid
from ..graph import Graph, Identity, Node
from .trace import Trace

__all__ = ["Wire", "constant", "gate_label", "picture_number", "wires"]

_SYMBOLS = {
    sp.Add: "+", sp.Mul: "*", sp.Pow: "**", sp.Max: "max", sp.Min: "min", sp.Abs: "abs",
    Identity: "=", sp.Piecewise: "if", sigmoid: "σ", sp.And: "and", sp.Or: "or", sp.Not: "not",
}


@dataclass(frozen=True)
class Wire:
    """From ``source`` to ``target`` (None: the output's wire to the right margin)."""

    source: Node
    target: Node | None
    value: float | bool
    grad: float | None


def wires(graph: Graph, trace: Trace) -> list[Wire]:
    """Every (node, consumer) pair once, in graph order, then the output's wire."""
    values = trace.values
    flows = trace.contributions()
    out = []
    for node in graph.nodes:
        seen = set()
        for operand in node.inputs:
            if not isinstance(operand, Node) or operand.id in seen:
                continue
            seen.add(operand.id)
            grad = None  # no gradient flows into a node that has none (a condition, data)
            if f"grad_{operand.name}" in values and f"grad_{node.name}" in values:
                grad = flows.get((node.name, operand.name), 0.0)
            out.append(Wire(operand, node, values[operand.name], grad))
    root = graph.output
    out.append(Wire(root, None, values[root.name], values.get(f"grad_{root.name}")))
    return out


def gate_label(node: Node) -> str:
    """The gate's symbol as the slides draw it: ``+``, ``*``, ``exp``, ``σ``, ``*-1``, ``1/x``."""
    op = node.op
    consts = [i for i in node.inputs if not isinstance(i, Node)]
    if op is sp.Pow:
        base, exp = node.inputs
        if not isinstance(exp, Node):
            return {-1: "1/x", sp.S.Half: "sqrt"}.get(exp, f"**{constant(exp)}")
        return f"{constant(base)}**" if not isinstance(base, Node) else "**"
    if op in (sp.Add, sp.Mul) and consts:
        c = consts[0]
        if op is sp.Add and c.is_negative:
            return f"-{constant(-c)}"
        return f"{_SYMBOLS[op]}{constant(c)}"
    if isinstance(op, type) and issubclass(op, sp.core.relational.Relational):
        args = [constant(i) if not isinstance(i, Node) else "" for i in node.inputs]
        return f"{args[0]}{op.rel_op}{args[1]}"
    name = _SYMBOLS.get(op) or getattr(op, "__name__", str(op))
    if consts and op not in _SYMBOLS:
        args = ", ".join("·" if isinstance(i, Node) else constant(i) for i in node.inputs)
        return f"{name}({args})"
    return name


def constant(c: sp.Basic) -> str:
    """A constant operand, short: ``2``, ``1/2``, ``0.1``, ``π``."""
    if c is sp.pi:
        return "π"
    if c is sp.E:
        return "e"
    if c.is_Integer or c.is_Rational:
        return str(c)
    if c.is_Number:
        return f"{float(c):g}"
    return str(c)


def picture_number(value: float | bool | None, digits: int = 2) -> str:
    """As the slides print values: ``digits`` decimals (``0.73``, ``-0.20``), tiny ones in e."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if hasattr(value, "label"):
        return value.label(digits)
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 0.5 * 10.0**-digits <= abs(value) < 1e5:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}e}"
