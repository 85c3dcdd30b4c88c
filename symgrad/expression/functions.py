"""symgrad's activations as SymPy functions.

They are real ``sympy.Function`` subclasses with ``eval`` (numeric arguments evaluate) and
``fdiff`` (``sympy.diff`` works on them), so an expression that uses them stays an ordinary
SymPy expression and ``sympy.diff`` remains an independent oracle for symgrad's own rules.
Each one is emitted as a single gate: the listing reads ``L = sigmoid(s3)`` and its local
derivative is one line (``(1 - L)*L``) instead of a chain of exp, add and reciprocal.
"""

from __future__ import annotations

import sympy as sp
from mpmath.libmp.libmpf import prec_to_dps
from sympy.matrices.expressions import MatrixExpr

from .arrays import elementwise

__all__ = ["elu", "leaky_relu", "log_sigmoid", "logsumexp", "relu", "sigmoid", "softplus"]

_LEAK = sp.Rational(1, 100)


class _Activation(sp.Function):
    """Numeric evaluation (``evalf``) through the closed form, for nested numeric arguments.

    Applied to a matrix, an activation acts entry by entry (an ``Elementwise`` matrix).
    """

    def __new__(cls, x, *args, **options):
        if isinstance(x, MatrixExpr):
            return elementwise(lambda v: cls(v, *args, **options), x)
        return super().__new__(cls, x, *args, **options)

    def _eval_evalf(self, prec):
        if all(a.is_number for a in self.args):
            return self._closed_form(*self.args).evalf(prec_to_dps(prec))
        return None


class sigmoid(_Activation):
    """Logistic sigmoid 1/(1 + exp(-x)); its derivative is sigmoid(x)*(1 - sigmoid(x))."""

    @staticmethod
    def _closed_form(x):
        return 1 / (1 + sp.exp(-x))

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return 1 / (1 + sp.exp(-x))
        return None

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))

    def _eval_is_real(self):
        return self.args[0].is_real


class relu(_Activation):
    """max(x, 0); the derivative at 0 is taken as 0 (PyTorch's convention)."""

    @staticmethod
    def _closed_form(x):
        return sp.Max(x, 0)

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return sp.Max(x, 0)
        return None

    def fdiff(self, argindex=1):
        return sp.Heaviside(self.args[0], 0)

    def _eval_rewrite_as_Max(self, x, **kwargs):
        return sp.Max(x, 0)

    def _eval_is_real(self):
        return self.args[0].is_real


class leaky_relu(_Activation):
    """x for x > 0, alpha*x otherwise (default alpha = 0.01, as in PyTorch)."""

    @staticmethod
    def _closed_form(x, alpha):
        return sp.Piecewise((x, x > 0), (alpha * x, True))

    nargs = (1, 2)

    def __new__(cls, x, alpha=_LEAK, **options):
        return super().__new__(cls, x, alpha, **options)

    @classmethod
    def eval(cls, x, alpha):
        if x.is_Number and alpha.is_Number:
            return x if x > 0 else alpha * x
        return None

    def fdiff(self, argindex=1):
        x, alpha = self.args
        if argindex == 1:
            return sp.Piecewise((1, x > 0), (alpha, True))
        return sp.Piecewise((0, x > 0), (x, True))

    def _eval_is_real(self):
        return self.args[0].is_real


class elu(_Activation):
    """x for x > 0, alpha*(exp(x) - 1) otherwise (default alpha = 1)."""

    @staticmethod
    def _closed_form(x, alpha):
        return sp.Piecewise((x, x > 0), (alpha * (sp.exp(x) - 1), True))

    nargs = (1, 2)

    def __new__(cls, x, alpha=sp.S.One, **options):
        return super().__new__(cls, x, alpha, **options)

    @classmethod
    def eval(cls, x, alpha):
        if x.is_Number and alpha.is_Number:
            return x if x > 0 else alpha * (sp.exp(x) - 1)
        return None

    def fdiff(self, argindex=1):
        x, alpha = self.args
        if argindex == 1:
            return sp.Piecewise((1, x > 0), (alpha * sp.exp(x), True))
        return sp.Piecewise((0, x > 0), (sp.exp(x) - 1, True))

    def _eval_is_real(self):
        return self.args[0].is_real


class softplus(_Activation):
    """log(1 + exp(x)), emitted in the overflow-free form max(x, 0) + log1p(exp(-|x|))."""

    @staticmethod
    def _closed_form(x):
        return sp.log(1 + sp.exp(x))

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return sp.log(1 + sp.exp(x))
        return None

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_log(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))

    def _eval_is_real(self):
        return self.args[0].is_real


class log_sigmoid(_Activation):
    """log(sigmoid(x)) = -softplus(-x), emitted as min(x, 0) - log1p(exp(-|x|)): finite value
    and gradient (sigmoid(-x)) for every finite x, where log(1/(1 + exp(-x))) gives -inf."""

    @staticmethod
    def _closed_form(x):
        return -sp.log(1 + sp.exp(-x))

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return -sp.log(1 + sp.exp(-x))
        return None

    def fdiff(self, argindex=1):
        return sigmoid(-self.args[0])

    def _eval_rewrite_as_log(self, x, **kwargs):
        return -sp.log(1 + sp.exp(-x))

    def _eval_is_real(self):
        return self.args[0].is_real


class logsumexp(sp.Function):
    """log(exp(x1) + ... + exp(xn)), emitted without overflow: a left fold of the pairwise
    ``logaddexp(a, b) = max(a, b) + log1p(exp(-|a - b|))``. Its partial derivatives are the
    softmax weights exp(xi - logsumexp(...)), each at most 1.

    Takes one or more arguments (one: the argument itself); on matrices of one shape (or
    broadcasting) it acts entry by entry. For the log-sum-exp over a matrix's rows use
    ``symgrad.log_softmax`` or ``symgrad.softmax_cross_entropy``.
    """

    def __new__(cls, *args, **options):
        if not args:
            raise TypeError("logsumexp takes at least one argument")
        if any(isinstance(a, MatrixExpr) for a in args):
            return elementwise(lambda *v: cls(*v, **options), *args)
        return super().__new__(cls, *args, **options)

    @staticmethod
    def _closed_form(*args):
        return sp.log(sp.Add(*[sp.exp(a) for a in args]))

    @classmethod
    def eval(cls, *args):
        if len(args) == 1:
            return args[0]
        if all(a.is_Number for a in args):
            return sp.log(sp.Add(*[sp.exp(a) for a in args]))
        return None

    def fdiff(self, argindex=1):
        return sp.exp(self.args[argindex - 1] - self)

    def _eval_evalf(self, prec):
        if all(a.is_number for a in self.args):
            return self._closed_form(*self.args).evalf(prec_to_dps(prec))
        return None

    def _eval_rewrite_as_log(self, *args, **kwargs):
        return self._closed_form(*args)

    def _eval_is_real(self):
        if all(a.is_real for a in self.args):
            return True
        return None
