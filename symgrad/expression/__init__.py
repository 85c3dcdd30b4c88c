"""Expression layer: what users write (SymPy plus symgrad's activations) and its validation."""

from . import losses
from .functions import elu, leaky_relu, log_sigmoid, logsumexp, relu, sigmoid, softplus
from .stabilize import Rewrite, rewrites, stabilize
from .validate import as_expression, free_symbols

__all__ = [
    "as_expression",
    "elu",
    "free_symbols",
    "leaky_relu",
    "log_sigmoid",
    "logsumexp",
    "losses",
    "relu",
    "Rewrite",
    "rewrites",
    "sigmoid",
    "softplus",
    "stabilize",
]
