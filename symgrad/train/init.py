"""Weight initializers (the lecture's): Xavier/Glorot, He, and zeros for biases.

Each returns a NumPy array of the given shape, drawn from ``numpy.random.default_rng(seed)``
(or the ``Generator`` passed as ``seed``), so a run is reproducible from its seed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["he", "normal", "xavier", "zeros"]


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def xavier(rows: int, cols: int, seed=None, *, uniform: bool = False) -> np.ndarray:
    """Glorot/Xavier: variance 2/(rows + cols), keeping activations' scale through tanh layers."""
    if uniform:
        limit = np.sqrt(6.0 / (rows + cols))
        return _rng(seed).uniform(-limit, limit, (rows, cols))
    return _rng(seed).standard_normal((rows, cols)) * np.sqrt(2.0 / (rows + cols))


def he(rows: int, cols: int, seed=None) -> np.ndarray:
    """He/Kaiming: variance 2/rows (fan-in), for ReLU layers, which zero half their inputs."""
    return _rng(seed).standard_normal((rows, cols)) * np.sqrt(2.0 / rows)


def normal(rows: int, cols: int, std: float, seed=None) -> np.ndarray:
    """N(0, std²) entries: too small a std makes gradients vanish, too large explode."""
    return _rng(seed).standard_normal((rows, cols)) * std


def zeros(rows: int, cols: int) -> np.ndarray:
    """Zeros: right for biases; for a hidden layer's weights it is the symmetry failure."""
    return np.zeros((rows, cols))
