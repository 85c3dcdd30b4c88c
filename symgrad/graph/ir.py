"""The DAG the rest of symgrad works on.

A :class:`Node` is one primitive: an operation (the SymPy class it came from, e.g.
``sympy.Mul`` or ``sigmoid``), its inputs (other nodes, or SymPy constants kept inline), a
shape and a dtype. Equal subexpressions become one node, so the graph of a deeply shared
expression stays linear in size even where its tree form is exponential.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp
from sympy.functions.elementary.piecewise import ExprCondPair

__all__ = ["Graph", "Identity", "Node", "Operand", "node_expr"]


class Identity(sp.Function):
    """Copies its argument; gives a name to an output that is an input or a constant."""

    nargs = 1


@dataclass(eq=False)
class Node:
    """One primitive of the graph.

    ``inputs`` holds nodes and SymPy constants (numbers, ``pi``, ``true``) in the order the
    operation takes them. ``name`` is a safe identifier fixed by the builder: the user's
    (sanitized) name for inputs, ``s<k>`` for intermediates, the output name for the output.
    ``symbol`` is the user's symbol for input nodes and ``None`` otherwise. Treat nodes as
    immutable once built.
    """

    id: int
    op: type
    inputs: tuple[Operand, ...]
    shape: tuple[int, ...] = ()
    dtype: str = "float64"
    name: str = ""
    symbol: sp.Symbol | None = None

    @property
    def is_input(self) -> bool:
        return self.symbol is not None

    @property
    def var(self) -> sp.Symbol:
        """The symbol that stands for this node's value in printed code and in rules."""
        return sp.Symbol(self.name)

    def __repr__(self) -> str:
        return f"Node({self.name}: {self.op.__name__}, shape={self.shape}, dtype={self.dtype})"


Operand = Node | sp.Basic


@dataclass
class Graph:
    """Nodes in topological order (every node after its inputs), the output and the inputs."""

    nodes: list[Node]
    output: Node
    inputs: list[Node] = field(default_factory=list)

    def input_nodes(self) -> dict[sp.Symbol, Node]:
        """The input node of each user symbol."""
        return {n.symbol: n for n in self.inputs}

    def __len__(self) -> int:
        return len(self.nodes)


def node_expr(node: Node) -> sp.Basic:
    """The node's operation applied to its input symbols, unevaluated: one printable line."""
    args = tuple(i.var if isinstance(i, Node) else i for i in node.inputs)
    if node.op is sp.Piecewise:
        pairs = [ExprCondPair(args[k], args[k + 1]) for k in range(0, len(args), 2)]
        return sp.Piecewise(*pairs, evaluate=False)
    if node.op is sp.Mul:
        args = tuple(sorted(args, key=lambda a: not a.is_Number))
    return node.op(*args, evaluate=False)
