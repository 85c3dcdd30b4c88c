"""Lowering: a SymPy expression built from matrices -> the form the graph layer builds from.

:func:`lower` walks the expression once (memoized, so shared subexpressions are lowered
once) and returns a scalar-looking expression in which every ``MatrixSymbol`` is a
``Symbol`` with a known shape, element-wise arithmetic is ordinary ``Add``/``Mul``/``Pow``/
function application, and every other operation is an :class:`~.ops.ArrayOp`. Shapes are
checked on the way, each by its operation's rule (``ops.py``) or by broadcasting
(``shapes.py``), with errors that name the operation and both shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp
from sympy.matrices.expressions import (
    HadamardPower,
    HadamardProduct,
    MatAdd,
    MatMul,
    MatrixExpr,
    MatrixSymbol,
    OneMatrix,
    Transpose,
    ZeroMatrix,
)
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from ...errors import ExpressionError, ShapeError
from ..validate import check_constants
from .ops import ArrayOp, colsum, matmul, rowsum, transpose
from .shapes import Shape, broadcast_all, dim, fmt
from .wrappers import Elementwise, _MatrixOp

__all__ = ["Lowered", "is_array_expression", "lower", "matrix_shape"]


@dataclass
class Lowered:
    """A lowered expression, the shape of each matrix symbol in it, and its batch symbol."""

    expr: sp.Expr
    shapes: dict[sp.Symbol, Shape] = field(default_factory=dict)
    matrices: dict[MatrixSymbol, sp.Symbol] = field(default_factory=dict)
    batch: sp.Symbol | None = None


def is_array_expression(expr) -> bool:
    """True when ``expr`` contains a matrix anywhere (so it takes the matrix path)."""
    if isinstance(expr, MatrixExpr):
        return True
    return isinstance(expr, sp.Basic) and any(
        isinstance(a, MatrixExpr) for a in sp.preorder_traversal(expr))


def lower(expr: sp.Basic) -> Lowered:
    """Lower a scalar expression built from matrices (see the module docstring)."""
    lowering = _Lowering()
    lowered, shape = lowering.visit(expr)
    if shape != ():
        raise ExpressionError(f"the loss has shape {fmt(shape)}; reduce it to a scalar "
                              "(symgrad.sum, symgrad.mean or a loss such as "
                              "symgrad.softmax_cross_entropy).")
    check_constants(lowered)
    lowering.out.expr = lowered
    return lowering.out


def matrix_shape(expr: MatrixExpr) -> Shape:
    """The shape of a matrix expression as symgrad computes it, bias rows broadcast.

    SymPy gives a sum the shape of its first term, and sorts a bias row first in
    ``softmax(X) + b``: its ``.shape`` is ``b``'s (1, k), where the sum is (n, k).
    """
    return _Lowering().visit(expr)[1]


class _Lowering:
    """One walk of :func:`lower`: each ``lower_*`` method returns (lowered form, shape)."""

    def __init__(self) -> None:
        self.out = Lowered(sp.S.Zero)
        self.memo: dict[sp.Basic, tuple[sp.Basic, Shape]] = {}
        self.names: dict[str, sp.Basic] = {}  # a name is one matrix or one scalar symbol

    def visit(self, e) -> tuple[sp.Basic, Shape]:
        found = self.memo.get(e)
        if found is None:
            found = self.memo[e] = self.lower_one(e)
        return found

    def lower_one(self, e) -> tuple[sp.Basic, Shape]:
        if isinstance(e, MatrixSymbol):
            return self.lower_leaf(e)
        if isinstance(e, MatrixExpr):
            return self.lower_matrix(e)
        if isinstance(e, ArrayOp):
            args, shapes = self.operands(e.args)
            return type(e)(*args), type(e).shape_of(*shapes, what=f"{type(e).__name__}(...)")
        if not e.args or isinstance(e, (sp.Symbol, sp.Number)):
            if isinstance(e, sp.Symbol) and e.name in self.names and self.names[e.name] != e:
                raise ExpressionError(f"the name {e.name!r} is used by a matrix and a scalar "
                                      "symbol; rename one of them.")
            self.names.setdefault(getattr(e, "name", str(e)), e)
            return e, ()
        if any(isinstance(a, MatrixExpr) for a in e.args):
            fname = getattr(e.func, "__name__", str(e.func))
            raise ExpressionError(
                f"{fname}(...) has a matrix argument, which SymPy treats as a scalar. For an "
                f"entry-wise function write symgrad.elementwise({fname}, M) (symgrad.tanh, "
                "symgrad.sigmoid, ... do this); reduce a matrix to a scalar with symgrad.sum, "
                "symgrad.mean or a loss.")
        args = [self.visit(a)[0] for a in e.args]
        return e.func(*args), ()

    def lower_leaf(self, m: MatrixSymbol) -> tuple[sp.Symbol, Shape]:
        """A matrix becomes a real symbol with its shape; its one size symbol is the batch."""
        out = self.out
        shape = tuple(dim(d) for d in m.shape)
        for d in shape:
            if not isinstance(d, int):
                if not isinstance(d, sp.Symbol):
                    raise ShapeError(f"matrix {m.name} has the dimension {d}; dimensions must be "
                                     "numbers or one symbol (the batch size).")
                if out.batch is None:
                    out.batch = d
                elif d != out.batch:
                    raise ShapeError(f"matrix {m.name} uses the size symbol {d}, another one "
                                     f"than {out.batch}; a model has one batch-size symbol.")
        if not isinstance(shape[1], int):
            raise ShapeError(f"matrix {m.name} has shape {fmt(shape)}: the batch size must be "
                             "the number of rows (one row per sample), not of columns.")
        if self.names.get(m.name, m) != m:
            raise ExpressionError(f"two different matrices are named {m.name!r}; give each "
                                  "its own name.")
        self.names[m.name] = m
        s = sp.Symbol(m.name, real=True)
        out.shapes[s] = shape
        out.matrices[m] = s
        return s, shape

    def lower_matrix(self, e: MatrixExpr) -> tuple[sp.Basic, Shape]:
        if isinstance(e, (OneMatrix, ZeroMatrix)):
            return (sp.S.One if isinstance(e, OneMatrix) else sp.S.Zero), ()
        if isinstance(e, MatAdd):
            args, shapes = self.operands(e.args)
            return sp.Add(*args), broadcast_all(shapes, _Lazy(lambda: f"sum {_short(e)}"))
        if isinstance(e, HadamardProduct):
            args, shapes = self.operands(e.args)
            what = _Lazy(lambda: f"entry-wise product {_short(e)}")
            return sp.Mul(*args), broadcast_all(shapes, what)
        if isinstance(e, HadamardPower):
            base, shape = self.visit(e.args[0])
            power, _ = self.visit(e.args[1])
            return sp.Pow(base, power), shape
        if isinstance(e, Transpose):
            a, shape = self.visit(e.args[0])
            return transpose(a), transpose.shape_of(shape)
        if isinstance(e, MatMul):
            return self.lower_product(e)
        if isinstance(e, ElementwiseApplyFunction):
            return self.lower_elementwise(e.function, [e.expr], e)
        if isinstance(e, Elementwise):
            return self.lower_elementwise(e.function, list(e.matrices), e)
        if isinstance(e, _MatrixOp):
            args, shapes = self.operands(e.args)
            return e.lowered(*args), e.lowered.shape_of(*shapes)
        raise ExpressionError(f"symgrad does not support the matrix operation "
                              f"{type(e).__name__} (in {_short(e)}).")

    def lower_product(self, e: MatMul) -> tuple[sp.Basic, Shape]:
        """A chain of matrix products; ``M @ ones(c, 1)`` is a row sum and
        ``ones(1, r) @ M`` a column sum."""
        coeff = [a for a in e.args if not isinstance(a, MatrixExpr)]
        mats = [a for a in e.args if isinstance(a, MatrixExpr)]
        result, shape = None, ()
        k = 0
        while k < len(mats):
            m = mats[k]
            if isinstance(m, OneMatrix) and result is not None and m.shape[1] == 1:
                result, shape = rowsum(result), rowsum.shape_of(shape)
            elif (isinstance(m, OneMatrix) and result is None and m.shape[0] == 1
                  and k + 1 < len(mats)):
                nxt, nshape = self.visit(mats[k + 1])
                if m.shape[1] != nshape[0]:
                    matmul.shape_of(tuple(map(dim, m.shape)), nshape, what=_Lazy(lambda: _short(e)))
                result, shape = colsum(nxt), colsum.shape_of(nshape)
                k += 1
            elif isinstance(m, OneMatrix):
                raise ExpressionError(
                    f"in {_short(e)}: a OneMatrix broadcast is supported only as an operand of "
                    "a sum or entry-wise product (or write X*W + b and let b broadcast).")
            else:
                a, ashape = self.visit(m)
                if result is None:
                    result, shape = a, ashape
                else:
                    shape = matmul.shape_of(shape, ashape, what=_Lazy(lambda: _short(e)))
                    result = matmul(result, a)
            k += 1
        if coeff:
            result = sp.Mul(*[self.visit(c)[0] for c in coeff], result)
        return result, shape

    def lower_elementwise(self, function: sp.Lambda, matrices, e) -> tuple[sp.Basic, Shape]:
        """``function``'s body with the lowered matrices in place of its variables."""
        args, shapes = self.operands(matrices)
        shape = broadcast_all(shapes, _Lazy(lambda: f"element-wise {_short(e)}"))
        if len(function.variables) != len(args):
            raise ExpressionError(f"element-wise function {function} takes "
                                  f"{len(function.variables)} arguments, got {len(args)}.")
        body = function.expr.xreplace(dict(zip(function.variables, args)))
        return body, shape

    def operands(self, args) -> tuple[list[sp.Basic], list[Shape]]:
        parts = [self.broadcast_operand(a) for a in args]
        return [p for p, _ in parts], [s for _, s in parts]

    def broadcast_operand(self, a) -> tuple[sp.Basic, Shape]:
        """``OneMatrix(r, 1)*b`` (or ``c*OneMatrix(1, k)``), with any scalar factors
        (``2*OneMatrix(r, 1)*b``, SymPy's ``1*b + 1*b``), inside an element-wise operation
        is just ``b`` (``c``): NumPy broadcasting does the rest."""
        mats = [f for f in a.args if isinstance(f, MatrixExpr)] if isinstance(a, MatMul) else []
        if len(mats) == 2:
            left, right = mats
            if (isinstance(left, OneMatrix) and left.shape[1] == 1
                    and isinstance(right, MatrixExpr) and right.shape[0] == 1):
                b, shape = self.visit(right)
                return self.scaled(a, b), matmul.shape_of(tuple(map(dim, left.shape)), shape)
            if (isinstance(right, OneMatrix) and right.shape[0] == 1
                    and isinstance(left, MatrixExpr) and left.shape[1] == 1):
                b, shape = self.visit(left)
                return self.scaled(a, b), matmul.shape_of(shape, tuple(map(dim, right.shape)))
        return self.visit(a)

    def scaled(self, product: MatMul, b: sp.Basic) -> sp.Basic:
        """``b`` times the scalar factors of ``product``."""
        coeff = [self.visit(f)[0] for f in product.args if not isinstance(f, MatrixExpr)]
        return sp.Mul(*coeff, b) if coeff else b


class _Lazy:
    """Text built only if an error message needs it (printing an expression is costly)."""

    def __init__(self, make) -> None:
        self.make = make

    def __str__(self) -> str:
        return self.make()


def _short(e, limit: int = 50) -> str:
    text = sp.sstr(e)
    return text if len(text) <= limit else text[: limit - 3] + "..."
