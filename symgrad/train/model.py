"""``symgrad.Model``: a per-sample loss, its parameters and data, trained by compiled code.

The whole loop (epochs, shuffling, minibatches, the per-sample flat forward/backward code
inlined in a loop over samples, the optimizer update) runs in one generated Numba module;
Python only runs between chunks of epochs, sized to ~0.1 s, for the history, the progress
bar and callbacks. Nothing is lost when a run stops: the history and the best parameters
are kept on divergence, early stopping, Ctrl-C and an exception alike, and the model gets
the best parameters back (see ``History``).
"""

from __future__ import annotations

import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import sympy as sp

from ..compile import CompiledFunction, Pipeline
from ..compile import compile as compile_function
from ..compile.cache import cache_dir as _cache_dir
from ..compile.inputs import real_number
from ..emit import GeneratedModule
from ..errors import ExpressionError, InputError, NotSupportedError
from ..expression import as_expression, free_symbols
from ..expression import stabilize as _stabilize
from ..graph import Graph, Node
from ..rules import Program
from .data import PreparedData, by_symbol, columns
from .history import DIVERGED, DONE, EARLY_STOPPING, RESTORES_BEST, History
from .interrupt import COMPILING, TRAINING, Interrupts
from .metrics import METRICS
from .optim import Adam, Optimizer, ScipyOptimizer

__all__ = ["DivergenceWarning", "Model"]

#: Sample count from which the loops over samples run on all cores (prange).
PARALLEL_FROM = 50_000
#: From PARALLEL_FROM samples, fit runs on all cores and tries the other way (one core, or
#: all) for one epoch whenever the time spent on such tries is within PROBE_BUDGET of the
#: time spent training: at most ~2 % lost on a quiet machine, whatever its core count.
PROBE_BUDGET = 0.02
#: Parameter counts above this get no full Hessian (``hessian``); ``hvp`` has no limit.
HESSIAN_MAX_PARAMS = 2000


class DivergenceWarning(RuntimeWarning):
    """The training loss or the parameters became NaN or infinite; training stopped."""


class Model:
    """A model to fit: ``loss`` per sample, ``params`` with initial values, ``data`` columns.

    The risk minimised is the mean of ``loss`` over the samples (of a batch). ``prediction``
    and ``target`` (optional) let ``fit`` report metrics such as accuracy or R².
    ``stabilize=True`` (default) rewrites plain forms that overflow, such as
    ``log(1 + exp(z))`` or ``log(1/(1 + exp(-z)))``, into ``softplus``, ``log_sigmoid``,
    ``logsumexp`` (see ``symgrad.expression.stabilize``); ``False`` trains the loss as written.
    """

    #: How this kind of model names its symbols in errors (``ArrayModel``: matrices).
    _symbol_type: type = sp.Symbol
    _params_form = "{symbol: initial value}"
    _not_a_symbol = "params and data must be SymPy symbols, got {!r}."
    _data_word = "a data column"  # "... both a parameter and a data column"
    _data_label = "data column"  # "data column x does not occur in the loss"

    def __new__(cls, loss=None, params=None, *args, **kwargs):
        if cls is Model and _uses_matrices(loss, params):
            from .arrays import ArrayModel

            return super().__new__(ArrayModel)
        return super().__new__(cls)

    def __init__(
        self,
        loss: sp.Expr,
        params: Mapping[sp.Symbol, float],
        data: Sequence[sp.Symbol],
        *,
        prediction: sp.Expr | None = None,
        target: sp.Symbol | None = None,
        optimizer: Optimizer | None = None,
        name: str = "loss",
        fast_math: bool = True,
        cache_dir: str | os.PathLike | None = None,
        stabilize: bool = True,
    ) -> None:
        self.loss = as_expression(loss)
        if stabilize:  # plain forms that overflow -> sigmoid, softplus, logsumexp, ...
            self.loss = _stabilize(self.loss)
        self._bind(params, data)
        self._check_known(free_symbols(self.loss))
        self._values = np.array([_initial(s, v) for s, v in params.items()])
        self._settings(as_expression(prediction) if prediction is not None else None, target,
                       optimizer, name, fast_math, cache_dir, stabilize)
        #: The loss's graph, program and generated trainer (``symgrad.compile.pipeline``).
        self.pipeline = Pipeline(self.loss, self._param_syms, data=self._data_syms,
                                 kind="trainer", name=name, fast_math=fast_math,
                                 cache_dir=cache_dir, check=self._check_nodes,
                                 timings=self.timings)

    # -- what every model checks (ArrayModel too, in its words) -------------------------

    def _bind(self, params: Mapping, data: Sequence) -> None:
        """The parameter and data symbols: a non-empty dict of parameters, symbols of this
        kind of model, none of them both a parameter and data."""
        if not isinstance(params, Mapping) or not params:
            raise ExpressionError(f"params must be a non-empty dict {self._params_form}.")
        self._param_syms = list(params)
        self._data_syms = list(data)
        for s in [*self._param_syms, *self._data_syms]:
            if not isinstance(s, self._symbol_type):
                raise ExpressionError(self._not_a_symbol.format(s))
        both = set(self._param_syms) & set(self._data_syms)
        if both:
            raise ExpressionError(f"{', '.join(s.name for s in both)} is listed as both a "
                                  f"parameter and {self._data_word}; it can be only one.")

    def _check_known(self, used) -> None:
        """Every symbol the loss uses is a parameter or data."""
        known = set(self._param_syms) | set(self._data_syms)
        unknown = [s.name for s in used if s not in known]
        if unknown:
            raise ExpressionError(f"the loss uses {', '.join(unknown)}, which is neither a "
                                  f"parameter nor {self._data_word}; add it to params or data.")

    def _check_nodes(self, pipeline: Pipeline) -> None:
        """Every parameter and data symbol occurs in the loss's graph (the pipeline's
        ``check``, run before the reverse pass)."""
        for s, node in zip(self._param_syms, pipeline.param_nodes):
            if node is None:
                raise ExpressionError(f"parameter {s.name} does not occur in the loss, so it "
                                      "cannot be trained; remove it from params.")
        for s, node in zip(self._data_syms, pipeline.data_nodes):
            if node is None:
                raise ExpressionError(f"{self._data_label} {s.name} does not occur in the loss; "
                                      "remove it from data (or use it in the loss).")

    def _settings(self, prediction, target, optimizer, name, fast_math, cache_dir,
                  stabilize) -> None:
        """What every model keeps beside its loss and parameters (see ``__init__``)."""
        self.stabilize = stabilize
        self.prediction = prediction
        self.target = target
        self.optimizer = optimizer if optimizer is not None else Adam()
        self.name = name
        self.fast_math = fast_math
        self.cache_dir = cache_dir
        _cache_dir(cache_dir)  # an empty one is refused now, not at the first fit
        self.history: History | None = None
        #: Epochs trained so far: the next ``fit`` numbers its first epoch so (with ``seed``
        #: it decides the shuffle and dropout masks), like Keras's ``initial_epoch``.
        self.epochs_trained = 0
        #: The last ``fit``'s seed, the default of the next one.
        self.seed = 0
        self.timings: dict = {}
        self._predictors: dict = {}  # compiled (or lowered) predictions by expression
        #: fit's seconds per epoch on all cores and on one, and its runs of epochs, by
        #: (batch size, samples, validation samples): kept from one fit to the next
        self._epoch_times: dict = {}

    # -- what users read -------------------------------------------------------------

    @property
    def params(self) -> dict[sp.Symbol, float]:
        """Current parameter values."""
        return dict(zip(self._param_syms, self._values.tolist()))

    @params.setter
    def params(self, values: Mapping[sp.Symbol, float]) -> None:
        for s, v in values.items():
            if s not in self._param_syms:
                raise InputError(f"{s} is not a parameter of this model.")
            self._values[self._param_syms.index(s)] = _initial(s, v)

    @property
    def source(self) -> str:
        """The whole generated training module (standalone: it carries a copy of the symgrad
        kernels it uses, the training loop among them)."""
        return self.pipeline.render(standalone=True).source

    @property
    def ir(self) -> Graph:
        """The graph of the loss (nodes named as in the listing)."""
        return self.pipeline.graph

    @property
    def program(self) -> Program:
        """The loss's forward and backward assignments (SymPy data), one per listing line."""
        return self.pipeline.program

    @property
    def param_nodes(self) -> tuple[Node, ...]:
        """The graph's input nodes of the parameters, in the order of :attr:`params`."""
        return tuple(self.pipeline.param_nodes)

    @property
    def data_nodes(self) -> tuple[Node, ...]:
        """The graph's input nodes of the data columns, in the order they were given."""
        return tuple(self.pipeline.data_nodes)

    @property
    def generated(self) -> GeneratedModule:
        """The generated module (listing and the source of the block kernel symgrad's cache
        holds; :attr:`source` is the standalone one)."""
        return self.pipeline.generated

    @property
    def trainer(self) -> ModuleType:
        """The imported generated module (its kernels compile on first use)."""
        return self.pipeline.module

    def save(self, path: str | os.PathLike) -> Path:
        """Write the generated training module (standalone: needs only NumPy and Numba)."""
        path = Path(path)
        path.write_text(self.source, encoding="utf-8")
        return path

    def listing(self, columns: bool = False, order: int = 1) -> str:
        """The flat forward/backward code that the training loop runs (per sample; a matrix
        model's: whole-array lines); ``order=2`` adds the tangent lines that :meth:`hvp`
        runs after them."""
        g = self.generated
        text = CompiledFunction.format_listing(g.forward, g.backward, columns)
        if order == 1:
            return text
        if order != 2:
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        return text + CompiledFunction.format_tangent(self._tangent_listing())

    def _tangent_listing(self) -> list[str]:
        return self.pipeline.second_generated.tangent

    def __repr__(self) -> str:
        params = ", ".join(f"{s}={v:.4g}" for s, v in self.params.items())
        data = ", ".join(map(str, self._data_syms))
        return f"<Model {self.name}: params ({params}); data ({data})>"

    # -- training ---------------------------------------------------------------------

    def prepare(self, data: Mapping) -> PreparedData:
        """``data`` checked and laid out once, for many calls: ``fit``, ``evaluate``,
        ``predict``, ``hvp`` and ``hessian`` take the result wherever they take a dict, and
        skip the checks and copies a dict costs on every call. It is a copy: later changes
        to the arrays of ``data`` do not reach it (see :class:`PreparedData`)."""
        X = columns(data, self._data_syms, "data")  # a new array (stacked), the set's own
        return PreparedData(self._data_layout(), X, X.shape[1])

    def _data_layout(self) -> tuple:
        """What prepared data must match: a description for errors, then the key."""
        names = ", ".join(s.name for s in self._data_syms)
        return (f"data {names} as float64 columns", tuple(self._data_syms))

    def _columns(self, data, what: str) -> np.ndarray:
        """``data`` (a dict or prepared data) as checked columns, (data symbols, samples)."""
        if isinstance(data, PreparedData):
            return data.arrays_for(self._data_layout(), what)
        return columns(data, self._data_syms, what)

    def fit(
        self,
        data: Mapping,
        optimizer: Optimizer | None = None,
        epochs: int = 1,
        batch_size: int | None = None,
        *,
        validation: Mapping | None = None,
        early_stopping: int | None = None,
        shuffle: bool | None = None,
        seed: int | None = None,
        drop_last: bool = False,
        metrics: Iterable[str | Callable] = (),
        callbacks: Iterable[Callable[[int, dict], bool | None]] = (),
        verbose: int = 1,
        engine: str | None = None,
        initial_epoch: int | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 1,
        client=None,
    ) -> History:
        """Train for ``epochs`` epochs and return the History (also kept as ``self.history``).

        ``data`` and ``validation`` map data symbols (or names) to arrays, or are what
        :meth:`prepare` made of such a dict: checked and laid out once, for repeated fits.

        ``batch_size=None`` is full-batch gradient descent, ``m`` minibatches of ``m`` samples
        (shuffled each epoch unless ``shuffle=False``, reproducibly from ``seed``), ``1``
        stochastic GD. ``early_stopping=k`` stops after ``k`` epochs without improvement of
        the validation loss (training loss without ``validation``) and restores the best
        parameters. ``metrics`` are names from ``symgrad.metrics`` or ``f(y_true, y_pred)``
        and need ``prediction`` and ``target``; metrics and ``callbacks(epoch, logs)`` (which
        may return True to stop) run after every epoch. ``verbose=0`` hides the progress bar.
        Ctrl-C stops between chunks of epochs (a second one at once; while Numba compiles, it
        waits for the compile), and like divergence, early stopping or an exception (which is
        re-raised) keeps the history and restores the best parameters; ``stop_reason`` says
        which happened.

        ``engine`` (default ``$SYMGRAD_ENGINE`` or ``"auto"``): ``"compiled"`` runs the
        compiled loop (compiling it first if needed); ``"auto"`` does too, except that a
        matrix model whose compiled loop is not in the cache yet starts on its NumPy tier
        while another process compiles the loop, and switches to it between chunks of epochs
        once it is ready (the progress bar and ``History.engine`` show which ran);
        ``"numpy"`` runs the NumPy tier only.

        ``client`` (a ``dask.distributed.Client``) trains data-parallel on its cluster, with
        ``data`` (and ``validation``) mapping each data symbol to a ``dask.array`` chunked
        along the samples: see ``symgrad.train.distributed``.

        Consecutive fits continue one run: the epochs are numbered on from
        ``epochs_trained`` (``initial_epoch=`` sets the first number, as in Keras), the
        shuffle and dropout masks come from ``seed`` (default: the last fit's) and that
        number, and the optimizer keeps its state (Adam's moments, its step count) as long
        as it is the same optimizer object. ``checkpoint=path`` keeps the model saved there
        (``symgrad.save_model``, atomically) every ``checkpoint_every`` epochs and when the
        fit ends or stops: ``symgrad.load_model(path).fit(data, ..., epochs=remaining)``
        ends where the uninterrupted run would, bit for bit.

        ``optimizer=symgrad.optim.LBFGS()`` or ``NewtonCG()`` trains full batch through
        ``scipy.optimize.minimize``, one iteration per epoch (``symgrad.train.scipy_loop``;
        a run resumed from a checkpoint restarts the method from the saved parameters).
        """
        if isinstance(optimizer if optimizer is not None else self.optimizer, ScipyOptimizer):
            from .scipy_loop import fit_scipy

            return fit_scipy(self, data, optimizer or self.optimizer, epochs, batch_size,
                             validation=validation, early_stopping=early_stopping,
                             metrics=metrics, callbacks=callbacks, verbose=verbose, engine=engine,
                             seed=seed, initial_epoch=initial_epoch, checkpoint=checkpoint,
                             checkpoint_every=checkpoint_every, client=client)
        engine = engine or os.environ.get("SYMGRAD_ENGINE") or "auto"
        if engine not in ("auto", "compiled", "numpy"):
            raise ValueError(f"engine must be 'auto', 'compiled' or 'numpy', got {engine!r}")
        if client is not None:
            from .distributed import fit_job

            X, V, n, n_val, distributed = fit_job(self, client, data, validation, metrics)
        else:
            X, V, n, n_val = self._fit_data(data, validation)
        epochs = _count(epochs, "epochs", 0)
        size = n if batch_size is None else _count(batch_size, "batch_size", 1)
        size = min(size, n)
        shuffle = (size < n) if shuffle is None else bool(shuffle)
        patience = 0 if early_stopping is None else _count(early_stopping, "early_stopping", 1)
        metric_fns = self._metric_functions(metrics)
        callbacks = list(callbacks)
        optimizer = optimizer if optimizer is not None else self.optimizer
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be one of symgrad.optim's, got {optimizer!r}")
        optimizer.check()  # again: its fields may have been set since it was made
        self.optimizer = optimizer

        drop_last = bool(drop_last)
        seed = self.seed = self.seed if seed is None else _count(seed, "seed", 0)
        first = (self.epochs_trained if initial_epoch is None
                 else _count(initial_epoch, "initial_epoch", 0))
        saving = None if checkpoint is None else _checkpoints(checkpoint, checkpoint_every)
        hyper = optimizer.hyper()
        losses = np.full(first + max(epochs, 1), np.nan)  # indexed by epoch number
        val_losses = np.full(first + max(epochs, 1), np.nan)
        best = np.array([np.inf, -1.0, 0.0])
        best_params = self._values.copy()
        state = optimizer.state_for(len(self._values), self._values.dtype)
        steps = int(optimizer.step[0])  # updates the model has counted epochs for

        def run(done: int, count: int) -> tuple[int, int]:
            return train(self._values, state, optimizer.step, hyper, first + done, count, size,
                         drop_last, shuffle, seed, patience, losses, val_losses, best,
                         best_params)

        interrupts = Interrupts()
        with interrupts.held(note=COMPILING):  # a Ctrl-C waits for the compile to finish
            train = (distributed(optimizer, size, shuffle, drop_last) if client is not None
                     else self._train_function(optimizer, size, X, V, engine))
            if ("compile_s" not in self.timings
                    and getattr(train, "engine", "compiled") == "compiled"):
                t0 = time.perf_counter()
                run(0, 0)  # zero epochs: only makes Numba compile (or load) the loop
                self.timings["compile_s"] = time.perf_counter() - t0
        interrupts.check()  # then stops here, before training: there is nothing to keep
        history = History()
        self.history = history
        per_epoch = bool(metric_fns or callbacks)
        chunk, done, bar = 1, 0, None
        start = time.perf_counter()
        interrupts.start(forceable=True, note=TRAINING)  # a Ctrl-C stops between chunks
        try:
            while done < epochs:
                interrupts.check()
                t0 = time.perf_counter()
                was = getattr(train, "engine", "compiled")
                count = min(chunk, epochs - done)
                ran, status = run(done, saving.limit(first + done, count) if saving else count)
                self.epochs_trained, steps = first + done + ran, int(optimizer.step[0])
                dt = time.perf_counter() - t0
                now = getattr(train, "engine", "compiled")
                history.engine.extend([now] * ran)
                if now != was:
                    self.timings["switched_at_epoch"] = done
                    self.timings["numpy_s"] = t0 - start
                stop = self._record(history, first + done, ran, dt, losses, val_losses, V, X,
                                    n_val, metric_fns, callbacks)
                done += ran
                if saving and saving.due(self.epochs_trained) and status == DONE and not stop:
                    self._keep_best(history, best, best_params)
                    saving.save(self)
                bar = self._progress(bar, verbose, done, epochs, start, history, now, was)
                if status == DIVERGED:
                    history.stop_reason = "diverged"
                    self._warn_divergence(history, optimizer)
                    break
                if status == EARLY_STOPPING:
                    history.stop_reason = "early_stopping"
                    break
                if stop:
                    history.stop_reason = "callback"
                    break
                if not per_epoch:
                    chunk = max(1, min(epochs, int(0.1 * ran / max(dt, 1e-9))))
        except KeyboardInterrupt:
            history.stop_reason = "interrupted"
            warnings.warn(f"training interrupted after {len(history)} epochs; the history is "
                          "kept and the best parameters so far are restored.", RuntimeWarning,
                          stacklevel=2)
        except BaseException:
            if history.stop_reason == "completed":
                history.stop_reason = "error"  # e.g. a callback or metric raised
            raise
        finally:
            interrupts.stop()
            if bar is not None:
                bar.close()
            self._end_fit(history, best, best_params)
            if saving:  # the model as fit leaves it; not after a stop inside a chunk (a
                # forced Ctrl-C), whose epochs ran but are not counted
                saving.save(self, consistent=int(optimizer.step[0]) == steps)
        return history

    def _keep_best(self, history: History, best: np.ndarray, best_params: np.ndarray) -> None:
        """The best epoch so far, its loss and parameters, into ``history``."""
        if best[1] >= 0:
            history.best_epoch = int(best[1])
            history.best_loss = float(best[0])
            history.best_params = self._unflatten(best_params)

    def _end_fit(self, history: History, best: np.ndarray, best_params: np.ndarray) -> None:
        """The best epoch into ``history``, and its parameters back into the model after the
        stops of ``RESTORES_BEST``."""
        self._keep_best(history, best, best_params)
        if best[1] >= 0 and history.stop_reason in RESTORES_BEST:
            self._values[:] = best_params

    def __reduce__(self):
        """Pickling goes through the saved-model format (no pickled internals): the copy is
        ``symgrad.load_model`` of the bytes ``symgrad.save_model`` would write."""
        from .persist import model_bytes, model_from_bytes

        return (model_from_bytes, (model_bytes(self),))

    def evaluate(self, data: Mapping, *, client=None) -> float:
        """Mean loss over ``data`` at the current parameters; with a Dask ``client``, on the
        cluster (see ``symgrad.train.distributed``)."""
        if client is not None:
            from .distributed import evaluate

            return evaluate(self, client, data)
        from ..kernels.trainer import loss_sum

        X = self._columns(data, "data")
        parallel = X.shape[1] >= PARALLEL_FROM
        return loss_sum(*self._blocks(), parallel, self._values, X) / X.shape[1]

    def loss_and_grad_sum(self, values: np.ndarray, data: np.ndarray, grad: np.ndarray) -> float:
        """The compiled trainer code itself: the sum of the per-sample loss (returned) and of
        its gradient (into ``grad``) over the samples of ``data`` (one row per data column, a
        C-contiguous float64 array), at the parameter values ``values``. From
        ``PARALLEL_FROM`` samples on, the samples are shared among Numba's threads (as in
        ``fit`` and ``hvp``)."""
        from ..kernels.trainer import loss_and_grad_sum

        n = data.shape[1]
        return loss_and_grad_sum(*self._blocks(), n >= PARALLEL_FROM, values, data, 0, n, grad)

    # -- second order -----------------------------------------------------------------

    def hvp(self, v, data, values: np.ndarray | None = None):
        """Hessian of the mean loss over ``data`` times ``v``, without forming the Hessian.

        ``v`` is shaped like :attr:`params`: a dict keyed by parameter (the result is such a
        dict), or a flat array in parameter order (the result is a flat array). ``data`` is
        a dict of columns as for ``fit`` (checked), or the checked 2-D array
        ``loss_and_grad_sum`` takes (one C-contiguous float64 row per data column).
        ``values`` (flat, parameter order) evaluates elsewhere than the current parameters.
        One compiled pass over the samples (forward over reverse: the per-sample flat code
        and its tangent lines, in the block loop that ``fit`` uses).
        """
        flat = not isinstance(v, Mapping)
        vec = self._direction(v)
        X = self._hvp_data(data)
        at = self._values if values is None else self._point(values)
        hv = self._hvp_at(at, vec, X)
        return hv if flat else self._unflatten(hv)

    def hessian(self, data, values: np.ndarray | None = None) -> np.ndarray:
        """The Hessian of the mean loss over ``data``: an ``(n, n)`` array, rows and columns in
        the order of :attr:`params` (``data`` and ``values`` as for :meth:`hvp`).

        One Hessian-vector product per column, so offered up to
        :data:`HESSIAN_MAX_PARAMS` parameters; above, use :meth:`hvp`.
        """
        n = len(self._values)
        if n > HESSIAN_MAX_PARAMS:
            raise NotSupportedError(
                f"the model has {n} parameters: its full Hessian ({n}x{n} entries) is offered "
                f"up to {HESSIAN_MAX_PARAMS} parameters only. Use model.hvp(v, data) (Hessian "
                "times a vector, the same cost as a few gradients) instead.")
        X = self._hvp_data(data)
        at = self._values if values is None else self._point(values)
        hess, e = np.empty((n, n)), np.zeros(n)
        for k in range(n):
            e[:] = 0.0
            e[k] = 1.0
            hess[:, k] = self._hvp_at(at, e, X)
        return hess

    def _hvp_at(self, values: np.ndarray, v: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Hessian of the mean loss over the samples of ``X`` at ``values``, times ``v``."""
        from ..kernels.trainer import loss_and_grad_sum

        m = self.pipeline.second_module
        n = len(self._values)
        both = np.concatenate([values, v])
        out = np.empty(2 * n)
        loss_and_grad_sum(m.hvp_block, m.hvp_exact, m.HAS_EXACT,
                          X.shape[1] >= PARALLEL_FROM, both, X, 0, X.shape[1], out)
        return out[n:] / X.shape[1]

    def _direction(self, v) -> np.ndarray:
        """``v`` (a dict keyed by parameter, or flat in parameter order) as a flat array."""
        if isinstance(v, Mapping):
            one_per_parameter(v, self._param_syms, "entry")
            return self._point([v[s] for s in self._param_syms], "v")
        return self._point(v, "v")

    def _point(self, values, name: str = "values") -> np.ndarray:
        """A flat float64 array of one finite number per parameter (parameter order)."""
        n = len(self._values)
        try:
            a = np.array(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be {n} real numbers, one per parameter in the order "
                             "of model.params.") from None
        if a.shape != (n,):
            raise InputError(f"{name} must have {n} entries (one per parameter, in the order of "
                             f"model.params), got {a.size}.")
        if not np.isfinite(a).all():
            raise InputError(f"{name} holds NaN or inf at index "
                             f"{int(np.flatnonzero(~np.isfinite(a))[0])}; give finite numbers.")
        return a

    def _hvp_data(self, data) -> np.ndarray:
        if isinstance(data, np.ndarray):
            rows = len(self._data_syms)
            if (data.ndim != 2 or data.shape[0] != rows or data.shape[1] == 0
                    or data.dtype != np.float64 or not data.flags.c_contiguous):
                raise InputError(f"data as an array must be C-contiguous float64 of shape "
                                 f"({rows}, samples), one row per data column; or pass a dict "
                                 "of columns as for fit.")
            return data
        return self._columns(data, "data")

    def predict(self, expr: sp.Expr | None = None, data: Mapping | None = None, *,
                client=None) -> np.ndarray:
        """Evaluate ``expr`` (default: ``prediction``) at the current parameters on ``data``;
        with a Dask ``client``, chunk by chunk on the cluster (a dask array)."""
        if client is not None:
            from .distributed import predict

            return predict(self, client, expr, data)
        expr = as_expression(self._prediction_or(expr))
        if data is None:
            raise InputError("predict needs data: a dict from data symbols to arrays.")
        f = self._predictor(expr)
        needed = set(f.inputs)
        used = [s for s in self._data_syms if s in needed]
        if isinstance(data, PreparedData):
            X = data.arrays_for(self._data_layout(), "data")
            return self._evaluate(f, {s: X[k] for k, s in enumerate(self._data_syms)
                                      if s in needed})
        X = columns({s: v for s, v in by_symbol(data, self._data_syms).items() if s in used},
                    used, "data")
        return self._evaluate(f, dict(zip(used, X)))

    def _evaluate(self, f: CompiledFunction, data: Mapping[sp.Symbol, np.ndarray]) -> np.ndarray:
        """``f`` at the current parameters on already validated data columns."""
        values = {**dict(zip(self._param_syms, self._values)), **data}
        return f.value_batch({s: values[s] for s in f.inputs})

    # -- plumbing ---------------------------------------------------------------------

    def _fit_data(self, data: Mapping, validation: Mapping | None):
        """Checked training and validation data, and their sample counts."""
        X = self._columns(data, "data")
        V = (self._columns(validation, "validation") if validation is not None
             else np.empty((len(self._data_syms), 0)))
        return X, V, X.shape[1], V.shape[1]

    def _train_function(self, optimizer: Optimizer, size: int, X, V,
                        engine: str = "auto") -> Callable:
        """``train(values, state, step, hyper, first, count, size, ...)`` on this data."""
        if engine == "numpy":
            raise ValueError("engine='numpy' is for matrix models; a per-sample model always "
                             "runs its compiled loop (use engine='auto' or 'compiled').")
        from ..kernels.trainer import train as loop

        # "parallel": whether batches are large enough for all cores; "epochs_on_cores":
        # how many epochs of this fit ran on all cores and on one, as the choice below went
        self.timings["parallel"] = size >= PARALLEL_FROM
        ran_on = self.timings["epochs_on_cores"] = {"all": 0, "one": 0}
        blocks = self._blocks()

        def run(parallel, values, state, step, hyper, *rest):
            return loop(*blocks, parallel, optimizer.kind, values, state, step, hyper, X, V,
                        *rest)

        if not self.timings["parallel"]:
            def one_core(*args):
                ran, status = run(False, *args)
                ran_on["one"] += ran
                return ran, status
            return one_core
        return all_cores_or_one(run, self._epoch_times.setdefault(
            (size, X.shape[1], V.shape[1]), ({True: math.inf, False: math.inf}, [0.0, 0.0])),
            ran_on)

    def _unflatten(self, values: np.ndarray) -> dict:
        return dict(zip(self._param_syms, values.tolist()))

    def _generated(self) -> GeneratedModule:
        """The generated module, printed once: it serves every optimizer and loop."""
        return self.pipeline.generated

    def _module_file(self) -> Path:
        """The generated module's file in the cache (written if it is not there)."""
        return self.pipeline.path

    def _trainer(self) -> ModuleType:
        """The imported generated module."""
        return self.pipeline.module

    def _blocks(self) -> tuple:
        """The block kernel, its exact twin and whether that differs: the model's part of
        every call into ``symgrad.kernels.trainer``."""
        m = self.pipeline.module
        return m.block, m.exact, m.HAS_EXACT

    def _prediction_or(self, expr):
        """``expr``, or the model's ``prediction`` when it is None."""
        if expr is not None:
            return expr
        if self.prediction is None:
            raise ExpressionError("pass the expression to evaluate, or give the Model a "
                                  "prediction=...")
        return self.prediction

    def _predictor(self, expr: sp.Expr) -> CompiledFunction:
        f = self._predictors.get(expr)
        if f is None:
            syms = free_symbols(expr)
            known = set(self._param_syms) | set(self._data_syms)
            unknown = [s.name for s in syms if s not in known]
            if unknown:
                raise ExpressionError(f"{', '.join(unknown)} is neither a parameter nor a data "
                                      "column of this model.")
            f = compile_function(expr, wrt=syms[:1], cache_dir=self.cache_dir,
                                 stabilize=self.stabilize)
            self._predictors[expr] = f
        return f

    def _metric_functions(self, metrics) -> dict[str, Callable]:
        fns = {}
        for m in metrics:
            if isinstance(m, str):
                if m not in METRICS:
                    raise ValueError(f"unknown metric {m!r}; choose from {', '.join(METRICS)} "
                                     "or pass a function f(y_true, y_pred).")
                fns[m] = METRICS[m]
            elif callable(m):
                fns[getattr(m, "__name__", repr(m))] = m
            else:
                raise TypeError(f"metrics are names or functions, got {m!r}")
        if fns and (self.prediction is None or self.target is None):
            raise ExpressionError("metrics need the Model's prediction=... and target=... "
                                  "(the data symbol holding the true values).")
        return fns

    def _record(self, history, first, ran, dt, losses, val_losses, V, X, n_val, metric_fns,
                callbacks):
        stop = False
        for e in range(first, first + ran):
            history.epoch.append(e)
            history.loss.append(float(losses[e]))
            if n_val:
                history.val_loss.append(float(val_losses[e]))
            history.time.append(dt / ran)
            logs = {"loss": float(losses[e])}
            if n_val:
                logs["val_loss"] = float(val_losses[e])
            for name, fn in metric_fns.items():
                for split, cols, store, count in (("", X, history.metrics, 1),
                                                  ("val_", V, history.val_metrics, n_val)):
                    if count:
                        value = float(fn(*self._truth_and_prediction(cols)))
                        store.setdefault(name, []).append(value)
                        logs[split + name] = value
            for cb in callbacks:
                if cb(e, logs) is True:
                    stop = True
        return stop

    def _truth_and_prediction(self, cols: np.ndarray):
        data = dict(zip(self._data_syms, cols))
        return data[self.target], self._evaluate(self._predictor(self.prediction), data)

    def _progress(self, bar, verbose, done, epochs, start, history, engine="compiled",
                  was="compiled"):
        if not verbose or done >= epochs and bar is None:
            return bar
        elapsed = time.perf_counter() - start
        if bar is None and elapsed / max(done, 1) * epochs > 1.0:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, unit="epoch", leave=True)
        if bar is not None:
            bar.update(done - bar.n)
            post = {"loss": f"{history.loss[-1]:.4g}"}
            if history.val_loss:
                post["val_loss"] = f"{history.val_loss[-1]:.4g}"
            if history.engine and history.engine[0] == "numpy":
                post["engine"] = engine
            if engine != was:
                bar.write(f"epoch {done}: the compiled loop is ready; switched from NumPy to it")
            bar.set_postfix(post)
        return bar

    def _warn_divergence(self, history: History, optimizer: Optimizer) -> None:
        finite = [v for v in history.loss if math.isfinite(v)]
        last = f"; the last finite loss was {finite[-1]:.6g}" if finite else ""
        warnings.warn(
            f"training diverged at epoch {history.epoch[-1]}: the loss or the parameters became "
            f"NaN or infinite{last}. Training stopped and the best parameters so far were "
            f"restored. Try a smaller learning rate (lr={optimizer.lr:g} now, e.g. "
            f"lr={optimizer.lr / 10:g}).",
            DivergenceWarning,
            stacklevel=3,
        )


def all_cores_or_one(run: Callable, measured: tuple, ran_on: dict, probe: int = 1,
                     clock: Callable | None = None) -> Callable:
    """fit's ``train(values, state, step, hyper, first, count, *rest)`` from ``run(parallel,
    values, ...)``, which runs epochs on all cores or on one with the same results to the
    bit: all cores, or one, whichever ran an epoch faster when last tried. On a machine
    busy with other processes the threads wait for each other (W4 with two other
    processes running: 24 ms per epoch on two threads, 5.5 ms on one). The first two
    epochs run on all cores, alone (the first starts the threads, the second is
    timed), then one on one core; after that, one epoch the other way
    whenever the time spent trying stays within PROBE_BUDGET of the time spent
    training. ``measured`` = (seconds per epoch by parallel, [time training, time trying])
    stays with the model for the next fit on data of this size (a loop of fit(epochs=1)
    calls goes on where the last one stopped); ``ran_on`` counts the epochs run each way
    ("all", "one"). A try runs ``probe`` epochs; ``clock()``, if given, is the seconds the
    last run's epochs took (without starting threads), else its wall time counts."""
    per_epoch, spent = measured

    def all_cores() -> bool:
        return per_epoch[True] <= per_epoch[False]

    def train(values, state, step, hyper, first, count, *rest):
        if count == 0:  # the compile
            return run(True, values, state, step, hyper, first, count, *rest)
        done, status = 0, DONE
        while status == DONE and done < count:
            parallel = all_cores()
            known = per_epoch[parallel] < math.inf
            trying = known and spent[1] <= PROBE_BUDGET * spent[0]
            parallel = parallel != trying
            n = min(probe, count - done) if trying or not known else count - done
            t0 = time.perf_counter()
            ran, status = run(parallel, values, state, step, hyper, first + done, n, *rest)
            elapsed = time.perf_counter() - t0 if clock is None else clock()
            if not ran:
                break
            ran_on["all" if parallel else "one"] += ran
            if spent[0] or trying:  # the very first epoch also starts the threads
                per_epoch[parallel] = elapsed / ran
            spent[trying] += elapsed
            done += ran
        return done, status

    return train


def _checkpoints(path, every):
    from .persist import Checkpoints

    return Checkpoints(path, every)


def one_per_parameter(v: Mapping, params: Sequence, what: str) -> None:
    """Refuse a direction ``v`` keyed by anything but exactly the parameters ``params``."""
    unknown = [getattr(k, "name", repr(k)) for k in v if k not in params]
    missing = [p.name for p in params if p not in v]
    if unknown or missing:
        raise InputError(f"v must have one {what} per parameter"
                         + (f"; not parameters: {', '.join(unknown)}" if unknown else "")
                         + (f"; missing: {', '.join(missing)}" if missing else "") + ".")


def _uses_matrices(loss, params) -> bool:
    from sympy.matrices.expressions import MatrixSymbol

    from ..expression.arrays import is_array_expression

    if isinstance(params, Mapping) and any(isinstance(p, MatrixSymbol) for p in params):
        return True
    return isinstance(loss, sp.Basic) and is_array_expression(loss)


def _initial(symbol: sp.Symbol, value) -> float:
    value = real_number(f"initial value of {symbol.name}", value, nan_ok=True)  # f(...)'s rule
    if not math.isfinite(value):
        raise InputError(f"initial value of {symbol.name} is {value}; start from a finite value.")
    return value


def _count(value, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)
