"""Rules layer: the derivative-rule registry, the scalar rules and the reverse pass."""

from . import arrays as _arrays  # noqa: F401  (registers the built-in rules)
from . import scalar as _scalar  # noqa: F401
from .registry import NodeView, Rule, lookup, registered, rule
from .reverse import Program, differentiate, grad_symbol, tidy

__all__ = [
    "NodeView",
    "Program",
    "Rule",
    "differentiate",
    "grad_symbol",
    "lookup",
    "registered",
    "rule",
    "tidy",
]
