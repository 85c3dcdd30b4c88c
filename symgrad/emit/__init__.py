"""Emit layer: SymPy printer subclass + templates -> source text of a generated module."""

from .module import GeneratedModule, render
from .printer import FlatCodePrinter

__all__ = ["FlatCodePrinter", "GeneratedModule", "render"]
