"""Matrix models: ``symgrad.Model`` for losses written with ``sympy.MatrixSymbol``.

``Model(loss, params, data)`` becomes an :class:`ArrayModel` when the loss uses matrices.
The loss is already the risk of a batch (e.g. ``softmax_cross_entropy``, a mean over rows),
its parameters are matrices with initial values, its data matrices whose rows are samples
(the batch-size symbol). ``fit`` is the per-sample model's: epochs, minibatches, shuffling,
the optimizers, early stopping, the divergence guard and History, all in one compiled loop.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixSymbol

from ..compile import Pipeline
from ..compile.inputs import real_array
from ..errors import ExpressionError, InputError, ShapeError
from ..expression.arrays import Lowered, lower
from ..expression.evaluate import evaluate_numpy, lower_any
from ..expression.stabilize import stabilize as _stabilize
from ..expression.validate import as_expression
from ..graph import Node
from ..rules import Program
from .data import PreparedData, all_finite, refuse_prepared
from .interrupt import deferred
from .metrics import METRICS
from .model import Model, all_cores_or_one, one_per_parameter
from .optim import Optimizer

__all__ = ["ArrayModel", "SymmetryWarning", "one_hot"]

_DTYPES = {"float64": np.float64, "float32": np.float32}
#: Epochs of a try of the other way (two threads or one) in a full-batch fit on chunks of
#: the samples: one epoch (~10 us on W2) is too short for a second thread to start working.
SPLIT_PROBE = 16


class SymmetryWarning(UserWarning):
    """A weight matrix starts with all entries equal, so its units can never differ."""


def one_hot(labels, classes: int | None = None, dtype=np.float64) -> np.ndarray:
    """Integer class labels (N,) -> one-hot rows (N, classes)."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise InputError(f"one_hot takes a 1-D array of integer labels, got shape {y.shape} "
                         f"and dtype {y.dtype}.")
    k = int(y.max()) + 1 if classes is None else int(classes)
    if y.size and (y.min() < 0 or y.max() >= k):
        raise InputError(f"labels must lie in 0..{k - 1}, got {y.min()}..{y.max()}.")
    out = np.zeros((y.size, k), dtype=dtype)
    out[np.arange(y.size), y] = 1
    return out


class ArrayModel(Model):
    """A matrix model; see the module docstring. Built by ``symgrad.Model``."""

    _symbol_type = MatrixSymbol
    _params_form = "{MatrixSymbol: initial array}"
    _not_a_symbol = ("in a matrix model, params and data are sympy.MatrixSymbol; got {!r} "
                     "(write a scalar as a 1x1 MatrixSymbol).")
    _data_word = "data"
    _data_label = "data"

    def __init__(
        self,
        loss: sp.Expr,
        params: Mapping[MatrixSymbol, np.ndarray],
        data: Sequence[MatrixSymbol],
        *,
        prediction: sp.Basic | None = None,
        target: MatrixSymbol | None = None,
        optimizer: Optimizer | None = None,
        name: str = "loss",
        dtype: str = "float64",
        fast_math: bool = True,
        cache_dir: str | os.PathLike | None = None,
        stabilize: bool = True,
    ) -> None:
        if isinstance(loss, str):
            as_expression(loss)  # the uniform "no strings" error
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        self._bind(params, data)
        self.dtype = dtype
        self._np_dtype = _DTYPES[dtype]
        self._lowered = lower(loss)
        if stabilize:  # entry-wise plain forms that overflow -> sigmoid, softplus, ...
            self._lowered.expr = _stabilize(self._lowered.expr)
        self.loss = loss
        matrices = self._lowered.matrices
        self._check_known(matrices)
        for p in self._param_syms:
            if any(not isinstance(d, (int, sp.Integer)) for d in p.shape):
                raise ShapeError(f"parameter {p.name} has shape {p.shape}; parameter shapes must "
                                 "be numbers (only data rows are the batch size).")
        self._slices, lo = {}, 0  # where each parameter sits in the flat vector, its shape
        for p in self._param_syms:
            shape = (int(p.shape[0]), int(p.shape[1]))
            self._slices[p] = (slice(lo, lo + shape[0] * shape[1]), shape)
            lo += shape[0] * shape[1]
        self._values = np.concatenate([
            self._initial(p, v).ravel() for p, v in params.items()]).astype(self._np_dtype)
        self._settings(prediction, target, optimizer, name, fast_math, cache_dir, stabilize)
        self._numpy_loop_cache = None
        self._second_loop_cache = None
        #: The lowered loss's graph, program and generated loops (``symgrad.compile.pipeline``).
        self.pipeline = Pipeline(
            self._lowered.expr, [matrices.get(p) for p in self._param_syms],
            data=[matrices.get(d) for d in self._data_syms], kind="arrays", name=name,
            shapes=self._lowered.shapes, batch=self._lowered.batch, dtype=dtype,
            fast_math=fast_math, cache_dir=cache_dir, check=self._check_nodes,
            timings=self.timings)
        self._warn_symmetry()

    def _check_nodes(self, pipeline: Pipeline) -> None:
        """Model's checks, then: no scalar symbols but the batch size, and the targets of
        ``softmax_cross_entropy`` are data."""
        super()._check_nodes(pipeline)
        nodes = [*pipeline.param_nodes, *pipeline.data_nodes]
        extra = [n.symbol.name for n in pipeline.graph.inputs
                 if n.symbol != self._lowered.batch and n not in nodes]
        if extra:
            raise ExpressionError(f"the loss uses the scalar symbol(s) {', '.join(extra)}; in a "
                                  "matrix model every symbol is a parameter, data or the batch "
                                  "size.")
        self._targets = self._cross_entropy_targets(pipeline)

    # -- what users read -------------------------------------------------------------

    @property
    def params(self) -> dict[MatrixSymbol, np.ndarray]:
        """Current parameter values (copies)."""
        return self._unflatten(self._values)

    @params.setter
    def params(self, values: Mapping[MatrixSymbol, np.ndarray]) -> None:
        for p in values:
            if p not in self._slices:
                raise InputError(f"{p} is not a parameter of this model.")
        for p, v in values.items():
            self._values[self._slices[p][0]] = self._initial(p, v).ravel()
        self._warn_symmetry(only=set(values))

    @property
    def lowered(self) -> Lowered:
        """The loss lowered to scalar-looking form: its expression, the symbol standing for
        each matrix, their shapes and the batch-size symbol."""
        return self._lowered

    def data_arrays(self, data: Mapping) -> dict[MatrixSymbol, np.ndarray]:
        """``data`` checked as ``fit`` checks it: one array per data matrix, model dtype
        (read-only views of prepared data)."""
        return self._checked(data, "data")

    def prepare(self, data: Mapping) -> PreparedData:
        """``data`` checked and laid out once, for many calls: ``fit``, ``evaluate``,
        ``predict``, ``value_and_grad``, ``evaluator``, ``hvp`` and ``hessian`` take the
        result wherever they take a dict, and skip the checks and the copies a dict costs on
        every call. It holds its own copy in the layout the compiled loop reads (the model's
        dtype, batched matrices transposed where the model stores them so): later changes to
        the arrays of ``data`` do not reach it (see :class:`PreparedData`)."""
        X = self._storage(self._checked(data, "data"))
        given = match_matrices(data, self._data_syms, "data")
        X = tuple(a.copy() if np.may_share_memory(a, given[d]) else a
                  for a, d in zip(X, self._data_syms))
        return PreparedData(self._data_layout(), X, self._rows(X))

    def _data_layout(self) -> tuple:
        """What prepared data must match: a description for errors, then the key (data
        matrices, dtype, which are stored transposed, which are cross-entropy targets)."""
        flipped = self._flipped()
        parts = ", ".join(f"{d.name}{' transposed' if f else ''}"
                          for d, f in zip(self._data_syms, flipped))
        return (f"data {parts} in {self.dtype}", tuple(self._data_syms), self.dtype, flipped,
                frozenset(self._targets))

    def _stored(self, data, what: str) -> tuple:
        """``data`` (a dict or prepared data) checked, in the layout of the compiled loop."""
        if isinstance(data, PreparedData):
            return data.arrays_for(self._data_layout(), what)
        return self._storage(self._checked(data, what))

    def _tangent_listing(self) -> list[str]:
        """The tangent lines :meth:`hvp` runs (with NumPy), as whole-array code."""
        from ..emit.arrays import ArrayPrinter

        self._second_loop()
        printer = ArrayPrinter()
        return [printer.doprint(a) for a in self.pipeline.tangent.lines]

    def __repr__(self) -> str:
        params = ", ".join(f"{p.name}{tuple(int(d) for d in p.shape)}" for p in self._param_syms)
        data = ", ".join(f"{d.name}{d.shape}" for d in self._data_syms)
        return f"<Model {self.name} ({self.dtype}): params {params}; data {data}>"

    def value_and_grad(self, data: Mapping) -> tuple[float, dict[MatrixSymbol, np.ndarray]]:
        """The loss on ``data`` at the current parameters and its gradient per parameter."""
        loss, grad = self.evaluator(data)(self._values)
        return loss, self._unflatten(grad)

    def evaluator(self, data: Mapping):
        """``at(values) -> (loss, flat gradient)`` on ``data``, checked and laid out once.

        ``values`` and the gradient are all parameters flattened one after another, in the
        order of :attr:`params` (each row-major) and in the model's dtype.

        It runs ``train()`` with epochs = -1 (one evaluation pass), so the code ``fit()``
        runs is the code evaluated, compiled once.
        """
        X, _, n, _ = self._fit_data(data, None)
        module = self._trainer()
        buffers = module.alloc(n)

        def at(values: np.ndarray) -> tuple[float, np.ndarray]:
            t0 = time.perf_counter()
            loss, grad = evaluate_batch(module, X, buffers, self._flipped(), values)
            self.timings.setdefault("first_call_s", time.perf_counter() - t0)
            return loss, grad

        return at

    # -- second order (Model.hvp and Model.hessian call these hooks) ---------------------

    def _hvp_data(self, data) -> tuple[list, int]:
        """The data in logical layout (samples as rows), float64, and the sample count."""
        checked = self._checked(data, "data")
        arrays = [np.asarray(checked[d], dtype=np.float64) for d in self._data_syms]
        rows = next((a.shape[0] for a, b in zip(arrays, self._batched()) if b), 1)
        return arrays, rows

    def _hvp_at(self, values: np.ndarray, v: np.ndarray, X: tuple) -> np.ndarray:
        """Hessian @ v of the loss on the data, run by NumPy: the program's forward and
        backward lines and their tangent lines, whole-array operations (float64; dropout
        masks are ones, as in evaluation)."""
        arrays, rows = X
        with np.errstate(all="ignore"):
            _, out = self._second_loop()._run(np.concatenate([values, v]).astype(np.float64),
                                              arrays, rows)
        return out[values.size:]

    def _second_loop(self):
        """The NumPy runner of the program followed by its tangent lines (built once)."""
        from types import SimpleNamespace

        loop = self._second_loop_cache
        if loop is None:
            t0 = time.perf_counter()
            tangent = self.pipeline.tangent
            p = self.program
            joined = Program(p.forward, [*p.backward, *tangent.lines], p.output,
                             [*p.grads, *tangent.outputs], shapes={**p.shapes, **tangent.shapes})
            dots = [SimpleNamespace(var=d) for d in tangent.inputs]
            total = self._values.size
            slices = [(where, shape) for where, shape in self._slices.values()]
            slices += [(slice(w.start + total, w.stop + total), shape) for w, shape in slices]
            loop = self._second_loop_cache = self._make_loop(
                joined, [*self.param_nodes, *dots], slices, [False] * len(self.data_nodes))
            self.timings["second_order_codegen_s"] = time.perf_counter() - t0
        return loop

    def _direction(self, v) -> np.ndarray:
        """``v`` as a dict of arrays shaped like the parameters, or flat, as a flat array."""
        if not isinstance(v, Mapping):
            return self._point(v, "v")
        one_per_parameter(v, self._param_syms, "array")
        parts = []
        for p, (_, shape) in self._slices.items():
            a = np.asarray(v[p], dtype=np.float64)
            if a.shape != shape:
                raise InputError(f"v[{p.name}] has shape {a.shape}; it must have {p.name}'s "
                                 f"shape {shape}.")
            parts.append(a.ravel())
        return self._point(np.concatenate(parts), "v")

    def evaluate(self, data: Mapping, *, client=None) -> float:
        """The loss on ``data`` (all of it as one batch) at the current parameters; with a
        Dask ``client``, on the cluster (see ``symgrad.train.distributed``)."""
        if client is not None:
            from .distributed import evaluate

            return evaluate(self, client, data)
        return self.value_and_grad(data)[0]

    def predict(self, expr: sp.Basic | None = None, data: Mapping | None = None, *,
                client=None) -> np.ndarray:
        """``expr`` (default: ``prediction``) evaluated with NumPy on ``data``; with a Dask
        ``client``, chunk by chunk on the cluster (a dask array)."""
        if client is not None:
            from .distributed import predict

            return predict(self, client, expr, data)
        expr = self._prediction_or(expr)
        if data is None:
            raise InputError("predict needs data: a dict from data matrices to arrays.")
        env = {**self.params, **self._checked(data, "data", partial=True)}
        return evaluate_numpy(self._lowered_prediction(expr), env)

    def _lowered_prediction(self, expr):
        lowered = self._predictors.get(expr)
        if lowered is None:
            lowered = self._predictors[expr] = lower_any(expr)
            if self.stabilize:
                lowered.expr = _stabilize(lowered.expr)
        return lowered

    # -- plumbing (hooks of Model.fit) -----------------------------------------------------

    def _fit_data(self, data: Mapping, validation: Mapping | None):
        X = self._stored(data, "data")
        n = self._rows(X)
        if validation is not None:
            V = self._stored(validation, "validation")
            n_val = self._rows(V)
        else:
            V = tuple(self._batch_array(a, flip, 0) if batched else a
                      for a, batched, flip in zip(X, self._batched(), self._flipped()))
            n_val = 0
        return X, V, n, n_val

    def _flipped(self) -> tuple[bool, ...]:
        """Which data matrices the generated code stores transposed (features x samples)."""
        return self._generated().flipped

    def _batch_array(self, a: np.ndarray, flip: bool, m: int) -> np.ndarray:
        return batch_array(a, flip, m, self._np_dtype)

    def _train_function(self, optimizer: Optimizer, size: int, X, V, engine: str = "auto"):
        n, n_val = self._rows(X), self._rows(V)
        size = min(size, n)

        def compiled():
            module = self._trainer()
            grad, buffers = loop_arguments(module, X, size, n_val, self._batched(),
                                           self._flipped(), self._np_dtype, self._values.size)

            def run(parallel, values, state, step, hyper, *rest):
                with nullcontext() if parallel else one_numba_thread():
                    return call_train(module, values, grad, state, step, hyper,
                                      optimizer.kind, X, V, buffers, module.DIMS, *rest)

            chunks = split_chunks(module, X, self._batched(), self._flipped(), size)
            ran_on = self.timings["epochs_on_cores"] = {"all": 0, "one": 0}
            if chunks is None:  # the module's train
                # the large products (symgrad.kernels.blas) and the update of long parameter
                # vectors (update_halves) on two threads or on one (the same bits), whichever
                # ran an epoch faster: on a machine busy with other processes, threads wait
                # for each other (W3 with another process on one of the 2 cores: 3.9 ms per
                # step on two threads, 1.0 ms on one, the median of 8 pairs; single epochs up
                # to 17.9 ms)
                threaded = hasattr(module, "gemm") or hasattr(module, "update_halves")
                if not threaded or _threads() == 1:
                    def one_way(*args):
                        ran, status = run(True, *args)
                        ran_on["all" if threaded else "one"] += ran
                        return ran, status
                    return one_way
                return all_cores_or_one(run, self._epoch_times.setdefault(
                    ("gemm", size, n, n_val), ({True: math.inf, False: math.inf}, [0.0, 0.0])),
                    ran_on)
            # full batches of a program that splits by samples: chunks of the samples on
            # all cores or on one (the same bits), whichever ran an epoch faster
            from ..kernels.split import train as split_train

            works, widths = chunks
            val = split_work(module, V, self._batched(), self._flipped(), 0, n_val)
            threads = min(_threads(), len(widths))
            timing: list[float] = []

            def split_run(parallel, values, state, step, hyper, first, count, size,
                          drop_last, shuffle, *rest):
                if shuffle:  # (a shuffled full batch: the serial loop's order of sums)
                    t0 = time.perf_counter()
                    out = run(parallel, values, state, step, hyper, first, count, size,
                              drop_last, shuffle, *rest)
                    timing.append(time.perf_counter() - t0)
                    return out

                def loop(p, g, st, stp, hy, kind, _X, _V, _buffers, dims, first, epochs,
                         *args):
                    *_, patience, losses, val_losses, best, best_params = args
                    # (the first call, fit's compile, loads or compiles chunk and the loop)
                    return split_train(threads if parallel else 1, split_chunk(module), works,
                                       widths, n, dims, val, n_val, p, g, kind, st, stp, hy,
                                       first, epochs, patience, losses, val_losses, best,
                                       best_params, timing)

                return call_train(module, values, grad, state, step, hyper, optimizer.kind,
                                  X, V, buffers, module.DIMS, first, count, size, drop_last,
                                  shuffle, *rest, loop=loop)

            return all_cores_or_one(split_run, self._epoch_times.setdefault(
                ("split", n, n_val), ({True: math.inf, False: math.inf}, [0.0, 0.0])),
                ran_on, probe=SPLIT_PROBE, clock=lambda: timing[-1])

        if engine == "numpy" and self._has_dropout():
            raise ValueError("this model uses dropout, whose masks come from the compiled "
                             "loop's generator: it trains with engine='auto' or 'compiled'.")
        if engine == "compiled" or engine == "auto" and not self._numpy_first():
            return compiled()
        background = None
        if engine == "auto":
            from .background import BackgroundCompile

            background = BackgroundCompile.request(self._module_file(), {
                "dtype": self.dtype, "n_params": self._values.size,
                "n_state": max(optimizer.n_state, 1), "X": [a.shape for a in X],
                "V": [a.shape for a in V], "size": size, "n_val": n_val,
                "batched": self._batched(), "flipped": list(self._flipped())})
        return _Tiered(self._numpy_loop(), optimizer.kind, X, V, compiled, background)

    def _numpy_first(self) -> bool:
        """Start on the NumPy tier: the compiled loop is not in the cache and the program
        runs under NumPy the same way (not with dropout, whose masks come from Numba's
        generator)."""
        from .background import compiled_in_cache

        return not self._has_dropout() and not compiled_in_cache(self._module_file())

    def _has_dropout(self) -> bool:
        from ..expression.arrays import dropout_mask

        return any(node.op is dropout_mask for node in self.ir.nodes)

    def _numpy_loop(self):
        loop = self._numpy_loop_cache
        if loop is None:
            loop = self._numpy_loop_cache = self._make_loop(
                self.program, self.param_nodes, list(self._slices.values()), self._flipped())
        return loop

    def _make_loop(self, program, param_nodes, slices, flipped):
        """A NumPy runner of ``program`` over this model's data and batch dimension."""
        from .numpy_loop import NumpyLoop

        node_of = self.ir.input_nodes()
        batch = self._lowered.batch
        return NumpyLoop(program, param_nodes, self.data_nodes, batch,
                         node_of[batch].var if batch in node_of else None, slices, flipped,
                         self._batched())

    def _unflatten(self, values: np.ndarray) -> dict:
        return {p: values[where].reshape(shape).copy()
                for p, (where, shape) in self._slices.items()}

    def _truth_and_prediction(self, cols):
        data = dict(zip(self._data_syms, cols))
        env = {**self.params}
        for (d, a), flip in zip(data.items(), self._flipped()):
            env[d] = a.T if flip else a
        truth = env[self.target]
        pred = evaluate_numpy(self._lowered_prediction(self.prediction), env)
        if truth.ndim == 2 and truth.shape[1] > 1:
            return np.argmax(truth, axis=1), np.argmax(pred, axis=1)
        return np.ravel(truth), np.ravel(pred)

    def _metric_functions(self, metrics):
        fns = super()._metric_functions(metrics)
        if "accuracy" in fns:
            fns["accuracy"] = _accuracy
        return fns

    # -- checks -------------------------------------------------------------------------------

    def _initial(self, p: MatrixSymbol, value) -> np.ndarray:
        shape = tuple(int(d) for d in p.shape)
        a = _real(f"initial value of {p.name}", value)
        if a.shape != shape:
            raise ShapeError(f"initial value of {p.name} has shape {a.shape}, but {p.name} is "
                             f"{shape[0]}x{shape[1]}; pass an array of shape {shape}.")
        if not np.all(np.isfinite(a)):
            raise InputError(f"initial value of {p.name} holds NaN or inf; start from finite "
                             "values.")
        return a.astype(self._np_dtype)

    def _is_batched(self, d: MatrixSymbol) -> bool:
        return not isinstance(d.shape[0], (int, sp.Integer))

    def _batched(self) -> list[bool]:
        return [self._is_batched(d) for d in self._data_syms]

    def _checked(self, data: Mapping, what: str, partial: bool = False) -> dict:
        """``data`` as one finite array per data matrix in the model's dtype, samples as
        rows (prepared data: read-only views of its arrays, C-ordered copies of those it
        stores transposed, so that NumPy computes with them as with the dict's arrays)."""
        if isinstance(data, PreparedData):
            X = data.arrays_for(self._data_layout(), what)
            return {d: np.ascontiguousarray(a.T) if flip else _read_only(a)
                    for d, a, flip in zip(self._data_syms, X, self._flipped())}
        found = match_matrices(data, self._data_syms, what, partial)
        rows = {}
        out = {}
        for d, value in found.items():
            a = matrix_columns(_real(f"{what} {d.name}", value), d, what)
            if self._is_batched(d):
                rows[d.name] = a.shape[0]
            elif a.shape[0] != int(d.shape[0]):
                raise ShapeError(f"{what} {d.name} has shape {a.shape}, declared {d.shape}.")
            out[d] = _finite(a, self._np_dtype, f"{what} {d.name}")
        if len(set(rows.values())) > 1:
            sizes = ", ".join(f"{k}: {v}" for k, v in rows.items())
            raise ShapeError(f"{what} matrices have different numbers of rows ({sizes}); each "
                             "needs one row per sample.")
        if rows and 0 in rows.values():
            raise InputError(f"{what} has no samples.")
        for d in self._targets & set(out):
            sums = out[d].sum(axis=1, dtype=np.float64)
            off = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
            if off.size:
                raise InputError(
                    f"{what} {d.name} holds the targets of softmax_cross_entropy, whose rows "
                    f"must sum to 1 (one-hot labels or probabilities); row {off[0]} sums to "
                    f"{sums[off[0]]:g}. Use symgrad.one_hot(labels) for class labels.")
        return out

    def _storage(self, data: dict) -> tuple:
        return tuple(np.ascontiguousarray(data[d].T) if flip else np.ascontiguousarray(data[d])
                     for d, flip in zip(self._data_syms, self._flipped()))

    def _rows(self, X: tuple) -> int:
        for a, batched, flip in zip(X, self._batched(), self._flipped()):
            if batched:
                return a.shape[1] if flip else a.shape[0]
        return 1

    def _cross_entropy_targets(self, pipeline: Pipeline) -> set[MatrixSymbol]:
        """Data matrices that are softmax_cross_entropy targets (their rows must sum to 1:
        the rule's gradient (softmax - Y)/n, the deck's, assumes it)."""
        from ..expression.arrays import softmax_cross_entropy

        by_node = {n.id: d for n, d in zip(pipeline.data_nodes, self._data_syms)}
        targets = set()
        for node in pipeline.graph.nodes:
            if node.op is softmax_cross_entropy:
                y = node.inputs[1]
                if not (isinstance(y, Node) and y.id in by_node):
                    raise ExpressionError(
                        "the targets of softmax_cross_entropy must be a data matrix (one-hot "
                        "labels or probability rows), not a computed expression.")
                targets.add(by_node[y.id])
        return targets

    def _warn_symmetry(self, only: set | None = None) -> None:
        for p, (where, (rows, cols)) in self._slices.items():
            if (only is not None and p not in only) or rows == 1 or cols == 1:
                continue
            w = self._values[where]
            if np.all(w == w[0]):
                warnings.warn(
                    f"{p.name} starts with all entries equal ({w[0]:g}): every unit it "
                    "feeds computes the same value and receives the same gradient, so the units "
                    "stay identical whatever the training (the symmetry problem). Initialise it "
                    f"randomly, e.g. symgrad.init.xavier({rows}, {cols}).",
                    SymmetryWarning, stacklevel=4)


def _accuracy(y_true, y_pred) -> float:
    """Class labels (argmax of rows) agree; otherwise the binary metric (threshold 0.5)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if np.issubdtype(y_pred.dtype, np.integer):
        return float(np.mean(y_true == y_pred))
    return METRICS["accuracy"](y_true, y_pred)


def match_matrices(data, syms, what: str, partial: bool = False) -> dict:
    """``data`` keyed by the data matrices ``syms`` (given as symbols or names); every one of
    them present unless ``partial``."""
    if not isinstance(data, Mapping):
        refuse_prepared(data, what)
        raise InputError(f"{what} must be a dict from data matrices to arrays, e.g. "
                         f"{{X: X_train, Y: Y_train}}; got {type(data).__name__}.")
    by_name = {d.name: d for d in syms}
    found = {}
    for key, value in data.items():
        d = key if key in syms else by_name.get(getattr(key, "name", key))
        if d is None:
            raise InputError(f"{what} has an entry {key!r} that is not a data matrix of the "
                             f"model (expected {', '.join(by_name)}).")
        found[d] = value
    missing = [d.name for d in syms if d not in found]
    if missing and not partial:
        raise InputError(f"{what} lacks {', '.join(missing)}; give one array per data matrix.")
    return found


def matrix_columns(a, d: MatrixSymbol, what: str):
    """``a`` (a NumPy or Dask array of data for ``d``) as a matrix with ``d``'s columns: a
    vector is one column; a clear ShapeError otherwise."""
    if a.ndim == 1 and d.shape[1] == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ShapeError(f"{what} {d.name} has shape {a.shape}; it must be a matrix "
                         f"(2-D) of shape {d.shape}.")
    if a.shape[1] != int(d.shape[1]):
        raise ShapeError(f"{what} {d.name} has {a.shape[1]} columns, but {d.name} is "
                         f"declared with {d.shape[1]} ({d.shape}).")
    return a


def batch_array(a: np.ndarray, flip: bool, m: int, dtype) -> np.ndarray:
    """An empty buffer for ``m`` samples of the data matrix stored as ``a`` (transposed,
    samples innermost, when ``flip``)."""
    return np.empty((a.shape[0], m) if flip else (m, a.shape[1]), dtype=dtype)


def evaluate_batch(module, X: tuple, buffers: tuple, flipped,
                   values: np.ndarray) -> tuple[float, np.ndarray]:
    """The loss of all of ``X`` (as stored) as one batch and its gradient, by the compiled
    ``train`` in evaluation mode (epochs = -1); ``buffers = module.alloc(rows)``. Used by
    ``evaluator`` and by the workers of a distributed fit, with arguments of the same types,
    so the loop compiles once for both. Evaluating runs no update: no hyperparameters are
    read (they are zeros)."""
    dtype = values.dtype
    gathered = tuple(batch_array(a, f, 1, dtype) for a, f in zip(X, flipped))
    grad = np.empty_like(values)
    loss = np.zeros(1)
    call_train(module, values, grad, np.zeros((1, values.size), dtype=dtype),
               np.zeros(1, dtype=np.int64), np.zeros(1), 0, X, gathered,
               (buffers, module.alloc(1), module.alloc(1), gathered, gathered), module.DIMS,
               0, -1, 0, False, False, 0, 0, loss, np.zeros(1), np.array([np.inf, -1.0, 0.0]),
                 np.empty_like(values))
    return float(loss[0]), grad


_BLAS: list = []  # threadpoolctl's view of the loaded BLAS libraries, made once


def one_blas_thread():
    """A context in which the BLAS libraries loaded in this process use one thread (made
    after symgrad.kernels.blas, which loads SciPy's, is imported)."""
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


@contextmanager
def one_numba_thread():
    """A context in which Numba's parallel loops (here: the halves of the products) run on
    the calling thread only."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _threads() -> int:
    import numba

    return numba.get_num_threads()


def to_working(module, a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` (laid out like the parameters along its last axis: parameters,
    gradient, optimizer state rows) in the working layout of ``module.train``: the
    matrices of ``module.WORKING`` transposed. ``a`` itself if there are none."""
    if not getattr(module, "WORKING", ()):
        return a
    return _transposed(module, a, np.empty_like(a), into_working=True)


def to_model(module, w: np.ndarray, out: np.ndarray) -> None:
    """``w``, in the working layout of ``module.train``, back into ``out`` in the model's."""
    if w is not out:
        _transposed(module, w, out, into_working=False)


def _transposed(module, a: np.ndarray, out: np.ndarray, into_working: bool) -> np.ndarray:
    """``a`` into ``out`` with the matrices of ``module.WORKING`` (offset, rows, columns in
    the model's layout) transposed: from the model's layout into the working one, or back;
    by the compiled ``kernels.loops.relayout`` (fit converts several vectors per call of the
    loop: W3's parameters, state and best parameters took ~1.7 ms per call with NumPy's
    strided copies, one thread), NumPy for other dtypes or layouts."""
    if (a.dtype == out.dtype and a.dtype in (np.float32, np.float64) and a.shape == out.shape
            and a.flags.c_contiguous and out.flags.c_contiguous and a.ndim in (1, 2)
            and not np.may_share_memory(a, out)):
        from ..kernels.loops import relayout

        relayout(a.reshape(-1, a.shape[-1]), out.reshape(-1, out.shape[-1]),
                 _blocks(module.WORKING), into_working)
        return out
    out[...] = a
    lead = a.shape[:-1]
    for lo, r, c in getattr(module, "WORKING", ()):
        block = a[..., lo:lo + r * c].reshape(lead + ((r, c) if into_working else (c, r)))
        out[..., lo:lo + r * c] = block.swapaxes(-1, -2).reshape(lead + (r * c,))
    return out


@functools.lru_cache(maxsize=64)
def _blocks(working: tuple) -> np.ndarray:
    """``module.WORKING`` as ``relayout`` takes it: int64 rows by increasing offset."""
    blocks = np.array(sorted(working), dtype=np.int64).reshape(-1, 3)
    blocks.flags.writeable = False
    return blocks


def split_chunks(module, X: tuple, batched, flipped, size: int):
    """The work vectors and sample counts of the chunks fit trains full batches on
    (``symgrad.kernels.split``), each filled with its samples of ``X`` (as stored), and a
    last one for no samples (the parameter-only part); None if
    the module's program does not split by samples (no ``chunk``), batches are smaller
    than the data, or the data makes one chunk."""
    from ..kernels.split import chunk_size

    if not hasattr(module, "chunk"):
        return None
    n = next((a.shape[1] if f else a.shape[0] for a, b, f in zip(X, batched, flipped) if b), 0)
    per = chunk_size(n)
    if size < n or per >= n:
        return None
    starts = range(0, n, per)
    widths = np.array([*(min(per, n - lo) for lo in starts), 0], dtype=np.int64)
    works = _aligned((len(widths), _words(module, per)))
    for c, lo in enumerate(starts):
        split_work(module, X, batched, flipped, lo, lo + int(widths[c]), works[c])
    split_work(module, X, batched, flipped, 0, 0, works[-1])  # unbatched data, if any
    return works, widths


def _aligned(shape: tuple) -> np.ndarray:
    """np.zeros(shape) starting on a 64-byte boundary (a cache line, an AVX-512 vector): the
    chunks' buffers, each a multiple of 8 doubles long, then all start on one."""
    flat = np.zeros(math.prod(shape) + 8)
    skip = (-flat.ctypes.data % 64) // 8
    return flat[skip:skip + math.prod(shape)].reshape(shape)


def split_work(module, X: tuple, batched, flipped, lo: int, hi: int,
               out: np.ndarray | None = None) -> np.ndarray:
    """A work vector of ``module.chunk`` (``module.CHUNK_LAYOUT``) for samples lo..hi-1 of
    ``X``: their data in place, room for the buffers."""
    m = hi - lo
    if out is None:
        out = _aligned((_words(module, m),))
    o = 0
    for a, b, f in zip(X, batched, flipped):
        block = a if not b else a[:, lo:hi] if f else a[lo:hi]
        out[o:o + block.size] = block.ravel()
        o += -(-block.size // 8) * 8
    return out


def _words(module, m: int) -> int:
    """Length of a work vector of ``module.chunk`` for m samples."""
    total = 0
    for dims in module.CHUNK_LAYOUT:
        k = 1
        for d in dims:
            k *= m if d is None else max(m, -d) if d < 0 else d
        total += -(-k // 8) * 8
    return total


def split_chunk(module):
    """``module.chunk``, compiled (or loaded from Numba's cache) for the signature
    ``symgrad.kernels.split`` calls it with, and only that."""
    from ..kernels.split import CHUNK

    chunk = module.chunk
    if not chunk.signatures:
        chunk.compile(CHUNK)
        chunk.disable_compile()
    return chunk


def call_train(module, params, grad, state, *args, loop=None):
    """``module.train(params, grad, state, *args)`` (or ``loop``, which takes the same
    arguments) in the model's layout: the parameters,
    the optimizer state and the best parameters (the last argument) are converted into the
    loop's working layout (:func:`to_working`) and back after it, and so is the gradient an
    evaluation (epochs = -1) leaves (a training call's last gradient is read by nobody: fit
    does not convert it); once per call, not per epoch (the loop's end of epoch does not
    care about the layout: finiteness, copies of whole vectors). A Ctrl-C's handler runs
    after the conversions back (:func:`interrupt.deferred`): the loop writes the best loss in
    place, so a KeyboardInterrupt raised halfway would leave it with best parameters not yet
    (or half) converted."""
    if hasattr(module, "gemm"):  # the products' halves are single-threaded BLAS calls
        with one_blas_thread():
            return _call_train(module, params, grad, state, *args, loop=loop)
    return _call_train(module, params, grad, state, *args, loop=loop)


def _call_train(module, params, grad, state, *args, loop=None):
    loop = loop or module.train
    if not getattr(module, "WORKING", ()):
        return loop(params, grad, state, *args)
    w_grad = np.empty_like(grad)
    if args[8] < 0:  # epochs = -1, evaluating: no update, no state or best parameters
        out = loop(to_working(module, params), w_grad, state, *args)
        to_model(module, w_grad, grad)
        return out
    best = args[-1]
    with deferred():
        w_params, w_state, w_best = (to_working(module, a) for a in (params, state, best))
        out = loop(w_params, w_grad, w_state, *args[:-1], w_best)
        for w, a in ((w_params, params), (w_state, state), (w_best, best)):
            to_model(module, w, a)
    return out


def loop_arguments(module, X: tuple, size: int, n_val: int, batched, flipped, dtype,
                   n_params: int):
    """The compiled ``train``'s gradient vector and buffers for data ``X`` (as stored),
    batches of ``size`` and ``n_val`` validation rows: (batch buffers, last-batch buffers,
    validation buffers, gathered batch, gathered last batch). Used by ``fit`` and by the
    background compile, which must call ``train`` with arguments of the same types."""
    n = next((a.shape[1] if f else a.shape[0] for a, b, f in zip(X, batched, flipped) if b), 1)
    tail = n - (n // size) * size or size

    def gathered(m):
        return tuple(batch_array(a, f, m, dtype) if b else a
                     for a, b, f in zip(X, batched, flipped))

    buffers = (module.alloc(size), module.alloc(tail), module.alloc(max(n_val, 1)),
               gathered(size), gathered(tail))
    return np.empty(n_params, dtype=dtype), buffers


class _Tiered:
    """``fit``'s train function that runs the NumPy tier until the background compile is
    done, then the compiled loop; ``engine`` says which one ran last."""

    def __init__(self, loop, kind: int, X, V, compiled, background) -> None:
        self._loop, self._kind, self._X, self._V = loop, kind, X, V
        self._make_compiled, self._background = compiled, background
        self._compiled = None
        self._blas = None  # threadpoolctl's view of the BLAS thread pools, made once
        self.engine = "numpy"

    def __call__(self, values, state, step, hyper, first, count, *rest):
        if self._compiled is None and self._background is not None and self._background.ready:
            self._compiled = self._make_compiled()
            self.engine = "compiled"
        if self._compiled is not None:
            return self._compiled(values, state, step, hyper, first, count, *rest)
        if self._background is not None and not self._background.done:
            if self._blas is None:
                from threadpoolctl import ThreadpoolController

                self._blas = ThreadpoolController()
            with self._blas.limit(limits=1, user_api="blas"):  # one core trains, one compiles
                return self._loop.train(values, state, step, hyper, self._kind, self._X,
                                        self._V, first, count, *rest)
        return self._loop.train(values, state, step, hyper, self._kind, self._X, self._V,
                                first, count, *rest)


def _finite(a: np.ndarray, dtype, name: str) -> np.ndarray:
    """``a`` (2-D) in ``dtype`` (not copied if it is in it already), every entry finite: a
    conversion, if any, then one pass (:func:`all_finite`). Checked after the conversion, so a
    float64 value beyond float32's range is refused too, not turned into inf."""
    with np.errstate(over="ignore"):  # a value beyond dtype's range: named below
        b = a.astype(dtype, copy=False)
    if a.dtype.kind != "f" or all_finite(b):  # integers and booleans are finite in both
        return b
    bad = ~np.isfinite(b)
    r, c = np.argwhere(bad)[0]
    if np.isfinite(a[r, c]):
        raise InputError(f"{name} holds {a[r, c]} at [{r}, {c}], beyond the range of "
                         f"{np.dtype(dtype).name} ({int(bad.sum())} values that are not finite "
                         f"in {np.dtype(dtype).name}); scale the data, or train with "
                         "dtype='float64'.")
    raise InputError(f"{name} holds {a[r, c]} at [{r}, {c}] ({int(bad.sum())} non-finite "
                     "values); remove or fill them before training.")


def _read_only(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


def _real(name: str, value) -> np.ndarray:
    """``value`` as an array of real numbers, kept in its dtype when it has a real one (no
    copy of a large float32 matrix); anything else by the one rule for numbers
    (:func:`symgrad.compile.inputs.real_array`), which names what is wrong."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    return real_array(name, value)
