"""Emit layer: SymPy printer subclass + templates -> source text of a generated module; and
the value of a printed line computed from its SymPy form (``evaluate_line``)."""

from .interpret import evaluate_line
from .module import FAST_MATH_NAMES, GeneratedModule, render, render_trainer
from .printer import FlatCodePrinter

__all__ = ["FAST_MATH_NAMES", "FlatCodePrinter", "GeneratedModule", "evaluate_line", "render",
           "render_trainer"]
