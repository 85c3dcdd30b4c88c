"""symgrad's matrix-valued operations as SymPy matrix expressions (what users' expressions
hold before lowering): each wrapper names the :class:`~.ops.ArrayOp` it lowers to and takes
its shape from that op's rule; :class:`Elementwise` is a scalar function entry by entry."""

from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions import MatAdd, MatrixExpr

from .ops import ArrayOp, colsum, dropout_mask, log_softmax, rowsum, softmax
from .shapes import broadcast_all

__all__ = ["ColSum", "Dropout", "Elementwise", "LogSoftmax", "RowSum", "Softmax"]


class _MatrixOp(MatrixExpr):
    """A matrix-valued symgrad operation as a SymPy matrix expression (user-facing form)."""

    lowered: type[ArrayOp]

    def __new__(cls, *args):
        return super().__new__(cls, *[sp.sympify(a) for a in args])

    @property
    def shape(self):
        shapes = [tuple(a.shape) if isinstance(a, MatrixExpr) else () for a in self.args]
        return tuple(sp.sympify(d) for d in self.lowered.shape_of(*shapes))

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


class ColSum(_MatrixOp):
    lowered = colsum


class Dropout(_MatrixOp):
    lowered = dropout_mask


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
        return broadcast_all([tuple(m.shape) for m in self.matrices], "an element-wise function")

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
