"""symgrad: SymPy models and losses -> flat reverse-mode code -> Numba.

>>> import sympy as sp, symgrad as sg
>>> w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
>>> f = sg.compile(sg.sigmoid(w0*x0 + w1*x1 + w2), wrt=[w0, x0, w1, x1, w2])
>>> print(f.listing())                      # doctest: +SKIP
>>> value, grad = f.value_and_grad(2, -1, -3, -2, -3)
"""

from . import show
from ._version import __version__
from .compile import CompiledFunction, NonFiniteWarning, clear_cache, compile
from .errors import (
    CompileError,
    ExpressionError,
    InputError,
    ModelFileError,
    NotSupportedError,
    ShapeError,
    SymgradError,
    UnsupportedFunctionError,
)
from .expression import (
    elu,
    leaky_relu,
    log_sigmoid,
    logsumexp,
    losses,
    relu,
    sigmoid,
    softplus,
    stabilize,
)
from .expression.arrays import (
    dropout,
    elementwise,
    exp,
    hinge,
    l1,
    l2,
    log,
    maxout,
    mean,
    softmax_cross_entropy,
    sum,
    tanh,
)
from .expression.arrays import log_softmax_rows as log_softmax
from .expression.arrays import softmax_rows as softmax
from .rules import rule
from .show import check_gradients
from .train import (
    ArrayModel,
    DivergenceWarning,
    History,
    Model,
    PreparedData,
    SymmetryWarning,
    init,
    load_model,
    metrics,
    one_hot,
    optim,
    save_model,
)
from .trust import CacheWarning

# The package face sits above every layer: it gives the compiled artifacts their display
# methods (f.trace(...), model.graph(...), notebook display), so compile and train never
# import the show layer.
show.attach(CompiledFunction, Model)

__all__ = [
    "ArrayModel",
    "CacheWarning",
    "CompileError",
    "CompiledFunction",
    "DivergenceWarning",
    "ExpressionError",
    "History",
    "InputError",
    "Model",
    "ModelFileError",
    "NonFiniteWarning",
    "NotSupportedError",
    "PreparedData",
    "ShapeError",
    "SymgradError",
    "UnsupportedFunctionError",
    "__version__",
    "check_gradients",
    "clear_cache",
    "compile",
    "dropout",
    "elementwise",
    "elu",
    "exp",
    "hinge",
    "init",
    "l1",
    "l2",
    "leaky_relu",
    "load_model",
    "log",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "losses",
    "maxout",
    "mean",
    "metrics",
    "one_hot",
    "optim",
    "relu",
    "rule",
    "save_model",
    "sigmoid",
    "softmax",
    "softmax_cross_entropy",
    "softplus",
    "stabilize",
    "sum",
    "SymmetryWarning",
    "tanh",
]
