"""The operations on whole arrays that are not element-wise, each with its shape rule.

These are the lowered form's functions (and what listings print): ``matmul``, ``transpose``,
``rowsum``, ``colsum``, ``total``, ``sqnorm``, ``softmax``, ``log_softmax``,
``softmax_cross_entropy`` and ``dropout_mask``. Each knows its result's shape in one place,
its classmethod ``shape_of(*operand_shapes)``, which raises ``ShapeError`` naming the
operation and the shapes when they do not fit. :func:`result_shape` is the shape of any
lowered node (an op's rule, or NumPy broadcasting for element-wise ones) and
:func:`expr_shape` that of a whole lowered expression: lowering, the graph builder, the
reverse pass and the emitter all ask these.
"""

from __future__ import annotations

import sympy as sp

from ...errors import ShapeError
from .shapes import Shape, broadcast_all, fmt

__all__ = [
    "ArrayOp", "colsum", "dropout_mask", "expr_shape", "log_softmax", "matmul", "result_shape",
    "rowsum", "softmax", "softmax_cross_entropy", "sqnorm", "total", "transpose",
]


class ArrayOp(sp.Function):
    """An operation on whole arrays that is not element-wise (it has its own rule and kernel)."""

    _symgrad_array_op = True
    _latex_name = ""

    @classmethod
    def shape_of(cls, *shapes: Shape, what=None) -> Shape:
        """The result's shape for operands of ``shapes``; ``ShapeError`` naming ``what``
        (default: the operation's name) when they do not fit."""
        raise NotImplementedError(cls.__name__)

    def _latex(self, printer):
        args = ", ".join(printer._print(a) for a in self.args)
        name = self._latex_name or r"\operatorname{" + type(self).__name__.replace("_", r"\_") + "}"
        return f"{name}\\left({args}\\right)"


def _matrix(cls, shape: Shape, what) -> Shape:
    """``shape``, which must be a matrix's: ``cls`` works on rows and columns."""
    if shape == ():
        raise ShapeError(f"{what or cls.__name__} takes a matrix, got a scalar.")
    return shape


class matmul(ArrayOp):
    """Matrix product ``a @ b``."""

    nargs = 2

    @classmethod
    def shape_of(cls, a, b, what=None):
        name = what or cls.__name__
        if a == () or b == ():
            raise ShapeError(f"matrix product {name}: an operand is a scalar; use * with a "
                             "scalar only as a coefficient.")
        if a[1] != b[0]:
            raise ShapeError(f"matrix product {name}: shapes {fmt(a)} and {fmt(b)} do not fit "
                             f"(the left has {a[1]} columns, the right {b[0]} rows).")
        return (a[0], b[1])


class transpose(ArrayOp):
    """``a.T``."""

    nargs = 1

    @classmethod
    def shape_of(cls, a, what=None):
        rows, cols = _matrix(cls, a, what)
        return (cols, rows)


class rowsum(ArrayOp):
    """Sum over each row, keeping the axis: ``sum(a, axis=1)``, shape (rows, 1)."""

    nargs = 1

    @classmethod
    def shape_of(cls, a, what=None):
        return (_matrix(cls, a, what)[0], 1)


class colsum(ArrayOp):
    """Sum over each column, keeping the axis: ``sum(a, axis=0)``, shape (1, cols)."""

    nargs = 1

    @classmethod
    def shape_of(cls, a, what=None):
        return (1, _matrix(cls, a, what)[1])


class total(ArrayOp):
    """Sum of all entries: a scalar (of a scalar: itself)."""

    nargs = 1
    _latex_name = r"\sum"

    @classmethod
    def shape_of(cls, a, what=None):
        return ()


class sqnorm(ArrayOp):
    """Sum of the squared entries (the L2 penalty, squared Frobenius norm): a scalar."""

    nargs = 1

    @classmethod
    def shape_of(cls, a, what=None):
        return ()

    def _latex(self, printer):
        return r"\left\|" + printer._print(self.args[0]) + r"\right\|_F^2"


class softmax(ArrayOp):
    """Row-wise softmax, computed as exp(a - max)/sum(exp(a - max)) per row."""

    nargs = 1

    @classmethod
    def shape_of(cls, a, what=None):
        return _matrix(cls, a, what)


class log_softmax(ArrayOp):
    """Row-wise log-softmax, computed as a - max - log(sum(exp(a - max))) per row."""

    nargs = 1

    @classmethod
    def shape_of(cls, a, what=None):
        return _matrix(cls, a, what)


class softmax_cross_entropy(ArrayOp):
    """Mean over rows of the cross-entropy between softmax(scores) and target rows (one-hot
    or probabilities), with a stable log-sum-exp; its gradient is (softmax - target)/rows."""

    nargs = 2

    @classmethod
    def shape_of(cls, scores, targets, what=None):
        if scores != targets:
            raise ShapeError(f"softmax_cross_entropy: scores {fmt(scores)} and targets "
                             f"{fmt(targets)} must have the same shape (targets one-hot).")
        _matrix(cls, scores, what)
        return ()


class dropout_mask(ArrayOp):
    """Inverted-dropout mask shaped like ``a``: each entry 1/(1 - p) with probability 1 - p,
    else 0, drawn anew for every training batch; all ones when evaluating."""

    nargs = 2
    _symgrad_constant = True  # no gradient flows through a mask

    @classmethod
    def shape_of(cls, a, p, what=None):
        return _matrix(cls, a, what)


def result_shape(op, shapes: list[Shape], what=None) -> Shape:
    """Shape of ``op`` applied to operands of ``shapes``: an :class:`ArrayOp`'s own rule,
    else NumPy broadcasting (element-wise); ShapeError naming ``what`` if they do not fit."""
    if isinstance(op, type) and issubclass(op, ArrayOp):
        return op.shape_of(*shapes, what=what)
    return broadcast_all(shapes, what or getattr(op, "__name__", str(op)))


def expr_shape(expr: sp.Basic, shapes: dict[sp.Symbol, Shape]) -> Shape:
    """Shape of a lowered expression whose matrix symbols have ``shapes`` (others scalar)."""
    memo: dict[sp.Basic, Shape] = {}

    def visit(e):
        if e in memo:
            return memo[e]
        if isinstance(e, sp.Symbol):
            s = shapes.get(e, ())
        elif not e.args or e.is_Number:
            s = ()
        else:
            s = result_shape(type(e), [visit(a) for a in e.args])
        memo[e] = s
        return s

    return visit(expr)
