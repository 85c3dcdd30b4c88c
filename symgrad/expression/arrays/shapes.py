"""Shapes of matrix expressions, and the one rule every element-wise operation shares.

A shape is ``()`` for a scalar or ``(rows, cols)``; the rows of data matrices may be a
symbol (the batch size, bound when the model runs). Element-wise operations broadcast as
NumPy does (:func:`broadcast`); every other operation's rule is its ``ArrayOp``'s
``shape_of`` (``ops.py``), and ``ops.result_shape`` picks the one that applies.
"""

from __future__ import annotations

import sympy as sp

from ...errors import ShapeError

Shape = tuple


def dim(d):
    """A dimension as a Python int when it is a number (a batch-size symbol stays as is)."""
    return int(d) if isinstance(d, (int, sp.Integer)) else d


def fmt(shape: Shape) -> str:
    """A shape as error messages show it: ``scalar`` or ``(n, 2)``."""
    return "scalar" if shape == () else f"({', '.join(str(d) for d in shape)})"


def broadcast(a: Shape, b: Shape, what) -> Shape:
    """The shape of an element-wise operation on ``a`` and ``b`` (NumPy's broadcasting);
    ShapeError naming ``what`` and both shapes when they do not broadcast."""
    if a == ():
        return b
    if b == ():
        return a
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ShapeError(f"{what}: shapes {fmt(a)} and {fmt(b)} do not broadcast (each "
                             "dimension must be equal, or 1 in one of them).")
    return tuple(out)


def broadcast_all(shapes, what) -> Shape:
    """The shape of an element-wise operation on operands of ``shapes`` (a scalar if none)."""
    shape: Shape = ()
    for s in shapes:
        shape = broadcast(shape, s, what)
    return shape
