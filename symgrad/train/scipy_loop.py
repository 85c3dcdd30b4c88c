"""``fit`` for :class:`~symgrad.train.optim.LBFGS` and :class:`~symgrad.train.optim.NewtonCG`:
``scipy.optimize.minimize`` driven by the model's compiled code.

The method sees the risk (the mean loss over the training data) as a function of the flat
parameter vector: its value and gradient come from the same compiled pass ``fit`` trains
with (one pass gives both; a value and a gradient asked at the same point cost one pass),
the Hessian-vector products of Newton-CG from ``model.hvp``. SciPy keeps its line search
and its stopping tests; symgrad keeps the rest of ``fit``'s contract:

- one epoch is one iteration of the method (scipy's per-iteration ``callback``); the
  History records the loss at the new iterate and, per epoch, how many values, gradients
  and HVPs the method asked for (``n_fev``, ``n_gev``, ``n_hvp``; their sums are scipy's
  ``nfev``, ``njev``, ``nhev``; work done after the last iteration counts in the last epoch);
- validation loss, metrics, callbacks, early stopping and the best parameters as in the
  compiled loops (``end_epoch`` decides, the same rule);
- a NaN or infinite loss, gradient or HVP at any point the method evaluates stops the run
  (``stop_reason="diverged"``, a ``DivergenceWarning``); Ctrl-C (held while code compiles,
  then taking effect between iterations) and an exception from a callback or metric
  (re-raised, ``"error"``) keep the History; after these, as after early stopping, the
  model gets the best parameters back (``RESTORES_BEST``);
- ``batch_size`` must be None (one batch: ``shuffle``, ``seed`` and ``drop_last`` change
  nothing); the compiled code runs (``engine`` "auto" or "compiled");
- the method may stop before ``epochs``: ``"converged"`` when its tolerance is met,
  ``"stalled"`` when it cannot make progress (e.g. the line search failed);
  ``History.message`` gives scipy's words.

Epochs are numbered on from ``epochs_trained`` (or ``initial_epoch``) and ``checkpoint=``
saves the model every ``checkpoint_every`` epochs and when the fit ends, as for the other
optimizers. But nothing of the method's state survives the call (scipy's is not
resumable): a later ``fit``, or ``symgrad.load_model(checkpoint).fit(...)``, restarts the
method from the parameters it is given, with an empty L-BFGS memory and a fresh line
search, so it does not repeat an uninterrupted run's iterates bit for bit (it converges to
the same optimum; ``seed`` changes nothing).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Mapping

import numpy as np

from ..errors import InputError
from ..kernels import ready
from .data import PreparedData
from .history import DIVERGED, DONE, EARLY_STOPPING, History
from .interrupt import COMPILING, TRAINING, Interrupts
from .optim import ScipyOptimizer

__all__ = ["fit_scipy"]


class _NonFinite(Exception):
    """A value, gradient or HVP of the method's objective was NaN or infinite; ``loss`` is
    the loss at that point (NaN when it is unknown)."""

    def __init__(self, loss: float) -> None:
        super().__init__(loss)
        self.loss = loss


class _Objective:
    """The risk on the training data as scipy wants it: ``fun(x)``, ``jac(x)``,
    ``hessp(x, v)`` on float64 vectors, with a one-point cache (one compiled pass gives the
    value and the gradient) and counts of what the method asked for."""

    def __init__(self, model, data: Mapping, X, hessian: bool) -> None:
        from .arrays import ArrayModel

        self.model, self.data = model, data
        self.dtype = model._values.dtype
        if isinstance(model, ArrayModel):
            if hessian and not isinstance(data, PreparedData):  # checked once, not per HVP
                self.data = data = model.prepare(data)
            self._at = model.evaluator(data)
        else:
            self._at = _mean_loss_and_grad(model, X)
            self.data = X  # checked columns: hvp takes them as they are
        self._hvp = model.hvp if hessian else None
        self._x = None
        self._value, self._grad = math.nan, None
        self.counts = np.zeros(3, dtype=np.int64)  # values, gradients, HVPs asked for

    def prime(self, x: np.ndarray) -> None:
        """Evaluate at ``x`` (the start) before the clock runs: the first call compiles or
        loads the code (an HVP too, uncounted, which also fails early where there is none);
        the method's first request then finds the value and gradient cached."""
        if self._hvp is not None:
            self.model._values[:] = x
            self._hvp(np.zeros_like(self.model._values), self.data)
        self._compute(x)

    def _compute(self, x: np.ndarray) -> None:
        if self._x is None or not np.array_equal(x, self._x):
            value, grad = self._at(np.asarray(x, dtype=self.dtype))
            self._x, self._value = x.copy(), float(value)
            self._grad = np.asarray(grad, dtype=np.float64)

    def _point(self, x: np.ndarray) -> None:
        self._compute(x)
        if not (math.isfinite(self._value) and np.all(np.isfinite(self._grad))):
            raise _NonFinite(self._value)

    def fun(self, x: np.ndarray) -> float:
        self.counts[0] += 1
        self._point(x)
        return self._value

    def jac(self, x: np.ndarray) -> np.ndarray:
        self.counts[1] += 1
        self._point(x)
        return self._grad.copy()

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        self.counts[2] += 1
        self.model._values[:] = x
        out = np.asarray(self._hvp(np.asarray(v, dtype=self.dtype), self.data), dtype=np.float64)
        if not np.all(np.isfinite(out)):
            known = self._x is not None and np.array_equal(x, self._x)
            raise _NonFinite(self._value if known else math.nan)
        return out.ravel()


def _mean_loss_and_grad(model, X: np.ndarray):
    """``at(values) -> (mean loss, mean gradient)`` of a per-sample model on columns ``X``."""
    from ..kernels.trainer import loss_and_grad_sum
    from .model import PARALLEL_FROM

    blocks, n = model._blocks(), X.shape[1]
    parallel = n >= PARALLEL_FROM
    grad = np.empty_like(model._values)

    def at(values: np.ndarray) -> tuple[float, np.ndarray]:
        total = loss_and_grad_sum(*blocks, parallel, values, X, 0, n, grad)
        return total / n, grad / n

    return at


def fit_scipy(model, data: Mapping, optimizer: ScipyOptimizer, epochs: int,
              batch_size: int | None, *, validation: Mapping | None, early_stopping: int | None,
              metrics, callbacks, verbose: int, engine: str | None, seed: int | None = None,
              initial_epoch: int | None = None, checkpoint=None, checkpoint_every: int = 1,
              client=None) -> History:
    """``model.fit`` with a scipy method (see the module docstring); ``model.fit`` checks
    the arguments this shares with the other optimizers and hands over here."""
    ready()  # Numba's cache of the kernels is checked before end_epoch loads from it
    from scipy.optimize import minimize

    from ..kernels.loops import end_epoch
    from .model import _checkpoints, _count

    if batch_size is not None:
        raise InputError(f"{type(optimizer).__name__} trains on the full batch (one iteration "
                         f"uses every sample); pass batch_size=None, not {batch_size!r}, or "
                         "use a first-order optimizer such as symgrad.optim.Adam for "
                         "minibatches.")
    if client is not None:
        raise InputError(f"{type(optimizer).__name__} trains in this process (scipy's method "
                         "is sequential); fit without client=, or train on the cluster with a "
                         "first-order optimizer such as symgrad.optim.Adam.")
    if engine not in (None, "auto", "compiled"):
        raise ValueError(f"{type(optimizer).__name__} runs the compiled code: engine must be "
                         f"'auto' or 'compiled', got {engine!r}")
    X, V, _, n_val = model._fit_data(data, validation)
    epochs = _count(epochs, "epochs", 0)
    patience = 0 if early_stopping is None else _count(early_stopping, "early_stopping", 1)
    metric_fns = model._metric_functions(metrics)
    callbacks = list(callbacks)
    objective = _Objective(model, data, X, hessian=optimizer.method == "Newton-CG")
    model.optimizer = optimizer
    model.seed = model.seed if seed is None else _count(seed, "seed", 0)
    first = (model.epochs_trained if initial_epoch is None
             else _count(initial_epoch, "initial_epoch", 0))
    saving = None if checkpoint is None else _checkpoints(checkpoint, checkpoint_every)
    val_loss = _validation_loss(model, validation, V) if n_val else None

    values = model._values
    accepted = values.copy()  # the last iterate, what the parameters hold after the run
    interrupts = Interrupts()
    if epochs:
        with interrupts.held(note=COMPILING):  # a Ctrl-C waits for the compile to finish
            t0 = time.perf_counter()
            objective.prime(accepted.astype(np.float64))
            values[:] = accepted
            model.timings["scipy_prime_s"] = time.perf_counter() - t0
    interrupts.check()  # then stops here, before training: there is nothing to keep
    losses = np.full(first + max(epochs, 1), np.nan)  # indexed by epoch number
    val_losses = np.full(first + max(epochs, 1), np.nan)
    best, best_params = np.array([np.inf, -1.0, 0.0]), values.copy()
    history = model.history = History()
    seen = np.zeros(3, dtype=np.int64)
    clock = {"start": time.perf_counter(), "epoch": time.perf_counter(), "bar": None}
    stop = {}

    def end(loss: float, status: int | None = None) -> None:
        """Record the epoch that just ended; raise StopIteration to end the method."""
        e = first + len(history)
        values[:] = accepted  # metrics and callbacks see the iterate
        if status is None:
            monitor = val_loss(accepted) if val_loss is not None else 0.0
            # the loss is the iterate's own: it is the "before" whose loss it is, too
            status = end_epoch(e, loss, monitor, n_val > 0, accepted, accepted, losses,
                               val_losses, best, best_params, patience)
        else:
            losses[e] = loss
        new = objective.counts - seen
        seen[:] = objective.counts
        for name, count in zip(("n_fev", "n_gev", "n_hvp"), new.tolist()):
            getattr(history, name).append(count)
        now = time.perf_counter()
        asked = model._record(history, e, 1, now - clock["epoch"], losses, val_losses, V, X,
                              n_val, metric_fns, callbacks)
        clock["epoch"] = now
        model.epochs_trained = e + 1
        clock["bar"] = model._progress(clock["bar"], verbose, len(history), epochs,
                                       clock["start"], history)
        if saving and saving.due(e + 1) and status == DONE and not asked:
            model._keep_best(history, best, best_params)
            saving.save(model)
        if status == DIVERGED:
            stop["reason"] = "diverged"
        elif status == EARLY_STOPPING:
            stop["reason"] = "early_stopping"
        elif asked:
            stop["reason"] = "callback"
        if stop:
            raise StopIteration
        interrupts.check()  # a held Ctrl-C ends the method here, between iterations

    def callback(intermediate_result) -> None:
        accepted[:] = intermediate_result.x
        end(float(intermediate_result.fun))

    result = None
    interrupts.start(forceable=True, note=TRAINING)
    try:
        if epochs:
            extra = {"hessp": objective.hessp} if objective._hvp is not None else {}
            with _blas_threads(model):
                clock["start"] = clock["epoch"] = time.perf_counter()
                result = minimize(objective.fun, accepted.astype(np.float64), jac=objective.jac,
                                  method=optimizer.method, callback=callback,
                                  options={**optimizer.options(), "maxiter": epochs,
                                           **_unlimited(optimizer)}, **extra)
    except _NonFinite as e:
        try:
            end(e.loss, DIVERGED)
        except StopIteration:
            pass
    except KeyboardInterrupt:
        stop["reason"] = "interrupted"
        warnings.warn(f"training interrupted after {len(history)} epochs; the history is kept "
                      "and the best parameters so far are restored.", RuntimeWarning,
                      stacklevel=3)
    except BaseException:
        stop.setdefault("reason", "error")  # e.g. a callback or metric raised
        raise
    finally:
        interrupts.stop()
        if clock["bar"] is not None:
            clock["bar"].close()
        values[:] = accepted
        _finish(model, history, result, stop, best, best_params, objective.counts - seen)
        if saving:
            saving.save(model)  # the model as fit leaves it
    return history


def _finish(model, history: History, result, stop: dict, best, best_params, rest) -> None:
    """Stop reason, the counts of evaluations after the last iteration (``rest``, added to
    the last epoch), best parameters (restored after the stops of ``RESTORES_BEST``, as in
    the compiled loops)."""
    from .model import DivergenceWarning

    if result is not None:
        history.message = str(result.message)
    if history.epoch and rest.any():
        for name, count in zip(("n_fev", "n_gev", "n_hvp"), rest.tolist()):
            getattr(history, name)[-1] += count
    if stop:
        history.stop_reason = stop["reason"]
    elif result is not None and result.status == 0:
        history.stop_reason = "converged"
    elif result is not None and result.status != 1:  # 1: the iteration limit, i.e. epochs
        history.stop_reason = "stalled"
    model._end_fit(history, best, best_params)
    if history.stop_reason == "diverged":
        finite = [v for v in history.loss if math.isfinite(v)]
        last = f"; the last finite loss was {finite[-1]:.6g}" if finite else ""
        warnings.warn(
            f"training diverged at epoch {history.epoch[-1]}: the loss, its gradient or a "
            f"Hessian-vector product became NaN or infinite{last}. Training stopped and the "
            "best parameters so far were restored. Check the loss for overflow (symgrad's "
            "stable forms: sg.softplus, sg.losses.bce_with_logits) or start closer.",
            DivergenceWarning, stacklevel=4)


def _blas_threads(model):
    """One BLAS thread while scipy's method runs on a per-sample model: its linear algebra is
    on vectors and (L-BFGS) 2m x 2m matrices, where waking BLAS threads costs more than it
    saves (L-BFGS-B took 8 ms per iteration on a busy 2-core machine, 0.15 ms on one thread);
    the model's own code is Numba's, without BLAS. A matrix model keeps BLAS's threads for its
    products."""
    from .arrays import ArrayModel

    if isinstance(model, ArrayModel):
        return contextlib.nullcontext()
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().limit(limits=1, user_api="blas")


def _unlimited(optimizer: ScipyOptimizer) -> dict:
    """Let ``epochs`` bound the run, not scipy's cap on function evaluations."""
    return {"maxfun": 10**9} if optimizer.method == "L-BFGS-B" else {}


def _validation_loss(model, validation: Mapping, V):
    """``loss(values)``: the mean loss on the validation data."""
    from .arrays import ArrayModel

    if isinstance(model, ArrayModel):
        at = model.evaluator(validation)
        return lambda values: at(values)[0]
    from ..kernels.trainer import loss_sum

    blocks = model._blocks()
    return lambda values: loss_sum(*blocks, False, values, V) / V.shape[1]
