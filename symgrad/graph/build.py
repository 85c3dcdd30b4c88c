"""SymPy expression -> :class:`~symgrad.graph.ir.Graph`.

One iterative post-order walk (no recursion, so depth 1,000 and beyond is fine) memoized on
the SymPy node, which makes shared subexpressions one node. n-ary ``Add``/``Mul``/``Max``/
``Min``/``And``/``Or`` are split into binary nodes in a canonical order: constants first,
then computed values in the order they were built, then inputs in the order they were met.
Binary nodes are hash-consed, so when SymPy flattens ``x_k + t_k`` into one long sum at every
level of a recursion, the partial sums of the level below are reused instead of rebuilt.
"""

from __future__ import annotations

import sympy as sp
from sympy.logic.boolalg import Boolean, BooleanAtom

from .ir import Graph, Identity, Node, Operand
from .names import NameAllocator

__all__ = ["build"]

_NARY = (sp.Add, sp.Mul, sp.Max, sp.Min, sp.And, sp.Or)


def is_constant(expr: sp.Basic) -> bool:
    """True for values known before any input is: numbers, ``pi``, ``E``, ``oo``, ``true``."""
    return bool(expr.is_Number) or isinstance(expr, (sp.NumberSymbol, BooleanAtom)) or (
        expr in (sp.oo, -sp.oo)
    )


def _operands(expr: sp.Basic) -> tuple[sp.Basic, ...]:
    if isinstance(expr, sp.Piecewise):
        return tuple(part for pair in expr.args for part in pair.args)
    return expr.args


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.inputs: list[Node] = []
        self._consed: dict[tuple, Node] = {}

    def node(self, op: type, inputs: tuple[Operand, ...]) -> Node:
        key = (op, tuple(("n", i.id) if isinstance(i, Node) else ("c", i) for i in inputs))
        found = self._consed.get(key)
        if found is None:
            boolean = issubclass(op, (Boolean, sp.core.relational.Relational))
            dtype = "bool" if boolean else "float64"
            found = Node(len(self.nodes), op, inputs, (), dtype)
            self.nodes.append(found)
            self._consed[key] = found
        return found

    def leaf(self, symbol: sp.Symbol) -> Node:
        node = Node(len(self.nodes), sp.Symbol, (), (), "float64", symbol=symbol)
        self.nodes.append(node)
        self.inputs.append(node)
        return node

    def combine(self, expr: sp.Basic, ops: list[Operand]) -> Operand:
        if all(not isinstance(o, Node) for o in ops):
            return expr
        if isinstance(expr, _NARY):
            ordered = sorted(ops, key=_order)
            acc = ordered[0]
            for operand in ordered[1:]:
                acc = self.node(type(expr), (acc, operand))
            return acc
        op = sp.Piecewise if isinstance(expr, sp.Piecewise) else type(expr)
        return self.node(op, tuple(ops))


def _order(operand: Operand) -> tuple[int, int]:
    if not isinstance(operand, Node):
        return (0, 0)
    return (2 if operand.is_input else 1, operand.id)


def build(expr: sp.Basic, output_name: str = "L") -> Graph:
    """Build the graph of a validated scalar expression; the output node gets ``output_name``."""
    b = _Builder()
    memo: dict[sp.Basic, Operand] = {}
    stack: list[tuple[sp.Basic, bool]] = [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if e in memo:
            continue
        if ready:
            memo[e] = b.combine(e, [memo[a] for a in _operands(e)])
        elif isinstance(e, sp.Symbol):
            memo[e] = b.leaf(e)
        elif is_constant(e):
            memo[e] = e
        else:
            stack.append((e, True))
            stack.extend((a, False) for a in reversed(_operands(e)) if a not in memo)
    root = memo[expr]
    if not isinstance(root, Node) or root.is_input:
        root = b.node(Identity, (root,))
    return _named(b, root, output_name)


def _named(b: _Builder, root: Node, output_name: str) -> Graph:
    names = NameAllocator()
    for node in b.inputs:
        node.name = names.take(node.symbol.name)
    root.name = names.take(output_name)
    k = 0
    for node in b.nodes:
        if not node.name:
            node.name = f"s{k}"
            k += 1
    return Graph(nodes=b.nodes, output=root, inputs=b.inputs)
