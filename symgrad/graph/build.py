"""SymPy expression -> :class:`~symgrad.graph.ir.Graph`.

One iterative post-order walk (no recursion, so depth 1,000 and beyond is fine) memoized on
the SymPy node, which makes shared subexpressions one node. n-ary ``Add``/``Mul``/``Max``/
``Min``/``And``/``Or`` are split into binary nodes in a canonical order: constants first,
then computed values in the order they were built, then inputs in the order they were met;
except ``Max``/``Min`` of three or more, which stay one node (operands in that order), so
that a tie among all of them shares the gradient evenly (``rules/scalar.py``).
Binary nodes are hash-consed. SymPy flattens ``x_k + t_k`` into one long sum at every level
of a recursion; to keep such graphs linear, a sum (or product) whose operands are those of an
earlier one plus its newest operand reuses the earlier node, and one that differs from an
earlier one only in its constant term reuses it too (``x - 2`` stays ``s + (-2)``).
"""

from __future__ import annotations

from operator import attrgetter

import sympy as sp
from sympy.logic.boolalg import Boolean, BooleanAtom

from ..expression.arrays import result_shape
from .ir import Graph, Identity, Node, Operand
from .names import NameAllocator

__all__ = ["build"]

_NARY = (sp.Add, sp.Mul, sp.Max, sp.Min, sp.And, sp.Or)


def is_constant(expr: sp.Basic) -> bool:
    """True for values known before any input is: numbers, ``pi``, ``E``, ``oo``, ``true``."""
    return bool(expr.is_Number) or isinstance(expr, (sp.NumberSymbol, BooleanAtom)) or (
        expr in (sp.oo, -sp.oo)
    )


def _negated_sum(expr: sp.Basic) -> sp.Basic | None:
    """``-(a + b)`` for a sum SymPy stored as ``-a - b``, so the graph negates once, not per term.

    SymPy distributes a minus sign over a sum; the lecture's gate chain (and fewer nodes) want
    the sum built first and negated after.
    """
    if isinstance(expr, sp.Add) and all(a.could_extract_minus_sign() for a in expr.args):
        return sp.Mul(-1, sp.Add(*[-a for a in expr.args]), evaluate=False)
    return None


def _operands(expr: sp.Basic) -> tuple[sp.Basic, ...]:
    if isinstance(expr, sp.Piecewise):
        return tuple(part for pair in expr.args for part in pair.args)
    return expr.args


class _Builder:
    def __init__(self, shapes: dict | None = None) -> None:
        self.shapes = shapes or {}
        self.nodes: list[Node] = []
        self.inputs: list[Node] = []
        self._consed: dict[tuple, Node] = {}
        self._sums: dict[tuple[type, frozenset], Operand] = {}
        self._by_terms: dict[tuple[type, frozenset], tuple[Operand, sp.Basic]] = {}

    def node(self, op: type, inputs: tuple[Operand, ...]) -> Node:
        key = (op, tuple(_key(i) for i in inputs))
        found = self._consed.get(key)
        if found is None:
            boolean = issubclass(op, (Boolean, sp.core.relational.Relational))
            dtype = "bool" if boolean else "float64"
            shape = ()
            if self.shapes:
                shape = result_shape(op, [i.shape if isinstance(i, Node) else () for i in inputs])
            found = Node(len(self.nodes), op, inputs, shape, dtype)
            self.nodes.append(found)
            self._consed[key] = found
        return found

    def leaf(self, symbol: sp.Symbol) -> Node:
        node = Node(len(self.nodes), sp.Symbol, (), self.shapes.get(symbol, ()), "float64",
                    symbol=symbol)
        self.nodes.append(node)
        self.inputs.append(node)
        return node

    def combine(self, expr: sp.Basic, ops: list[Operand]) -> Operand:
        if all(not isinstance(o, Node) for o in ops):
            return expr
        if isinstance(expr, (sp.Max, sp.Min)) and len(ops) > 2:
            return self.node(type(expr), tuple(_canonical(ops)[0]))  # ties split evenly
        if isinstance(expr, _NARY):
            return self.nary(type(expr), ops)
        op = sp.Piecewise if isinstance(expr, sp.Piecewise) else type(expr)
        return self.node(op, tuple(ops))


    def nary(self, op: type, ops: list[Operand]) -> Operand:
        """Split an n-ary operation into binary nodes, reusing earlier partial results."""
        ordered, keys = _canonical(ops)
        const = ordered[0] if not isinstance(ordered[0], Node) else None
        terms = keys[1:] if const is not None else keys
        newest = ordered[-1]
        result = None
        if len(ordered) > 2:
            earlier = self._sums.get((op, frozenset(keys[:-1])))
            if earlier is not None:
                result = self.node(op, (earlier, newest))
        if result is None and const is not None and op in (sp.Add, sp.Mul):
            found = self._by_terms.get((op, frozenset(terms)))
            if found is None and len(terms) > 1:
                found = self._by_terms.get((op, frozenset(terms[:-1])))
                if found is not None and found[1] is not None:
                    found = (self.node(op, (found[0], newest)), found[1])
                    self._remember(op, found[0], found[1], terms)
                else:
                    found = None
            if found is not None:
                result = self._with_constant(op, *found, const)
        if result is None:
            result = ordered[0]
            for operand in ordered[1:]:
                result = self.node(op, (result, operand))
        self._remember(op, result, const, terms)
        return result

    def _remember(self, op, result, const, terms) -> None:
        keys = [*terms, _key(const)] if const is not None else terms
        self._sums.setdefault((op, frozenset(keys)), result)
        self._by_terms.setdefault((op, frozenset(terms)), (result, const))

    def _with_constant(self, op, earlier, earlier_const, const) -> Operand:
        """``earlier`` (terms combined with ``earlier_const``) adjusted to carry ``const``."""
        identity = sp.S.Zero if op is sp.Add else sp.S.One
        c = identity if const is None else const
        c0 = identity if earlier_const is None else earlier_const
        delta = c - c0 if op is sp.Add else c / c0
        if delta == identity:
            return earlier
        return self.node(op, (delta, earlier))


def _canonical(ops: list[Operand]) -> tuple[list[Operand], list]:
    """Operands in the canonical order: constants, computed values, inputs (the last two in
    the order they were built; sorting by an attrgetter: no Python call per operand, and
    W5's sums make this O(depth^2)), and their hash-consing keys."""
    consts, computed, inputs = [], [], []
    for o in ops:
        if not isinstance(o, Node):
            consts.append(o)
        elif o.symbol is None:
            computed.append(o)
        else:
            inputs.append(o)
    computed.sort(key=_ID)
    inputs.sort(key=_ID)
    keys = [("c", o) for o in consts] + [o.id for o in computed] + [o.id for o in inputs]
    return consts + computed + inputs, keys


def _key(operand: Operand) -> int | tuple:
    """Hash-consing key: a node's id (cheap to hash), a constant as ``("c", value)``."""
    return operand.id if isinstance(operand, Node) else ("c", operand)


_ID = attrgetter("id")


def build(expr: sp.Basic, output_name: str = "L", shapes: dict | None = None) -> Graph:
    """Build the graph of a validated scalar expression; the output node gets ``output_name``.

    ``shapes`` gives the shape of each matrix symbol of a lowered matrix expression (see
    ``symgrad.expression.arrays.lower``); every node then carries its shape.
    """
    b = _Builder(shapes)
    memo: dict[sp.Basic, Operand] = {}
    rewritten: dict[sp.Basic, sp.Basic] = {}
    stack: list[tuple[sp.Basic, bool]] = [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if e in memo:
            continue
        if ready:
            target = rewritten.get(e, e)
            memo[e] = b.combine(target, [memo[a] for a in _operands(target)])
        elif isinstance(e, sp.Symbol):
            memo[e] = b.leaf(e)
        elif is_constant(e):
            memo[e] = e
        else:
            target = _negated_sum(e)
            if target is not None:
                rewritten[e] = target
            else:
                target = e
            stack.append((e, True))
            stack.extend((a, False) for a in reversed(_operands(target)) if a not in memo)
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
