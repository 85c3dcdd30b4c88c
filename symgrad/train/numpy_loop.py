"""The NumPy tier of matrix models: the same program, run by NumPy, while Numba compiles.

A matrix model's listing is whole-array code, so NumPy can run it as it stands: each
assignment of the program (forward and backward, as SymPy data) becomes a closure over
NumPy calls once (``expression.evaluate.numpy_function``), and a step evaluates them in
order, each name keeping its shape as the compiled loop's buffers do (``program.shapes``:
``grad_s1 = grad_s2`` below ``s2 = sum(s1)`` broadcasts the scalar to ``s1``'s shape). A
value a step computes on the way that a later step uses is kept for it, not computed again
(``expression.evaluate.byproduct``: the softmax of ``softmax_cross_entropy``, which its
gradient reads).
``fit`` starts here when the compiled loop is not in the cache yet, so a short job never
waits for a compile it does not need; a background process compiles the loop meanwhile and
``fit`` switches to it between chunks of epochs. This loop mirrors the
compiled one (``templates/arrays.py.j2``: batches, the seeded shuffle, the loss weighted by
batch size, early stopping, the divergence guard), and its optimizer mirrors
``symgrad.kernels.optim.update``: results agree up to rounding (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import sympy as sp
from sympy.codegen.ast import AddAugmentedAssignment

from ..expression.evaluate import byproduct, numpy_function, resolved, stored
from .history import DIVERGED, DONE, EARLY_STOPPING

__all__ = ["NumpyLoop", "end_epoch", "numpy_update", "permutation"]

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def permutation(n: int, key: int) -> np.ndarray:
    """``symgrad.kernels.loops.permute``'s shuffle of arange(n) (splitmix64 Fisher-Yates)."""
    state = ((key & _M64) * _GOLDEN + 1) & _M64
    order = list(range(n))
    for k in range(n - 1, 0, -1):
        state = (state + _GOLDEN) & _M64
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        j = (z ^ (z >> 31)) % (k + 1)
        order[k], order[j] = order[j], order[k]
    return np.array(order, dtype=np.int64)


def numpy_update(kind: int, p: np.ndarray, g: np.ndarray, state: np.ndarray, t: int,
                 hyper: np.ndarray) -> None:
    """``symgrad.kernels.optim.update`` with whole-array NumPy operations, in place (the same
    operations in the same order, so the same rounding; ``g`` is overwritten)."""
    T = p.dtype.type
    lr, weight_decay, l1, one = T(hyper[0]), T(hyper[1]), T(hyper[2]), T(1.0)
    if weight_decay or l1:
        g = g + weight_decay * p + l1 * ((p > 0) * one - (p < 0) * one)
    if kind == 0:
        g *= lr
        p -= g
    elif kind in (1, 2):
        mu, v = T(hyper[3]), state[0]
        if t == 1:
            v[:] = g
        else:
            v *= mu
            v += g
        p -= lr * v if kind == 1 else lr * (g + mu * v)
    elif kind == 3:
        s = state[0]
        s += g * g
        p -= lr * g / (np.sqrt(s) + T(hyper[3]))
    elif kind == 4:
        s = state[0]
        s *= T(hyper[3])
        s += T(1.0 - hyper[3]) * g * g
        p -= lr * g / (np.sqrt(s) + T(hyper[4]))
    elif kind == 5:
        rho, eps, rest, s, u = T(hyper[3]), T(hyper[4]), T(1.0 - hyper[3]), state[0], state[1]
        s[:] = rho * s + rest * g * g
        d = np.sqrt(u + eps) / np.sqrt(s + eps) * g
        u[:] = rho * u + rest * d * d
        p -= lr * d
    else:
        m, v = state[0], state[1]
        m *= T(hyper[3])
        m += T(1.0 - hyper[3]) * g
        g2 = T(1.0 - hyper[4]) * g
        g2 *= g
        v *= T(hyper[4])
        v += g2
        if kind == 7:
            np.maximum(state[2], v, out=state[2])
            v = state[2]
        denominator = np.sqrt(v)
        denominator *= T(1.0 / math.sqrt(1.0 - hyper[4] ** t))
        denominator += T(hyper[5])
        g2 = T(hyper[0] / (1.0 - hyper[3] ** t)) * m
        g2 /= denominator
        p -= g2


def end_epoch(epoch, loss, monitor, validating, params, before, losses, val_losses, best,
              best_params, patience) -> int:
    """``symgrad.kernels.loops.end_epoch`` in Python (see there)."""
    losses[epoch] = loss
    finite = _finite(params)
    ok = finite and math.isfinite(loss)
    if validating:
        val_losses[epoch] = monitor
        ok = ok and math.isfinite(monitor)
        kept = params
    else:
        monitor, kept = loss, before
    if math.isfinite(monitor) and monitor < best[0]:
        if not (finite if kept is params else _finite(kept)):
            return DIVERGED
        best[:] = monitor, epoch, 0
        best_params[:] = kept
    elif ok:
        best[2] += 1
        if patience > 0 and best[2] >= patience:
            return EARLY_STOPPING
    return DONE if ok else DIVERGED


def _finite(a: np.ndarray) -> bool:
    """Whether every entry of ``a`` is finite: one sum, and entry by entry only where the
    sum is not (a sum of finite values can overflow: the loop runs it under ``errstate``)."""
    return math.isfinite(a.sum()) or bool(np.all(np.isfinite(a)))


def _kept(assignments: Sequence, first: int) -> dict:
    """The values steps compute on the way that later steps use (``expression.evaluate.
    byproduct``: ``softmax_cross_entropy(s, y)`` gives ``softmax(s)``, which its gradient
    reads), each with its slot (from ``first`` on) and the step that leaves it: a value
    computed once is read where the program uses it again. Only values of names assigned
    once (and inputs): a name assigned again in between would make it stale."""
    counts: dict = {}
    for a in assignments:
        counts[a.lhs] = counts.get(a.lhs, 0) + 1
    kept: dict = {}
    for i, a in enumerate(assignments):
        made = byproduct(a.rhs)
        if (made is None or made in kept or any(counts.get(s, 0) > 1 for s in made.free_symbols)
                or not any(later.rhs.has(made) for later in assignments[i + 1:])):
            continue
        kept[made] = (first + len(kept), i)
    return kept


class NumpyLoop:
    """A matrix model's program run by NumPy: ``train`` takes the compiled loop's arguments
    (data as stored for it: matrices whose rows are the batch may be kept transposed)."""

    def __init__(self, program, params: Sequence, data: Sequence, batch: sp.Symbol | None,
                 batch_var: sp.Symbol | None, slices: Sequence, flipped: Sequence[bool],
                 batched: Sequence[bool]) -> None:
        assignments = [*program.forward, *program.backward]
        names = [n.var for n in params] + [n.var for n in data]
        sizes = [s for s in (batch, batch_var) if s is not None]  # the batch size's symbols
        names += sizes
        names += list(dict.fromkeys(a.lhs for a in assignments if a.lhs not in set(names)))
        slots = {s: k for k, s in enumerate(names)}  # the values live in a list, by slot
        kept = _kept(assignments, len(names))  # values a step leaves for later ones
        self._size = len(names) + len(kept)

        def step(i, a):  # a name's shape (matrices): smaller values broadcast into it
            known = {**slots, **{b: k for b, (k, at) in kept.items() if at < i}}
            keep = next((k for b, (k, at) in kept.items() if at == i), None)
            return (slots[a.lhs], numpy_function(a.rhs, known, keep),
                    isinstance(a, AddAugmentedAssignment), program.shapes.get(a.lhs) or None)

        steps = [step(i, a) for i, a in enumerate(assignments)]
        self._forward = steps[:len(program.forward)]
        self._backward = steps[len(program.forward):]
        self._dims_of: dict = {}  # (rows, backward) -> the steps, shapes in numbers
        self._output = slots[program.output]
        self._grads = [slots[g] for g in program.grads]
        self._params = list(slices)
        self._first_data = len(params)
        self._n_batch_symbols = len(sizes)
        self._flipped, self._batched = list(flipped), list(batched)
        self._viewed, self._views = None, []

    def _run(self, values, data, rows, backward=True) -> tuple[float, np.ndarray | None]:
        env = [None] * self._size
        if values is not self._viewed:  # the parameters' views, made once per array
            self._views = [values[where].reshape(shape) for where, shape in self._params]
            views = all(np.shares_memory(v, values) for v in self._views if v.size)
            self._viewed = values if views else None  # a copy would not see the updates
        env[:len(self._views)] = self._views
        k = self._first_data
        env[k:k + len(data)] = data
        k += len(data)
        for j in range(k, k + self._n_batch_symbols):
            env[j] = float(rows)
        for lhs, fn, aug, dims in self._plan(rows, backward):
            value = env[lhs] + fn(env) if aug else fn(env)
            if dims is not None and getattr(value, "shape", None) != dims:
                value = stored(value, dims, values.dtype)
            env[lhs] = value
        loss = env[self._output]
        if not backward:
            return loss, None
        grad = np.concatenate([g.ravel() if type(g) is np.ndarray else np.ravel(g)
                               for g in [env[k] for k in self._grads]])
        return loss, grad if grad.dtype == values.dtype else grad.astype(values.dtype)

    def _plan(self, rows, backward: bool) -> list:
        """The steps run for a batch of ``rows``, each with its shape in numbers (None: not
        a matrix); made once per batch size."""
        found = self._dims_of.get((rows, backward))
        if found is None:
            steps = self._forward + self._backward if backward else self._forward
            found = self._dims_of[rows, backward] = [
                (lhs, fn, aug, resolved(shape, rows) if shape else None)
                for lhs, fn, aug, shape in steps]
        return found

    def _logical(self, stored: tuple) -> list:
        return [a.T if flip else a for a, flip in zip(stored, self._flipped)]

    def train(self, values, state, step, hyper, kind, X, V, first, epochs, batch, drop_last,
              shuffle, seed, patience, losses, val_losses, best, best_params):
        """The compiled ``train``'s loop (see templates/arrays.py.j2) in NumPy."""
        data, val = self._logical(X), self._logical(V)
        n = next((a.shape[0] for a, b in zip(data, self._batched) if b), 1)
        n_val = next((a.shape[0] for a, b in zip(val, self._batched) if b), 0)
        size = n if batch <= 0 or batch > n else batch
        batches = n // size if drop_last else (n + size - 1) // size
        whole = size == n and not shuffle
        before = np.empty_like(values)
        with np.errstate(all="ignore"):  # as the compiled loop: no warnings, results checked
            for e in range(epochs):
                epoch = first + e
                before[:] = values
                order = permutation(n, seed * 1000003 + epoch) if shuffle else None
                mean, seen = 0.0, 0
                for b in range(batches):
                    start = b * size
                    m = min(size, n - start)
                    rows = order[start:start + m] if shuffle else slice(start, start + m)
                    part = data if whole else [a[rows] if bt else a
                                               for a, bt in zip(data, self._batched)]
                    loss, grad = self._run(values, part, m)
                    seen += m
                    mean += (float(loss) - mean) * (m / seen)
                    step[0] += 1
                    numpy_update(kind, values, grad, state, int(step[0]), hyper)
                monitor = (float(self._run(values, val, n_val, backward=False)[0])
                           if n_val > 0 else 0.0)
                status = end_epoch(epoch, mean, monitor, n_val > 0, values, before, losses,
                                   val_losses, best, best_params, patience)
                if status != DONE:
                    return e + 1, status
        return epochs, DONE
