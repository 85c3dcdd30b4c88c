"""Matrix models: what users write with SymPy's ``MatrixSymbol``, and its lowering.

Users write SymPy matrix expressions (``MatrixSymbol``, ``*`` for the matrix product, ``+``
with NumPy-style broadcasting of a bias row, ``.T``, ``HadamardProduct``) plus symgrad's
helpers: element-wise activations, softmax, sums and losses. :func:`lower` turns that into the
form the graph layer builds from: a scalar-looking SymPy expression in which every matrix is
a ``Symbol`` with a known shape, element-wise arithmetic is ordinary ``Add``/``Mul``/``Pow``/
function application (NumPy broadcasting), and every operation that is not element-wise is
one of the :class:`ArrayOp` functions (``matmul``, ``transpose``, ``rowsum``...). So
element-wise rules are the scalar rules, and one registry serves both.

One module per job:

- ``ops.py``: the ``ArrayOp`` functions, each with its shape rule (``shape_of``), and
  ``result_shape``/``expr_shape``, the shape of any lowered node or expression;
- ``shapes.py``: what a shape is, and NumPy broadcasting (the element-wise rule);
- ``wrappers.py``: the matrix-valued ops as SymPy matrix expressions (``Softmax``,
  ``RowSum``, ``Elementwise``, ...), shaped by their op's rule;
- ``helpers.py``: the user helpers (``tanh``, ``sum``, ``mean``, ``dropout``, ``l2``, ``hinge``...);
- ``lowering.py``: ``lower``, one memoized walk that checks every shape on the way.

A shape is ``()`` for a scalar or ``(rows, cols)``; the rows of data matrices may be a symbol
(the batch size, bound when the model runs).
"""

from .helpers import (
    dropout,
    elementwise,
    exp,
    hinge,
    l1,
    l2,
    log,
    log_softmax_rows,
    maxout,
    mean,
    softmax_rows,
    sum,
    tanh,
)
from .lowering import Lowered, is_array_expression, lower
from .ops import (
    ArrayOp,
    colsum,
    dropout_mask,
    expr_shape,
    log_softmax,
    matmul,
    result_shape,
    rowsum,
    softmax,
    softmax_cross_entropy,
    sqnorm,
    total,
    transpose,
)
from .shapes import Shape
from .wrappers import ColSum, Dropout, Elementwise, LogSoftmax, RowSum, Softmax

__all__ = [
    "ArrayOp", "ColSum", "Dropout", "Elementwise", "LogSoftmax", "Lowered", "RowSum", "Shape",
    "Softmax", "colsum", "dropout", "dropout_mask", "elementwise", "exp", "expr_shape", "hinge",
    "is_array_expression", "l1", "l2", "log", "log_softmax", "log_softmax_rows", "lower",
    "matmul", "maxout", "mean", "result_shape", "rowsum", "softmax", "softmax_cross_entropy",
    "softmax_rows", "sqnorm", "sum", "tanh", "total", "transpose",
]
