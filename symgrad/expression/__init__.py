"""Expression layer: what users write (SymPy plus symgrad's activations) and its validation."""

from . import losses
from .functions import elu, leaky_relu, relu, sigmoid, softplus
from .validate import as_expression, free_symbols

__all__ = [
    "as_expression",
    "elu",
    "free_symbols",
    "leaky_relu",
    "losses",
    "relu",
    "sigmoid",
    "softplus",
]
