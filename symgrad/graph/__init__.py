"""Graph layer: the DAG IR (nodes with op, inputs, shape, dtype, name) and its builder."""

from .build import build, is_constant
from .ir import Graph, Identity, Node, Operand, node_expr
from .names import GENERATED_CODE_NAMES, NameAllocator, identifier

__all__ = [
    "GENERATED_CODE_NAMES",
    "Graph",
    "Identity",
    "NameAllocator",
    "Node",
    "Operand",
    "build",
    "identifier",
    "is_constant",
    "node_expr",
]
