"""symgrad: SymPy models and losses -> flat reverse-mode code -> Numba.

>>> import sympy as sp, symgrad as sg
>>> w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
>>> f = sg.compile(sg.sigmoid(w0*x0 + w1*x1 + w2), wrt=[w0, x0, w1, x1, w2])
>>> print(f.listing())                      # doctest: +SKIP
>>> value, grad = f.value_and_grad(2, -1, -3, -2, -3)
"""

__version__ = "0.1.0"

from .compile import CompiledFunction, clear_cache, compile
from .errors import (
    CompileError,
    ExpressionError,
    InputError,
    ShapeError,
    SymgradError,
    UnsupportedFunctionError,
)
from .expression import elu, leaky_relu, losses, relu, sigmoid, softplus
from .rules import rule
from .show import check_gradients
from .train import DivergenceWarning, History, Model, metrics, optim

__all__ = [
    "CompileError",
    "CompiledFunction",
    "DivergenceWarning",
    "ExpressionError",
    "History",
    "InputError",
    "Model",
    "ShapeError",
    "SymgradError",
    "UnsupportedFunctionError",
    "__version__",
    "check_gradients",
    "clear_cache",
    "compile",
    "elu",
    "leaky_relu",
    "losses",
    "metrics",
    "optim",
    "relu",
    "rule",
    "sigmoid",
    "softplus",
]
