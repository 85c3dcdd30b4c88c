"""Train layer: optimizers, the compiled fit loop, History and metrics."""

from . import init, metrics, optim
from .arrays import ArrayModel, SymmetryWarning, one_hot
from .data import PreparedData
from .history import History
from .model import DivergenceWarning, Model
from .persist import load_model, save_model

__all__ = ["ArrayModel", "DivergenceWarning", "History", "Model", "PreparedData",
           "SymmetryWarning", "init", "load_model", "metrics", "one_hot", "optim", "save_model"]
