"""Errors symgrad raises. Every message names the problem and the fix."""

from __future__ import annotations


class SymgradError(Exception):
    """Base class of every error symgrad raises on purpose."""


class ExpressionError(SymgradError, TypeError):
    """The object handed to symgrad is not an expression it can differentiate."""


class UnsupportedFunctionError(SymgradError, NotImplementedError):
    """An expression uses a function that has no derivative rule."""


class InputError(SymgradError, ValueError):
    """Argument values passed to a compiled function are missing, extra or invalid."""


class ShapeError(SymgradError, ValueError):
    """Operands of an operation have shapes that do not fit together."""


class CompileError(SymgradError, RuntimeError):
    """Numba rejected a generated module (a symgrad bug: please report it with the file)."""


class ModelFileError(InputError):
    """A saved model file cannot be loaded: damaged, truncated or edited, written by a newer
    symgrad, or using a function whose ``@symgrad.rule`` is not registered."""


class NotSupportedError(SymgradError, NotImplementedError):
    """A feature symgrad does not offer for this object (the message says what to use)."""
