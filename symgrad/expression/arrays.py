"""Matrix models: what users write with SymPy's ``MatrixSymbol``, and its lowering.

Users write SymPy matrix expressions (``MatrixSymbol``, ``*`` for the matrix product, ``+``
with NumPy-style broadcasting of a bias row, ``.T``, ``HadamardProduct``) plus the helpers
here: element-wise activations, softmax, sums and losses. :func:`lower` turns that into the
form the graph layer builds from: a scalar-looking SymPy expression in which every matrix is
a ``Symbol`` with a known shape, element-wise arithmetic is ordinary ``Add``/``Mul``/``Pow``/
function application (NumPy broadcasting), and every operation that is not element-wise is
one of the :class:`ArrayOp` functions below (``matmul``, ``transpose``, ``rowsum``...). So
element-wise rules are the scalar rules, and one registry serves both.

Shapes are checked here, once, with errors that name the operation and both shapes. A shape
is ``()`` for a scalar or ``(rows, cols)``; the rows of data matrices may be a symbol (the
batch size, bound when the model runs).
"""

from __future__ import annotations

from collections.abc import Callable
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

from ..errors import ExpressionError, ShapeError
from .validate import check_constants

__all__ = [
    "ArrayOp", "Elementwise", "Lowered", "colsum", "dropout", "dropout_mask", "elementwise", "exp",
    "expr_shape", "hinge",
    "is_array_expression", "l1", "l2", "log", "log_softmax", "lower", "matmul", "maxout", "mean",
    "result_shape", "rowsum", "softmax", "softmax_cross_entropy", "sqnorm", "sum", "tanh",
    "total", "transpose",
]

Shape = tuple


# -- operations on whole arrays (the lowered form; also what listings print) ------------------

class ArrayOp(sp.Function):
    """An operation on whole arrays that is not element-wise (it has its own rule and kernel)."""

    _symgrad_array_op = True
    _latex_name = ""

    def _latex(self, printer):
        args = ", ".join(printer._print(a) for a in self.args)
        name = self._latex_name or r"\operatorname{" + type(self).__name__.replace("_", r"\_") + "}"
        return f"{name}\\left({args}\\right)"


class matmul(ArrayOp):
    """Matrix product ``a @ b``."""

    nargs = 2


class transpose(ArrayOp):
    """``a.T``."""

    nargs = 1


class rowsum(ArrayOp):
    """Sum over each row, keeping the axis: ``sum(a, axis=1)``, shape (rows, 1)."""

    nargs = 1


class colsum(ArrayOp):
    """Sum over each column, keeping the axis: ``sum(a, axis=0)``, shape (1, cols)."""

    nargs = 1


class total(ArrayOp):
    """Sum of all entries: a scalar."""

    nargs = 1
    _latex_name = r"\sum"


class sqnorm(ArrayOp):
    """Sum of the squared entries (the L2 penalty, squared Frobenius norm): a scalar."""

    nargs = 1

    def _latex(self, printer):
        return r"\left\|" + printer._print(self.args[0]) + r"\right\|_F^2"


class softmax(ArrayOp):
    """Row-wise softmax, computed as exp(a - max)/sum(exp(a - max)) per row."""

    nargs = 1


class log_softmax(ArrayOp):
    """Row-wise log-softmax, computed as a - max - log(sum(exp(a - max))) per row."""

    nargs = 1


class softmax_cross_entropy(ArrayOp):
    """Mean over rows of the cross-entropy between softmax(scores) and target rows (one-hot
    or probabilities), with a stable log-sum-exp; its gradient is (softmax - target)/rows."""

    nargs = 2


class dropout_mask(ArrayOp):
    """Inverted-dropout mask shaped like ``a``: each entry 1/(1 - p) with probability 1 - p,
    else 0, drawn anew for every training batch; all ones when evaluating."""

    nargs = 2
    _symgrad_constant = True  # no gradient flows through a mask


_SCALAR_OPS = (total, sqnorm, softmax_cross_entropy)


# -- what users write -----------------------------------------------------------------------

class _MatrixOp(MatrixExpr):
    """A matrix-valued symgrad operation as a SymPy matrix expression (user-facing form)."""

    lowered: type[ArrayOp]

    def __new__(cls, *args):
        return super().__new__(cls, *[sp.sympify(a) for a in args])

    @property
    def shape(self):
        return self.args[0].shape

    def _sympystr(self, printer):
        return f"{self.lowered.__name__}({', '.join(printer._print(a) for a in self.args)})"

    def _latex(self, printer):
        return self.lowered(*self.args)._latex(printer)


class Softmax(_MatrixOp):
    lowered = softmax


class LogSoftmax(_MatrixOp):
    lowered = log_softmax


class RowSum(_MatrixOp):
    lowered = rowsum

    @property
    def shape(self):
        return (self.args[0].shape[0], sp.S.One)


class ColSum(_MatrixOp):
    lowered = colsum

    @property
    def shape(self):
        return (sp.S.One, self.args[0].shape[1])


class Elementwise(MatrixExpr):
    """``f`` applied entry by entry to one or more matrices (broadcast like NumPy)."""

    def __new__(cls, function: sp.Lambda, *matrices):
        return super().__new__(cls, function, *matrices)

    @property
    def function(self) -> sp.Lambda:
        return self.args[0]

    @property
    def matrices(self) -> tuple:
        return self.args[1:]

    @property
    def shape(self):
        shape: Shape = ()
        for m in self.matrices:
            shape = _broadcast(shape, tuple(m.shape), "an element-wise function")
        return shape

    def _printed(self, printer, opening: str, closing: str) -> str:
        """The function body printed with each variable shown as its matrix (a sum in
        brackets unless it is the whole argument of a function call)."""
        body = self.function.expr
        call = isinstance(body, sp.Function) and body.args[0] in self.function.variables

        def shown(m):
            text = printer._print(m)
            return f"{opening}{text}{closing}" if isinstance(m, MatAdd) and not call else text

        names = {v: sp.Symbol(shown(m)) for v, m in zip(self.function.variables, self.matrices)}
        return printer._print(body.xreplace(names))

    def _sympystr(self, printer):
        return self._printed(printer, "(", ")")

    def _latex(self, printer):
        return self._printed(printer, r"\left(", r"\right)")


def is_array_expression(expr) -> bool:
    """True when ``expr`` contains a matrix anywhere (so it takes the matrix path)."""
    if isinstance(expr, MatrixExpr):
        return True
    return isinstance(expr, sp.Basic) and any(
        isinstance(a, MatrixExpr) for a in sp.preorder_traversal(expr))


def elementwise(f: Callable[..., sp.Expr], *args):
    """``f(*args)`` entry by entry when an argument is a matrix, else plainly ``f(*args)``.

    ``f`` takes and returns scalar SymPy expressions, e.g. ``lambda x: x**2 + sin(x)``.
    """
    if not any(isinstance(a, MatrixExpr) for a in args):
        return f(*args)
    dummies = [sp.Dummy(f"x{k}") for k in range(len(args))]
    return Elementwise(sp.Lambda(tuple(dummies), f(*dummies)), *args)


def tanh(x):
    """tanh, element-wise on matrices."""
    return elementwise(sp.tanh, x)


def exp(x):
    """exp, element-wise on matrices."""
    return elementwise(sp.exp, x)


def log(x):
    """Natural log, element-wise on matrices."""
    return elementwise(sp.log, x)


def sum(x, axis: int | None = None):  # noqa: A001  (NumPy's name, on purpose)
    """Sum of all entries (a scalar), or over ``axis`` 0 (shape (1, cols)) or 1 ((rows, 1))."""
    _need_matrix(x, "sum")
    if axis is None:
        return total(x)
    if axis in (0, -2):
        return ColSum(x)
    if axis in (1, -1):
        return RowSum(x)
    raise ValueError(f"sum(axis=...) takes None, 0 or 1, got {axis!r}")


def mean(x):
    """Mean of all entries."""
    _need_matrix(x, "mean")
    rows, cols = x.shape
    return total(x) / (rows * cols)


def softmax_rows(x):
    """Row-wise softmax of a matrix (the lecture's class probabilities)."""
    _need_matrix(x, "softmax")
    return Softmax(x)


def log_softmax_rows(x):
    """Row-wise log-softmax of a matrix (stable)."""
    _need_matrix(x, "log_softmax")
    return LogSoftmax(x)


def dropout(x, p: float):
    """Inverted dropout (training only): ``x`` times a fresh random mask of keep-probability
    ``1 - p`` scaled by ``1/(1 - p)``; the identity when evaluating or predicting."""
    _need_matrix(x, "dropout")
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return HadamardProduct(x, Dropout(x, sp.Float(p)))


class Dropout(_MatrixOp):
    lowered = dropout_mask


def l2(w):
    """The L2 penalty: sum of squared entries (add ``0.5*reg*l2(W)`` for the deck's form)."""
    _need_matrix(w, "l2")
    return sqnorm(w)


def l1(w):
    """The L1 penalty: sum of absolute entries."""
    _need_matrix(w, "l1")
    return total(elementwise(sp.Abs, w))


def maxout(*zs):
    """Entry-wise maximum of several pre-activations (a maxout unit over its pieces)."""
    if len(zs) < 2:
        raise ValueError("maxout takes at least two matrices (the pieces to take the max of)")
    return elementwise(sp.Max, *zs)


def hinge(scores, target):
    """Multiclass SVM (hinge) loss: mean over rows of sum_{j != y} max(0, s_j - s_y + 1).

    ``target`` is one-hot. Built from element-wise operations and row sums, so its gradient
    comes from their rules.
    """
    _need_matrix(scores, "hinge")
    rows, cols = scores.shape
    correct = RowSum(HadamardProduct(scores, target)) * OneMatrix(1, cols)
    margins = elementwise(lambda s, c, y: (1 - y) * sp.Max(0, s - c + 1),
                          scores, correct, target)
    return total(margins) / rows


def _need_matrix(x, name: str) -> None:
    if not isinstance(x, MatrixExpr):
        raise ExpressionError(f"{name}() takes a matrix expression (built from "
                              f"sympy.MatrixSymbol), got {type(x).__name__}.")


# -- shapes ---------------------------------------------------------------------------------

def _dim(d):
    return int(d) if isinstance(d, (int, sp.Integer)) else d


def _fmt(shape: Shape) -> str:
    return "scalar" if shape == () else f"({', '.join(str(d) for d in shape)})"


def _broadcast(a: Shape, b: Shape, what: str) -> Shape:
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
            raise ShapeError(f"{what}: shapes {_fmt(a)} and {_fmt(b)} do not broadcast (each "
                             "dimension must be equal, or 1 in one of them).")
    return tuple(out)


def result_shape(op, shapes: list[Shape], what: str | None = None) -> Shape:
    """Shape of ``op`` applied to operands of ``shapes``; ShapeError naming ``what`` if unfit."""
    name = what or getattr(op, "__name__", str(op))
    if op is matmul:
        a, b = shapes
        if a == () or b == ():
            raise ShapeError(f"matrix product {name}: an operand is a scalar; use * with a "
                             "scalar only as a coefficient.")
        if a[1] != b[0]:
            raise ShapeError(f"matrix product {name}: shapes {_fmt(a)} and {_fmt(b)} do not fit "
                             f"(the left has {a[1]} columns, the right {b[0]} rows).")
        return (a[0], b[1])
    if op is transpose:
        return (shapes[0][1], shapes[0][0])
    if op is rowsum:
        return (shapes[0][0], 1)
    if op is colsum:
        return (1, shapes[0][1])
    if op in _SCALAR_OPS:
        if op is softmax_cross_entropy and shapes[0] != shapes[1]:
            raise ShapeError(f"softmax_cross_entropy: scores {_fmt(shapes[0])} and targets "
                             f"{_fmt(shapes[1])} must have the same shape (targets one-hot).")
        return ()
    if op in (softmax, log_softmax, dropout_mask):
        return shapes[0]
    shape: Shape = ()
    for s in shapes:
        shape = _broadcast(shape, s, name)
    return shape


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


# -- lowering ---------------------------------------------------------------------------------

@dataclass
class Lowered:
    """A lowered expression, the shape of each matrix symbol in it, and its batch symbol."""

    expr: sp.Expr
    shapes: dict[sp.Symbol, Shape] = field(default_factory=dict)
    matrices: dict[MatrixSymbol, sp.Symbol] = field(default_factory=dict)
    batch: sp.Symbol | None = None


def lower(expr: sp.Basic) -> Lowered:
    """Lower a scalar expression built from matrices (see the module docstring)."""
    out = Lowered(sp.S.Zero)
    memo: dict[sp.Basic, tuple[sp.Basic, Shape]] = {}
    names: dict[str, sp.Basic] = {}

    def leaf(m: MatrixSymbol):
        shape = tuple(_dim(d) for d in m.shape)
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
            raise ShapeError(f"matrix {m.name} has shape {_fmt(shape)}: the batch size must be "
                             "the number of rows (one row per sample), not of columns.")
        if names.get(m.name, m) != m:
            raise ExpressionError(f"two different matrices are named {m.name!r}; give each "
                                  "its own name.")
        names[m.name] = m
        s = sp.Symbol(m.name, real=True)
        out.shapes[s] = shape
        out.matrices[m] = s
        return s, shape

    def visit(e) -> tuple[sp.Basic, Shape]:
        found = memo.get(e)
        if found is None:
            found = memo[e] = lower_one(e)
        return found

    def operands(args):
        parts = [broadcast_operand(a) for a in args]
        return [p for p, _ in parts], [s for _, s in parts]

    def broadcast_operand(a):
        """``OneMatrix(r, 1)*b`` (or ``c*OneMatrix(1, k)``) inside an element-wise operation
        is just ``b`` (``c``): NumPy broadcasting does the rest."""
        if isinstance(a, MatMul) and len(a.args) == 2:
            left, right = a.args
            if (isinstance(left, OneMatrix) and left.shape[1] == 1
                    and isinstance(right, MatrixExpr) and right.shape[0] == 1):
                b, shape = visit(right)
                return b, (_dim(left.shape[0]), shape[1])
            if (isinstance(right, OneMatrix) and right.shape[0] == 1
                    and isinstance(left, MatrixExpr) and left.shape[1] == 1):
                b, shape = visit(left)
                return b, (shape[0], _dim(right.shape[1]))
        return visit(a)

    def lower_one(e) -> tuple[sp.Basic, Shape]:
        if isinstance(e, MatrixSymbol):
            return leaf(e)
        if isinstance(e, MatrixExpr):
            return lower_matrix(e)
        if isinstance(e, ArrayOp):
            args, shapes = operands(e.args)
            return type(e)(*args), result_shape(type(e), shapes, f"{type(e).__name__}(...)")
        if not e.args or isinstance(e, (sp.Symbol, sp.Number)):
            if isinstance(e, sp.Symbol) and e.name in names and names[e.name] != e:
                raise ExpressionError(f"the name {e.name!r} is used by a matrix and a scalar "
                                      "symbol; rename one of them.")
            names.setdefault(getattr(e, "name", str(e)), e)
            return e, ()
        if any(isinstance(a, MatrixExpr) for a in e.args):
            fname = getattr(e.func, "__name__", str(e.func))
            raise ExpressionError(
                f"{fname}(...) has a matrix argument, which SymPy treats as a scalar. For an "
                f"entry-wise function write symgrad.elementwise({fname}, M) (symgrad.tanh, "
                "symgrad.sigmoid, ... do this); reduce a matrix to a scalar with symgrad.sum, "
                "symgrad.mean or a loss.")
        args = [visit(a)[0] for a in e.args]
        return e.func(*args), ()

    def lower_matrix(e) -> tuple[sp.Basic, Shape]:
        if isinstance(e, (OneMatrix, ZeroMatrix)):
            return (sp.S.One if isinstance(e, OneMatrix) else sp.S.Zero), ()
        if isinstance(e, MatAdd):
            args, shapes = operands(e.args)
            return sp.Add(*args), result_shape(sp.Add, shapes, _Lazy(lambda: f"sum {_short(e)}"))
        if isinstance(e, HadamardProduct):
            args, shapes = operands(e.args)
            what = _Lazy(lambda: f"entry-wise product {_short(e)}")
            return sp.Mul(*args), result_shape(sp.Mul, shapes, what)
        if isinstance(e, HadamardPower):
            base, shape = visit(e.args[0])
            power, _ = visit(e.args[1])
            return sp.Pow(base, power), shape
        if isinstance(e, Transpose):
            a, shape = visit(e.args[0])
            return transpose(a), (shape[1], shape[0])
        if isinstance(e, MatMul):
            return lower_matmul(e)
        if isinstance(e, ElementwiseApplyFunction):
            return lower_elementwise(e.function, [e.expr], e)
        if isinstance(e, Elementwise):
            return lower_elementwise(e.function, list(e.matrices), e)
        if isinstance(e, _MatrixOp):
            args, shapes = operands(e.args)
            return e.lowered(*args), result_shape(e.lowered, shapes)
        raise ExpressionError(f"symgrad does not support the matrix operation "
                              f"{type(e).__name__} (in {_short(e)}).")

    def lower_matmul(e) -> tuple[sp.Basic, Shape]:
        coeff = [a for a in e.args if not isinstance(a, MatrixExpr)]
        mats = [a for a in e.args if isinstance(a, MatrixExpr)]
        result, shape = None, ()
        k = 0
        while k < len(mats):
            m = mats[k]
            if isinstance(m, OneMatrix) and result is not None and m.shape[1] == 1:
                result, shape = rowsum(result), (shape[0], 1)
            elif (isinstance(m, OneMatrix) and result is None and m.shape[0] == 1
                  and k + 1 < len(mats)):
                nxt, nshape = visit(mats[k + 1])
                if m.shape[1] != nshape[0]:
                    result_shape(matmul, [tuple(map(_dim, m.shape)), nshape],
                                 _Lazy(lambda: _short(e)))
                result, shape = colsum(nxt), (1, nshape[1])
                k += 1
            elif isinstance(m, OneMatrix):
                raise ExpressionError(
                    f"in {_short(e)}: a OneMatrix broadcast is supported only as an operand of "
                    "a sum or entry-wise product (or write X*W + b and let b broadcast).")
            else:
                a, ashape = visit(m)
                if result is None:
                    result, shape = a, ashape
                else:
                    shape = result_shape(matmul, [shape, ashape], _Lazy(lambda: _short(e)))
                    result = matmul(result, a)
            k += 1
        if coeff:
            result = sp.Mul(*[visit(c)[0] for c in coeff], result)
        return result, shape

    def lower_elementwise(function: sp.Lambda, matrices, e) -> tuple[sp.Basic, Shape]:
        args, shapes = operands(matrices)
        shape = result_shape(sp.Add, shapes, _Lazy(lambda: f"element-wise {_short(e)}"))
        if len(function.variables) != len(args):
            raise ExpressionError(f"element-wise function {function} takes "
                                  f"{len(function.variables)} arguments, got {len(args)}.")
        body = function.expr.xreplace(dict(zip(function.variables, args)))
        return body, shape

    lowered, shape = visit(expr)
    if shape != ():
        raise ExpressionError(f"the loss has shape {_fmt(shape)}; reduce it to a scalar "
                              "(symgrad.sum, symgrad.mean or a loss such as "
                              "symgrad.softmax_cross_entropy).")
    check_constants(lowered)
    out.expr = lowered
    return out


class _Lazy:
    """Text built only if an error message needs it (printing an expression is costly)."""

    def __init__(self, make) -> None:
        self.make = make

    def __str__(self) -> str:
        return self.make()


def _short(e, limit: int = 50) -> str:
    text = sp.sstr(e)
    return text if len(text) <= limit else text[: limit - 3] + "..."
