"""The reverse pass: graph -> forward and backward assignments (data, not strings).

Walks the graph once forwards (every node's line) and once backwards in reverse
topological order, applying each node's rule and accumulating adjoints: the first
contribution to ``grad_x`` is an assignment, later ones (fan-out) are ``+=``. Only nodes
that depend on a ``wrt`` input get adjoints. Cost is linear in the size of the graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sympy as sp
from sympy.codegen.ast import AddAugmentedAssignment, Assignment

from ..expression.arrays import colsum, expr_shape, rowsum, total
from ..graph import Graph, Node, node_expr
from .registry import NodeView, lookup

__all__ = ["Program", "differentiate", "tidy"]


@dataclass(frozen=True)
class Program:
    """Flat code of a value and its gradient, as SymPy assignment objects.

    ``shapes`` (matrix models) gives the shape of every matrix-valued name, a node's value
    and its adjoint alike (rows may be the batch-size symbol). A name keeps its shape: an
    assignment of a smaller value broadcasts it, as NumPy's ``a[...] = value`` does into a
    preallocated array. ``grad_s1 = grad_s2`` below ``s2 = sum(s1)`` fills ``grad_s1``,
    whose shape is ``s1``'s, with the scalar ``grad_s2``; a runner of the program (the
    compiled loop, the NumPy tier, the trace) stores it so.

    ``edges[k]`` says where ``backward[k]`` comes from: ``(consumer, input)``, the node whose
    rule gave the line and the input node whose adjoint it is (``consumer`` is None for the
    seed ``grad_<output> = 1`` and a zero gradient). Programs joined by hand (forward, backward
    and tangent lines) leave it empty.
    """

    forward: list[Assignment]
    backward: list[Assignment | AddAugmentedAssignment]
    output: sp.Symbol
    grads: list[sp.Symbol]
    edges: list[tuple[Node | None, Node]] = field(default_factory=list, compare=False)
    shapes: Mapping[sp.Symbol, tuple] = field(default_factory=dict, compare=False)


def grad_symbol(node: Node) -> sp.Symbol:
    return sp.Symbol(f"grad_{node.name}")


def differentiate(graph: Graph, wrt: Sequence[Node]) -> Program:
    """Forward lines for every node and backward lines for the gradient w.r.t. ``wrt``."""
    for node in graph.nodes:
        if not node.is_input:
            lookup(node.op)
    forward = [Assignment(n.var, node_expr(n)) for n in graph.nodes if not n.is_input]

    wanted = {n.id for n in wrt}
    depends: set[int] = set()
    for node in graph.nodes:
        if getattr(node.op, "_symgrad_constant", False):
            continue  # random or otherwise not a function of its inputs (dropout masks)
        if node.id in wanted or any(isinstance(i, Node) and i.id in depends for i in node.inputs):
            depends.add(node.id)

    out = graph.output
    local: list[tuple[Node, tuple]] = []
    reached = {out.id}
    with sp.evaluate(False):  # once: entering it clears SymPy's cache
        for node in reversed(graph.nodes):
            if node.is_input or node.id not in reached:
                continue
            view = NodeView(node.op, tuple(_arg(i) for i in node.inputs), node.shape, node.dtype,
                            tuple(_shape(i) for i in node.inputs))
            adjoints = lookup(node.op).fn(view, node.var, grad_symbol(node))
            local.append((node, adjoints))
            for inp, adj in zip(node.inputs, adjoints, strict=True):
                if adj is not None and isinstance(inp, Node) and inp.id in depends:
                    reached.add(inp.id)

    shapes = {}
    for node in graph.nodes:
        if node.shape:
            shapes[node.var] = shapes[grad_symbol(node)] = node.shape
    backward: list = [Assignment(grad_symbol(out), sp.Float(1.0))]
    edges: list[tuple[Node | None, Node]] = [(None, out)]
    has_grad = {out.id}
    for node, adjoints in local:
        if node.id not in has_grad:
            continue
        for inp, adj in zip(node.inputs, adjoints, strict=True):
            if adj is None or not isinstance(inp, Node) or inp.id not in depends:
                continue
            adj = tidy(adj)
            if adj == 0:
                continue
            if shapes:
                adj = unbroadcast(adj, inp.shape, shapes)
            target = grad_symbol(inp)
            if inp.id in has_grad:
                backward.append(AddAugmentedAssignment(target, adj))
            else:
                backward.append(Assignment(target, adj))
                has_grad.add(inp.id)
            edges.append((node, inp))
    for node in wrt:
        if node.id not in has_grad:
            backward.append(Assignment(grad_symbol(node), sp.Float(0.0)))
            edges.append((None, node))
    return Program(forward, backward, out.var, [grad_symbol(n) for n in wrt], edges, shapes)


def unbroadcast(adj: sp.Basic, shape: tuple, shapes: dict) -> sp.Basic:
    """Sum an adjoint over the axes its input was broadcast along (a bias row, a scalar).

    An adjoint smaller than its input (a scalar, a column) is left as is: assigning it
    broadcasts it (see :class:`Program`).
    """
    got = expr_shape(adj, shapes)
    if got == shape or got == ():
        return adj
    if shape == ():
        return total(adj)
    if shape[0] == 1 and got[0] != 1:
        adj = colsum(adj)
    if shape[1] == 1 and got[1] != 1:
        adj = rowsum(adj)
    return adj


def _shape(operand) -> tuple:
    return operand.shape if isinstance(operand, Node) else ()


def _arg(operand):
    return operand.var if isinstance(operand, Node) else operand


def tidy(expr: sp.Basic) -> sp.Basic:
    """Fold numbers, drop ``*1`` and ``+0``, flatten nested sums and products, keep the order.

    Adjoints are built unevaluated so they print as the rule wrote them; this pass removes
    only what is trivially redundant, so a rule's ``grad_out*(1 - out)*out`` stays that way.
    """
    if not expr.args or isinstance(expr, (sp.Symbol, sp.Number)):
        return expr
    args = [tidy(a) for a in expr.args]
    if isinstance(expr, sp.Mul):
        return _tidy_mul(args)
    if isinstance(expr, sp.Add):
        return _tidy_add(args)
    if isinstance(expr, sp.Pow):
        base, exp = args
        if exp == 1:
            return base
        if exp == 0:
            return sp.S.One
        if base.is_Number and exp.is_Number:
            folded = base**exp
            if folded.is_Number:
                return folded
        return sp.Pow(base, exp, evaluate=False)
    if all(a is b for a, b in zip(args, expr.args)):
        return expr
    try:
        return expr.func(*args, evaluate=False)
    except TypeError:  # classes without an evaluate option (ExprCondPair) do not simplify
        return expr.func(*args)


def _tidy_mul(args):
    coeff, factors = sp.S.One, []
    for a in args:
        for f in a.args if isinstance(a, sp.Mul) else (a,):
            if f.is_Number:
                coeff *= f
            else:
                factors.append(f)
    if coeff == 0 or not factors:
        return coeff
    if coeff != 1:
        factors.insert(0, coeff)
    return factors[0] if len(factors) == 1 else sp.Mul(*factors, evaluate=False)


def _tidy_add(args):
    const, terms = sp.S.Zero, []
    for a in args:
        for t in a.args if isinstance(a, sp.Add) else (a,):
            if t.is_Number:
                const += t
            else:
                terms.append(t)
    if const != 0:
        terms.insert(0, const)
    if not terms:
        return sp.S.Zero
    return terms[0] if len(terms) == 1 else sp.Add(*terms, evaluate=False)
