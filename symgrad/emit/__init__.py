"""Emit layer: SymPy printer subclass + templates -> source text of a generated module."""

from .module import FAST_MATH_NAMES, GeneratedModule, render, render_trainer
from .printer import FlatCodePrinter

__all__ = ["FAST_MATH_NAMES", "FlatCodePrinter", "GeneratedModule", "render", "render_trainer"]
