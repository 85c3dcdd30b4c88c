"""The lectures' optimizers. Each is a small class: its hyperparameters and its update rule.

The update itself is ``symgrad.kernels.optim.update``, compiled once for every model; the
class only names its rule (``template``, numbered by :data:`KINDS`), its hyperparameters
(passed at run time, so changing ``lr`` does not recompile) and how many per-parameter
state vectors it keeps.
Every update follows PyTorch's ``torch.optim`` formulation, so trajectories match it to
rounding; ``weight_decay`` adds ``weight_decay * theta`` to the gradient (L2 penalty, as in
torch) and ``l1`` adds ``l1 * sign(theta)`` (the lecture's L1 penalty).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

import numpy as np

from ..errors import InputError

__all__ = [
    "KINDS", "RANGES", "SGD", "AMSGrad", "Adadelta", "Adagrad", "Adam", "Momentum", "Nesterov",
    "Optimizer", "RMSprop",
]


#: The update rules in the numbering of ``symgrad.kernels.optim.KINDS`` (kept equal by a test;
#: not imported from there because that module imports Numba).
KINDS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "amsgrad")


#: Each hyperparameter's valid range, as (low, high, low included, high included): where the
#: update rule stays a descent with finite steps (a decay rate of 1 or more never forgets and
#: can make a second moment negative; eps = 0 makes 0/0 at a zero gradient).
RANGES = {
    "lr": (0.0, math.inf, False, False),
    "weight_decay": (0.0, math.inf, True, False),
    "l1": (0.0, math.inf, True, False),
    "momentum": (0.0, 1.0, True, False),
    "eps": (0.0, math.inf, False, False),
    "initial_accumulator_value": (0.0, math.inf, True, False),
    "alpha": (0.0, 1.0, True, False),
    "rho": (0.0, 1.0, True, True),
    "beta1": (0.0, 1.0, True, False),
    "beta2": (0.0, 1.0, True, False),
}
_ANY = (-math.inf, math.inf, False, False)  # a field of a user's subclass: any finite number


@dataclass
class Optimizer:
    """Base class: hyperparameters are the dataclass fields, in order, each checked against
    its range in :data:`RANGES` when the optimizer is made and again when ``fit`` reads it
    (fields can be reassigned in between)."""

    template = ""
    n_state = 0
    lr: float = 0.01
    weight_decay: float = 0.0
    l1: float = 0.0

    def __post_init__(self) -> None:
        self.check()
        self.state: np.ndarray | None = None
        self.step = np.zeros(1, dtype=np.int64)

    def check(self) -> None:
        """Raise InputError naming the first hyperparameter outside its valid range."""
        for f in fields(self):
            value = getattr(self, f.name)
            low, high, low_in, high_in = RANGES.get(f.name, _ANY)
            name = f"{type(self).__name__}.{f.name}"
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise InputError(f"{name} must be a number, {_allowed(low, high, low_in, high_in)}"
                                 f"; got {value!r}")
            ok = ((low < value or low_in and value == low)
                  and (value < high or high_in and value == high) and math.isfinite(value))
            if not ok:
                raise InputError(f"{name} must be {_allowed(low, high, low_in, high_in)}, got "
                                 f"{value!r}")

    @property
    def kind(self) -> int:
        """The number of this optimizer's update rule in the compiled kernel."""
        return KINDS.index(self.template)

    def hyper(self) -> np.ndarray:
        """The hyperparameters as the compiled update reads them, checked first."""
        self.check()
        return np.array([float(getattr(self, f.name)) for f in fields(self)])

    def state_for(self, n_params: int, dtype=np.float64) -> np.ndarray:
        """Per-parameter state (kept across fit() calls, like torch's optimizer state), in
        the parameters' dtype."""
        if (self.state is None or self.state.shape[1] != n_params
                or self.state.dtype != np.dtype(dtype)):
            self.state = np.zeros((max(self.n_state, 1), n_params), dtype=dtype)
            self.step[0] = 0
            self.init_state(self.state)
        return self.state

    def init_state(self, state: np.ndarray) -> None:
        pass

    def reset(self) -> None:
        self.state = None
        self.step[0] = 0


def _allowed(low: float, high: float, low_in: bool, high_in: bool) -> str:
    """A range as the error message says it: "in [0, 1)", "> 0 and finite", ..."""
    if low == -math.inf:
        return "a finite number"
    if high == math.inf:
        return f"{'>=' if low_in else '>'} {low:g} and finite"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


@dataclass
class SGD(Optimizer):
    """Gradient descent: theta <- theta - lr * g."""

    template = "sgd"


@dataclass
class Momentum(Optimizer):
    """Momentum: v <- momentum * v + g;  theta <- theta - lr * v  (torch.optim.SGD(momentum=))."""

    template = "momentum"
    n_state = 1
    momentum: float = 0.9


@dataclass
class Nesterov(Optimizer):
    """Nesterov momentum (NAG): v <- mu v + g;  theta <- theta - lr (g + mu v).

    This is the look-ahead gradient of the lecture rewritten in the parameters torch keeps
    (torch.optim.SGD(momentum=mu, nesterov=True)).
    """

    template = "nesterov"
    n_state = 1
    momentum: float = 0.9


@dataclass
class Adagrad(Optimizer):
    """Adagrad: s <- s + g^2;  theta <- theta - lr g / (sqrt(s) + eps)."""

    template = "adagrad"
    n_state = 1
    eps: float = 1e-10
    initial_accumulator_value: float = 0.0

    def init_state(self, state: np.ndarray) -> None:
        state[0] = self.initial_accumulator_value


@dataclass
class RMSprop(Optimizer):
    """RMSprop: s <- alpha s + (1 - alpha) g^2;  theta <- theta - lr g / (sqrt(s) + eps)."""

    template = "rmsprop"
    n_state = 1
    alpha: float = 0.99
    eps: float = 1e-8


@dataclass
class Adadelta(Optimizer):
    """Adadelta: s <- rho s + (1 - rho) g^2;  d = sqrt(u + eps) / sqrt(s + eps) g;
    u <- rho u + (1 - rho) d^2;  theta <- theta - lr d."""

    template = "adadelta"
    n_state = 2
    lr: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6


@dataclass
class Adam(Optimizer):
    """Adam: m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    theta <- theta - lr m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).
    """

    template = "adam"
    n_state = 2
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass
class AMSGrad(Adam):
    """AMSGrad: Adam with v_max <- max(v_max, v) in the denominator (torch Adam(amsgrad=True))."""

    template = "amsgrad"
    n_state = 3
