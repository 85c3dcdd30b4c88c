"""What a training run leaves behind, also when it stops early or fails."""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

__all__ = ["DIVERGED", "DONE", "EARLY_STOPPING", "RESTORES_BEST", "History"]

#: How a training loop's epochs ended; the compiled loops return the same numbers
#: (``symgrad.kernels.loops``; kept equal by a test, not imported: that module loads Numba).
DONE, DIVERGED, EARLY_STOPPING = 0, 1, 2
#: The stop reasons after which ``fit`` puts the best parameters back into the model (after
#: "completed" and "callback" the model keeps the last ones).
RESTORES_BEST = ("diverged", "early_stopping", "interrupted", "error")


@dataclass
class History:
    """Per-epoch record of a fit (Keras-style), plus the best parameters seen.

    ``loss`` is each epoch's mean training loss (over its batches, weighted by their sizes,
    at the parameters each batch saw); ``val_loss`` the validation loss after the epoch.
    ``best_loss`` is the lowest monitored loss (validation if given, else training), at epoch
    ``best_epoch``, and ``best_params`` the parameters that loss belongs to: with validation
    data, those after that epoch; without, those the epoch started from (where its first
    batch was evaluated). With full batches the epoch's loss is exactly their loss
    (``model.evaluate(training data) == best_loss`` once they are restored); with
    minibatches it is the mean over the batches while the epoch moved away from them.

    ``stop_reason`` says what happened: ``"completed"``, ``"callback"`` (a callback returned
    True), ``"early_stopping"``, ``"diverged"``, ``"interrupted"`` (Ctrl-C) or ``"error"``
    (an exception, e.g. from a callback, which ``fit`` re-raises after recording it); after
    the last four the model's parameters are ``best_params`` (:data:`RESTORES_BEST`).
    ``engine`` says per epoch which loop ran it: ``"compiled"`` or, for a matrix model
    while its loop was being compiled, ``"numpy"``.
    """

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    val_metrics: dict[str, list[float]] = field(default_factory=dict)
    time: list[float] = field(default_factory=list)
    engine: list[str] = field(default_factory=list)
    best_epoch: int | None = None
    best_loss: float = float("inf")
    best_params: dict[sp.Symbol, float] = field(default_factory=dict)
    stop_reason: str = "completed"

    def __len__(self) -> int:
        return len(self.epoch)

    def as_dict(self) -> dict:
        return {
            "epoch": self.epoch, "loss": self.loss, "val_loss": self.val_loss,
            **self.metrics, **{f"val_{k}": v for k, v in self.val_metrics.items()},
            "time": self.time,
        }

    def summary(self) -> str:
        if not self.epoch:
            return "no epochs run"
        parts = [f"{len(self.epoch)} epochs", f"loss {self.loss[0]:.6g} -> {self.loss[-1]:.6g}"]
        if self.val_loss:
            parts.append(f"val_loss {self.val_loss[-1]:.6g}")
        if self.best_epoch is not None:
            parts.append(f"best at epoch {self.best_epoch} ({self.best_loss:.6g})")
        parts.append(f"{sum(self.time):.3g} s, {self.stop_reason}")
        return ", ".join(parts)
