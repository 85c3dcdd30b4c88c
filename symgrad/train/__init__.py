"""Train layer: optimizers, the compiled fit loop, History and metrics."""

from . import init, metrics, optim
from .arrays import ArrayModel, SymmetryWarning, one_hot
from .history import History
from .model import DivergenceWarning, Model

__all__ = ["ArrayModel", "DivergenceWarning", "History", "Model", "SymmetryWarning", "init",
           "metrics", "one_hot", "optim"]
