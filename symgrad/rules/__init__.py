"""Rules layer: the derivative-rule registry, the scalar rules, the reverse pass and its
tangent (second order, forward over reverse)."""

from . import arrays as _arrays  # noqa: F401  (registers the built-in rules)
from . import scalar as _scalar  # noqa: F401
from .registry import NodeView, Rule, lookup, registered, rule
from .reverse import Program, differentiate, grad_symbol, tidy
from .tangent import Tangent, linearize, tangent_symbol

__all__ = [
    "NodeView",
    "Program",
    "Rule",
    "Tangent",
    "differentiate",
    "grad_symbol",
    "linearize",
    "lookup",
    "registered",
    "rule",
    "tangent_symbol",
    "tidy",
]
