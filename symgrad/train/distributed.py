"""Data-parallel training on a Dask cluster: ``model.fit(data, ..., client=client)``.

The driver (the process calling ``fit``) keeps the parameters, the optimizer state and the
History; the data stay on the workers, in chunks along the samples, computed and held there
once per fit. Every step the driver sends each worker the parameter vector and a reference to
the generated module's source (scattered once per fit); the worker writes the source into its
symgrad cache under its SHA-256 and imports it once per process (:func:`loaded_modules`
counts the imports), then sums the loss and its gradient over its chunks with the same
compiled code as a local fit (``symgrad.kernels.trainer.loss_and_grad_sum`` with the model's
block kernel; a matrix model's ``train`` in evaluation mode, weighted by the chunk's rows).
It returns one vector per chunk; the driver adds them pairwise in chunk order (a tree of
depth log2(chunks), independent of which worker computed what, so a retried task gives the
same numbers), divides by the sample count and applies the local loop's optimizer update
(``symgrad.kernels.optim.update``) and end of epoch (``symgrad.kernels.loops.end_epoch``).
A distributed run is therefore a local run up to the order of the sums.

The model itself never travels (it is not picklable): only its source, the parameters as a
float array and plain settings (:class:`Layout`) do.

Minibatches (``batch_size=m``) are chunk-local and stratified: an epoch has
``S = ceil(N / m)`` steps; every chunk (``n_c`` rows) is split into ``S`` contiguous pieces
of its rows (``floor(b n_c / S) .. floor((b+1) n_c / S)`` for step ``b``), in a seeded
per-epoch shuffled order of its own rows when ``shuffle``; step ``b`` averages the gradient
over piece ``b`` of every chunk. Each row is used once per epoch and every batch draws from
every chunk in proportion to its size; the batches hold about ``m`` rows (``N / S``).
The per-chunk shuffle is ``symgrad.kernels.loops.permute`` keyed by
``(seed * 1000003 + epoch) * 1009 + chunk``.

A matrix model's loss must be a mean over the rows of its batch plus terms that do not
depend on the data (``softmax_cross_entropy`` plus penalties, ``mse``, ...): its chunks'
losses weighted by their rows add up to the whole batch's. ``fit`` checks this on a chunk
(its two halves against the whole) and refuses losses that do not split that way (e.g. a
sum over rows, or ``dice``, a ratio of sums).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..compile.cache import cache_dir, module_path
from ..compile.inputs import real_array
from ..compile.pipeline import import_source
from ..errors import CompileError, ExpressionError, InputError, ShapeError
from .data import by_symbol, match_columns
from .history import DONE

__all__ = ["Layout", "evaluate", "fit_job", "loaded_modules", "predict"]

#: Relative gap above which a matrix model's loss does not split over chunks (a mean over
#: rows splits exactly up to rounding; float32 models allow 1000 float32 epsilons), checked
#: on the first SPLIT_ROWS rows of a chunk.
SPLIT_TOLERANCE = 1e-9
SPLIT_ROWS = 256

# -- the worker side: plain data in, plain data out -------------------------------------------

_MODULES: dict = {}  # digest -> imported generated module (once per process)
_LOADS: dict = {}  # digest -> how many times this process imported it
_ORDERS: dict = {}  # (shuffle key, rows) -> the chunk's permutation of the epoch
_BUFFERS: dict = {}  # (digest, rows, thread) -> a matrix model's buffers for that many rows
_IMPORTING = threading.Lock()


@dataclass(frozen=True)
class Layout:
    """What a worker needs to run a model's generated module: plain data only."""

    digest: str  # SHA-256 of the module source
    kind: str  # "scalar" (per-sample Model) or "array" (ArrayModel)
    n_params: int
    dtype: str = "float64"
    flipped: tuple = ()  # array: which data matrices are stored transposed
    batched: tuple = ()  # array: which data matrices have the batch as rows
    cache_dir: str | None = None  # the model's cache_dir, else the worker's default


def loaded_modules() -> dict[str, int]:
    """How many times this process imported each generated module, by the SHA-256 of its
    source: once per process is the design (read it on every worker with ``client.run``)."""
    return dict(_LOADS)


def _module(layout: Layout, source: str):
    """The generated module, imported once per process (memoized on its digest)."""
    module = _MODULES.get(layout.digest)
    if module is not None:
        return module
    with _IMPORTING:  # a worker's threads: one imports, the others wait for the whole module
        module = _MODULES.get(layout.digest)
        if module is None:
            directory = cache_dir(layout.cache_dir)
            if module_path(source, directory).stem != f"sg_{layout.digest}":
                raise CompileError("the module source a worker received does not match its "
                                   "SHA-256; it was not run (a symgrad bug: please report it).")
            module = import_source(source, directory)
            _LOADS[layout.digest] = _LOADS.get(layout.digest, 0) + 1
            _MODULES[layout.digest] = module
    return module


def _load(layout: Layout, source: str) -> int:
    """Task: import the module on this worker (nothing else: steps import it themselves)."""
    _module(layout, source)
    return 0


def _order(key: int, rows: int) -> np.ndarray:
    """A chunk's shuffled order of its rows for one epoch (the last few are kept)."""
    from ..kernels.loops import permute

    order = _ORDERS.get((key, rows))
    if order is None:
        if len(_ORDERS) > 64:
            _ORDERS.clear()
        order = np.empty(rows, dtype=np.int64)
        permute(order, key)
        _ORDERS[(key, rows)] = order
    return order


def _sums(layout: Layout, source: str, values: np.ndarray, pieces: list, *chunks) -> np.ndarray:
    """Task: per chunk, [loss sum, gradient sums...] over its piece ``(lo, hi, key)``: rows
    lo..hi-1 of the chunk, in the shuffled order of ``key`` when key >= 0."""
    module = _module(layout, source)
    out = np.empty((len(chunks), layout.n_params + 1))
    for row, chunk, (lo, hi, key) in zip(out, chunks, pieces):
        if layout.kind == "scalar":
            row[0] = _scalar_piece(module, values, chunk, lo, hi, key, row[1:])
        else:
            row[0] = _array_piece(layout, module, values, chunk, lo, hi, key, row[1:])
    return out


def _scalar_piece(module, values, X, lo, hi, key, grad) -> float:
    from ..kernels.trainer import loss_and_grad_sum

    if key >= 0:
        X = np.ascontiguousarray(X[:, _order(key, X.shape[1])[lo:hi]])
        lo, hi = 0, hi - lo
    return loss_and_grad_sum(module.block, module.exact, module.HAS_EXACT, False, values, X,
                             lo, hi, grad)


def _array_piece(layout, module, values, arrays, lo, hi, key, grad) -> float:
    """The loss and gradient of the piece's rows as one batch, times its rows (sums)."""
    from .arrays import evaluate_batch

    rows = next((a.shape[1] if f else a.shape[0]
                 for a, f, b in zip(arrays, layout.flipped, layout.batched) if b), 1)
    if key >= 0 or (lo, hi) != (0, rows):
        pick = _order(key, rows)[lo:hi] if key >= 0 else slice(lo, hi)
        arrays = tuple(np.ascontiguousarray(a[:, pick] if f else a[pick]) if b else a
                       for a, f, b in zip(arrays, layout.flipped, layout.batched))
    m = hi - lo
    key = (layout.digest, m, threading.get_ident())  # a worker's threads run at once
    buffers = _BUFFERS.get(key)
    if buffers is None:
        if len(_BUFFERS) > 16:
            _BUFFERS.clear()
        buffers = _BUFFERS[key] = module.alloc(m)
    loss, g = evaluate_batch(module, arrays, buffers, layout.flipped, values)
    grad[:] = g * np.float64(m)
    return loss * m


def _stack_scalar(*columns) -> np.ndarray:
    """Task: one chunk of a per-sample model's data, (columns, rows) float64."""
    return np.ascontiguousarray(np.vstack([np.asarray(c) for c in columns]), dtype=np.float64)


def _stack_array(flipped, dtype, *arrays) -> tuple:
    """Task: one chunk of a matrix model's data, each matrix as the compiled loop stores it."""
    out = []
    for a, flip in zip(arrays, flipped):
        a = np.asarray(a)
        if a.ndim == 1:
            a = a[:, None]
        out.append(np.ascontiguousarray(a.T if flip else a, dtype=dtype))
    return tuple(out)


def _scan(chunk, flipped, batched, targets) -> tuple:
    """Task: a chunk's rows and what is wrong in it: per data column (scalar chunk) or
    matrix, (non-finite count, first row, first column, first value, off) where ``off`` is,
    for cross-entropy targets, the first row whose sum is off 1 as (row, sum), else None."""
    if isinstance(chunk, np.ndarray):  # a per-sample model's (columns, rows)
        found = []
        for column in chunk:
            bad = np.flatnonzero(~np.isfinite(column))
            found.append((bad.size, int(bad[0]) if bad.size else -1, 0,
                          float(column[bad[0]]) if bad.size else 0.0, None))
        return chunk.shape[1], found
    found, rows = [], None
    for k, (a, flip, b) in enumerate(zip(chunk, flipped, batched)):
        if not b:  # the same in every chunk, checked on the driver
            found.append((0, -1, -1, 0.0, None))
            continue
        m = a.T if flip else a  # rows are samples
        rows = m.shape[0] if rows is None else rows
        bad = ~np.isfinite(m)
        count = int(bad.sum())
        r, c = np.argwhere(bad)[0] if count else (-1, -1)
        off = None
        if k in targets:
            sums = m.sum(axis=1, dtype=np.float64)
            wrong = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
            off = (int(wrong[0]), float(sums[wrong[0]])) if wrong.size else None
        found.append((count, int(r), int(c), float(m[r, c]) if count else 0.0, off))
    return rows, found


def _predict_scalar(layout: Layout, source: str, inputs: tuple, values: np.ndarray,
                    X: np.ndarray) -> np.ndarray:
    """Task: a compiled prediction on one chunk; ``inputs`` says per input of its module
    whether it is parameter k ("p", k) or data row k ("d", k)."""
    module = _module(layout, source)
    n = X.shape[1]
    columns = [np.full(n, values[k]) if what == "p" else X[k] for what, k in inputs]
    out = np.empty(n)
    module.value_batch(tuple(columns), out)
    return out


def _predict_array(lowered, params: dict, names: tuple, chunk: tuple, flipped) -> np.ndarray:
    """Task: a matrix prediction on one chunk (NumPy, like ``ArrayModel.predict``)."""
    from ..expression.evaluate import evaluate_numpy

    env = dict(params)
    for d, a, flip in zip(names, chunk, flipped):
        env[d] = a.T if flip else a
    return evaluate_numpy(lowered, env)


def pairwise(parts: list) -> np.ndarray:
    """Sum of ``parts`` as a balanced tree in their order: (p0 + p1) + (p2 + p3), ..."""
    parts = list(parts)
    while len(parts) > 1:
        parts = [parts[k] + parts[k + 1] if k + 1 < len(parts) else parts[k]
                 for k in range(0, len(parts), 2)]
    return parts[0]


# -- the driver side --------------------------------------------------------------------------


class Shards:
    """A data set on the cluster: one future per chunk (stored as the model's loop reads it),
    the rows of each, and the groups of chunks one task sums: (worker, chunk indices), one
    group per thread of the worker holding them."""

    def __init__(self, client, futures: list, rows: list[int]) -> None:
        from distributed import wait

        wait(futures)
        self.futures, self.rows = futures, rows
        self.n = sum(rows)
        holders = client.who_has(futures)
        threads = {w: info.get("nthreads", 1)
                   for w, info in client.scheduler_info().get("workers", {}).items()}
        groups: dict = {}
        for k, f in enumerate(futures):
            where = holders.get(f.key) or [None]
            groups.setdefault(where[0], []).append(k)
        # one task per worker thread: a worker's chunks dealt out to its threads
        self.groups = sorted(((w, chunks[t::threads.get(w, 1)]) for w, chunks in groups.items()
                              for t in range(min(threads.get(w, 1), len(chunks)))),
                             key=lambda g: g[1][0])


class Job:
    """One distributed fit (or evaluation) of ``model`` on ``client``: the module source
    scattered once, the data persisted once, a step as one task per worker thread."""

    def __init__(self, model, client, source: str | None = None) -> None:
        from .arrays import ArrayModel

        check_client(client)
        self.model, self.client = model, client
        self.array = isinstance(model, ArrayModel)
        self.syms = list(model._data_syms)
        source = model.generated.source if source is None else source
        self.layout = Layout(
            digest=module_path(source, cache_dir()).stem[3:],
            kind="array" if self.array else "scalar", n_params=model._values.size,
            dtype=str(model._values.dtype),
            flipped=tuple(model._flipped()) if self.array else (),
            batched=tuple(model._batched()) if self.array else (),
            cache_dir=None if model.cache_dir is None else str(model.cache_dir))
        self.source = client.scatter(source, broadcast=True, hash=False)
        self.flipped, self.batched = self.layout.flipped, self.layout.batched

    def restrict(self, syms: list) -> None:
        """Take only the data columns (matrices) ``syms`` (for a prediction)."""
        keep = [k for k, s in enumerate(self.syms) if s in set(syms)]
        self.syms = [self.syms[k] for k in keep]
        if self.array:
            self.flipped = tuple(self.flipped[k] for k in keep)
            self.batched = tuple(self.batched[k] for k in keep)

    # data

    def shards(self, data: Mapping, what: str) -> Shards:
        """``data`` on the cluster, checked as a local fit checks it (same errors)."""
        chunks = (self._array_shards if self.array else self._scalar_shards)(data, what)
        scans = self.client.gather([self.client.submit(
            _scan, f, self.flipped, self.batched, self._target_positions(), pure=False)
            for f in chunks])
        rows = [r for r, _ in scans]
        self._refuse_bad(scans, rows, what)
        return Shards(self.client, chunks, rows)

    def _workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def _dask(self, value, name: str, what: str, ndim: int):
        """``value`` as a dask array (a dask Series or numpy data are converted)."""
        import dask.array as da

        if hasattr(value, "to_dask_array"):
            value = value.to_dask_array(lengths=True)
        if not isinstance(value, da.Array):
            if not (isinstance(value, np.ndarray) and value.dtype.kind in "biuf"):
                # the one rule for numbers: text never parsed, None and ragged lists named
                value = real_array(f"{what} {'column ' if ndim == 1 else ''}{name}", value)
            if value.dtype.kind in "biuf" and value.ndim >= 1 and value.shape[0]:
                value = da.from_array(value, chunks=(-(-value.shape[0] // self._workers()),
                                                     *value.shape[1:]))
        if value.dtype.kind not in "biuf":
            raise InputError(f"{what} {'column ' if ndim == 1 else ''}{name} has dtype "
                             f"{value.dtype}; it must hold real numbers"
                             + (" (convert it with np.asarray(..., dtype=float))." if ndim == 1
                                else "."))
        if any(math.isnan(s) for s in value.shape):
            value = value.compute_chunk_sizes()
        return value

    def _scalar_shards(self, data, what):
        import dask

        syms = self.syms
        arrays = []
        for s, v in zip(syms, match_columns(data, syms, what)):
            a = self._dask(v, s.name, what, 1)
            if a.ndim != 1:
                raise InputError(f"{what} column {s.name} has shape {a.shape}; each column must "
                                 "be 1-D (one value per sample).")
            arrays.append(a)
        if len({a.shape[0] for a in arrays}) > 1:
            sizes = ", ".join(f"{s.name}: {a.shape[0]}" for s, a in zip(syms, arrays))
            raise InputError(f"{what} columns have different lengths ({sizes}); every column "
                             "needs one value per sample.")
        if arrays[0].shape[0] == 0:
            raise InputError(f"{what} has no samples.")
        arrays = [a.rechunk(arrays[0].chunks) for a in arrays]
        blocks = [a.to_delayed().ravel() for a in arrays]
        tasks = [dask.delayed(_stack_scalar, pure=True)(*[b[c] for b in blocks])
                 for c in range(len(blocks[0]))]
        return self.client.compute(tasks)

    def _array_shards(self, data, what):
        import dask

        from .arrays import match_matrices, matrix_columns

        model = self.model
        found = match_matrices(data, self.syms, what)
        fixed = model._checked({d: v for d, v in found.items() if not model._is_batched(d)},
                               what, partial=True)
        arrays, chunks = [], None
        for d in self.syms:
            if d in fixed:
                arrays.append(fixed[d])
                continue
            a = matrix_columns(self._dask(found[d], d.name, what, 2), d, what)
            if chunks is None:
                chunks = a.chunks[0]
            elif a.shape[0] != sum(chunks):
                sizes = ", ".join(f"{k.name}: {v.shape[0]}" for k, v in
                                  zip(self.syms, arrays) if hasattr(v, "dask"))
                raise ShapeError(f"{what} matrices have different numbers of rows ({sizes}, "
                                 f"{d.name}: {a.shape[0]}); each needs one row per sample.")
            arrays.append(a.rechunk((chunks, -1)))
        if chunks is None:
            raise InputError(f"{what} has no matrix with a row per sample; a distributed fit "
                             "splits the data along its rows.")
        if sum(chunks) == 0:
            raise InputError(f"{what} has no samples.")
        blocks = [a.to_delayed().ravel() if hasattr(a, "dask") else None for a in arrays]
        tasks = [dask.delayed(_stack_array, pure=True)(
            self.flipped, self.layout.dtype,
            *[b[c] if b is not None else a for a, b in zip(arrays, blocks)])
            for c in range(len(chunks))]
        return self.client.compute(tasks)

    def _target_positions(self) -> tuple:
        if not self.array:
            return ()
        return tuple(k for k, d in enumerate(self.syms) if d in self.model._targets)

    def _refuse_bad(self, scans, rows, what) -> None:
        """The local fit's errors for non-finite data and cross-entropy targets."""
        names = [d.name for d in self.syms]
        offsets = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(int)
        for k, name in enumerate(names):
            total = sum(found[k][0] for _, found in scans)
            first = next(((off, found[k]) for off, (_, found) in zip(offsets, scans)
                          if found[k][0]), None)
            if first is not None:
                off, (_, r, c, value, _) = first
                if not self.array:
                    kind = "NaN" if math.isnan(value) else "inf"
                    raise InputError(f"{what} column {name} holds {kind} at index {off + r} "
                                     f"({total} non-finite values); remove or fill them before "
                                     "training.")
                raise InputError(f"{what} {name} holds {value} at [{off + r}, {c}] "
                                 f"({total} non-finite values); remove or fill them before "
                                 "training.")
        for k in self._target_positions():
            first = next(((off, found[k][4]) for off, (_, found) in zip(offsets, scans)
                          if found[k][4] is not None), None)
            if first is not None:
                off, (r, total) = first
                raise InputError(
                    f"{what} {names[k]} holds the targets of softmax_cross_entropy, whose rows "
                    f"must sum to 1 (one-hot labels or probabilities); row {off + r} sums to "
                    f"{total:g}. Use symgrad.one_hot(labels) for class labels.")

    # steps

    def load(self, shards: Shards) -> None:
        """Check that a matrix model's loss splits over chunks (on one worker), then import
        the module on every worker holding data and compile what it runs (by summing over
        one row of its first chunk)."""
        if self.array:
            self._check_split(shards)
        values = self.model._values
        self.client.gather([self.client.submit(
            _sums, self.layout, self.source, values, [(0, 1, -1)],
            shards.futures[chunks[0]], pure=False, workers=None if w is None else [w],
            allow_other_workers=True) for w, chunks in shards.groups])

    def _check_split(self, shards: Shards) -> None:
        """Refuse a matrix loss whose value on some rows is not the rows-weighted mean of its
        values on their two halves (the first SPLIT_ROWS rows of a chunk)."""
        k = next((c for c, r in enumerate(shards.rows) if r >= 2), None)
        if k is None:
            return
        rows = min(shards.rows[k], SPLIT_ROWS)
        half = rows // 2
        values = self.model._values
        pieces = [(0, rows, -1), (0, half, -1), (half, rows, -1)]
        parts = self.client.submit(_sums, self.layout, self.source, values, pieces,
                                   *[shards.futures[k]] * 3, pure=False).result()
        whole, split = parts[0], parts[1] + parts[2]
        gap = np.max(np.abs(whole - split)) / max(1.0, np.max(np.abs(whole)))
        if not gap <= max(SPLIT_TOLERANCE, 1e3 * np.finfo(values.dtype).eps):
            raise ExpressionError(
                "this matrix model's loss is not a mean over the rows of its batch plus terms "
                "without data (e.g. dice, or a sum over rows), so sums over chunks of the "
                "data would not give the loss of the whole batch; train it on one process "
                "(fit without client=), or write the loss as a mean over rows.")

    def sums(self, shards: Shards, values: np.ndarray, pieces: list) -> np.ndarray:
        """[loss sum, gradient sums...] over the pieces of every chunk (see the module
        docstring), added pairwise in chunk order."""
        tasks = [self.client.submit(_sums, self.layout, self.source, values,
                                    [pieces[k] for k in chunks],
                                    *[shards.futures[k] for k in chunks], pure=False,
                                    workers=None if w is None else [w],
                                    allow_other_workers=True)
                 for w, chunks in shards.groups]
        rows = np.empty((len(shards.futures), self.layout.n_params + 1))
        for (_, chunks), part in zip(shards.groups, self.client.gather(tasks)):
            rows[chunks] = part
        return pairwise(list(rows))

    def mean_loss(self, shards: Shards, values: np.ndarray) -> float:
        whole = [(0, r, -1) for r in shards.rows]
        return float(self.sums(shards, values, whole)[0] / shards.n)


def fit_job(model, client, data: Mapping, validation: Mapping | None, metrics) -> tuple:
    """``Model.fit``'s data and train function for a distributed fit: (X, V, n, n_val,
    make_train) where ``make_train(optimizer, size, shuffle, drop_last)`` returns the train
    function ``fit`` runs in chunks of epochs (its signature is the local loop's)."""
    from ..kernels.loops import end_epoch
    from ..kernels.optim import update
    from .arrays import ArrayModel

    if list(metrics):
        raise ValueError("metrics are not computed in a distributed fit yet; compute them "
                         "after fit with model.predict(..., client=client).")
    if isinstance(model, ArrayModel) and model._has_dropout():
        raise ExpressionError("this model uses dropout, whose masks come from the compiled "
                              "loop's generator; it trains on one process only (fit "
                              "without client=).")
    job = Job(model, client)
    X = job.shards(data, "data")
    V = job.shards(validation, "validation") if validation is not None else None
    t0 = time.perf_counter()
    job.load(X)
    model.timings["compile_s"] = time.perf_counter() - t0
    model.timings["workers"] = len(X.groups)

    def make_train(optimizer, size: int, shuffle: bool, drop_last: bool):
        if drop_last and size < X.n:
            raise ValueError("drop_last does not apply to a distributed fit: its minibatches "
                             "take a piece of every chunk, all of the same size up to one row "
                             "per chunk (see symgrad.train.distributed).")
        steps = -(-X.n // size)
        dtype = model._values.dtype
        before = np.empty_like(model._values)  # the parameters an epoch starts from

        def train(values, state, step, hyper, first, count, _size, _drop_last, _shuffle, seed,
                  patience, losses, val_losses, best, best_params):
            for e in range(count):
                epoch = first + e
                before[:] = values
                total = 0.0
                for b in range(steps):
                    pieces = [(b * r // steps, (b + 1) * r // steps,
                               (seed * 1000003 + epoch) * 1009 + c if shuffle else -1)
                              for c, r in enumerate(X.rows)]
                    m = sum(hi - lo for lo, hi, _ in pieces)
                    sums = job.sums(X, values, pieces)
                    total += sums[0]
                    grad = (sums[1:] / m).astype(dtype)
                    step[0] += 1
                    update(optimizer.kind, values, grad, state, step[0], hyper)
                monitor = job.mean_loss(V, values) if V is not None else 0.0
                status = end_epoch(epoch, total / X.n, monitor, V is not None, values, before,
                                   losses, val_losses, best, best_params, patience)
                if status != DONE:
                    return e + 1, status
            return count, DONE

        train.engine = "distributed"
        return train

    return None, None, X.n, 0 if V is None else V.n, make_train


def evaluate(model, client, data: Mapping) -> float:
    """The mean loss on ``data`` (a dask array or numpy array per data symbol) on the
    cluster: what ``model.evaluate(data)`` gives on one process, up to the order of sums."""
    job = Job(model, client)
    shards = job.shards(data, "data")
    job.load(shards)
    return job.mean_loss(shards, model._values)


def predict(model, client, expr, data: Mapping):
    """``expr`` at the current parameters on every chunk of ``data``: a dask array (rows
    chunked like the data) whose blocks are computing on the cluster."""
    import dask.array as da

    from .arrays import ArrayModel

    if data is None:
        raise InputError("predict needs data: a dict from data symbols to arrays.")
    if isinstance(model, ArrayModel):
        return _predict_matrix(model, client, expr, data)
    f = model._predictor(model._prediction_or(expr))
    if f.backend != "flat":
        raise ExpressionError("this prediction is big enough to run as a tape, which the "
                              "workers do not run yet; predict without client= (or split it).")
    job = Job(model, client, f.generated.source)
    job.restrict([s for s in model._data_syms if s in set(f.inputs)])
    shards = job.shards({s: v for s, v in by_symbol(data, model._data_syms).items()
                         if s in job.syms}, "data")
    inputs = tuple(("p", model._param_syms.index(s)) if s in model._param_syms
                   else ("d", job.syms.index(s)) for s in f.inputs)
    values = model._values.copy()
    parts = [client.submit(_predict_scalar, job.layout, job.source, inputs, values, fut,
                           pure=False) for fut in shards.futures]
    return da.concatenate([da.from_delayed(p, shape=(r,), dtype=np.float64)
                           for p, r in zip(parts, shards.rows)])


def _predict_matrix(model, client, expr, data):
    import dask.array as da

    lowered = model._lowered_prediction(model._prediction_or(expr))
    job = Job(model, client)
    given = by_symbol(data, model._data_syms) if isinstance(data, Mapping) else {}
    job.restrict([d for d in model._data_syms if d in given])
    shards = job.shards(data, "data")
    params = model.params
    parts = [client.submit(_predict_array, lowered, params, tuple(job.syms), fut, job.flipped,
                           pure=False) for fut in shards.futures]
    first = parts[0].result()
    return da.concatenate([da.from_delayed(p, shape=(r, *first.shape[1:]), dtype=first.dtype)
                           for p, r in zip(parts, shards.rows)])


def check_client(client) -> None:
    """Refuse anything but a ``dask.distributed.Client``, saying how to get one."""
    try:
        from distributed import Client
    except ImportError as e:
        raise ImportError("client= needs Dask's distributed scheduler: pip install "
                          "\"symgrad[distributed]\"") from e
    if not isinstance(client, Client):
        raise TypeError(f"client must be a dask.distributed.Client, got {client!r}")
