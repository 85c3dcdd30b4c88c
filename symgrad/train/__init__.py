"""Train layer: optimizers, the compiled fit loop, History and metrics."""

from . import metrics, optim
from .history import History
from .model import DivergenceWarning, Model

__all__ = ["DivergenceWarning", "History", "Model", "metrics", "optim"]
