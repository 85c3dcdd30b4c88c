"""The show layer for matrix models: traces, pictures and gradient checks of whole arrays.

A matrix model's listing is run line by line with NumPy (``symgrad.expression.evaluate``
interprets each line's SymPy form; nothing is ``eval``'d), so a trace shows every line's
shape and leading entries and a picture labels each wire with the shape it carries and the
norm of the gradient flowing back. The gradient check compares the compiled gradient with
central differences of the compiled loss, for a few entries of every parameter.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import sympy as sp

from ..errors import InputError
from ..expression.evaluate import evaluate_lowered
from ..train import ArrayModel, PreparedData
from .source import Source
from .trace import Trace, execute

__all__ = ["MatrixValue", "array_source", "check_arrays", "run_arrays"]


class MatrixValue:
    """A matrix in a trace or picture: prints as its shape and first entries."""

    __slots__ = ("array",)

    def __init__(self, array) -> None:
        self.array = np.asarray(array, dtype=float)

    @property
    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.array)))

    def summary(self, digits: int = 4, entries: int = 3) -> str:
        r, c = self.array.shape
        flat = self.array.ravel()
        head = " ".join(f"{v:.{digits}g}" for v in flat[:entries])
        more = " …" if flat.size > entries else ""
        return f"{r}x{c} [{head}{more}]"

    def label(self, digits: int = 2) -> str:
        """For a picture's wire: the shape it carries."""
        r, c = self.array.shape
        return f"{r}x{c}"

    def __add__(self, other):
        other = other.array if isinstance(other, MatrixValue) else other
        return type(self)(self.array + other)

    __radd__ = __add__

    def __format__(self, spec: str) -> str:
        return self.summary()

    def __str__(self) -> str:
        return self.summary()

    __repr__ = __str__


class GradientValue(MatrixValue):
    """A gradient matrix: a picture labels its wire with the norm (the shape is the value's)."""

    __slots__ = ()

    def label(self, digits: int = 2) -> str:
        return f"|g|={np.linalg.norm(self.array):.{digits}g}"


def _wrap(value, kind=MatrixValue):
    a = np.asarray(value)
    return kind(a) if a.ndim == 2 else float(a)


def array_source(model: ArrayModel) -> Source:
    """The :class:`Source` of a matrix model (its graph, listing and current parameters)."""
    generated = model.generated
    nodes = (*model.data_nodes, *model.param_nodes)
    params = [n.symbol for n in model.param_nodes]
    current = dict(zip(params, (MatrixValue(v) for v in model.params.values())))
    return Source("model", model, model.loss, generated.forward, generated.backward,
                  generated.output, model.name, tuple(n.symbol for n in nodes),
                  tuple(n.name for n in nodes), tuple(params), model.ir, model.program,
                  defaults=current, matrix=True)


def _data(args, kwargs):
    """A matrix model's data, given as one dict {X: array, ...}, by keyword (X=array) or as
    ``model.prepare(...)`` made it."""
    if len(args) == 1 and isinstance(args[0], PreparedData) and not kwargs:
        return args[0]
    if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
        return dict(args[0])
    if args:
        raise InputError("give a matrix model's data as a dict {X: array, ...} or by keyword "
                         "(X=array, ...).")
    return dict(kwargs)


def _environment(source: Source, args, kwargs) -> tuple[dict, dict]:
    """Values of the graph's input symbols (by node name) from data given as for ``fit``."""
    model = source.obj
    checked = model.data_arrays(_data(args, kwargs))
    values = {**model.params, **checked}
    env: dict = {}
    point: dict = {}
    matrices = model.lowered.matrices
    node_of = source.graph.input_nodes()
    for m, v in values.items():
        env[node_of[matrices[m]].var] = np.asarray(v, dtype=float)
        point[m.name] = MatrixValue(v)
    batch = model.lowered.batch
    if batch is not None:
        rows = next(a.shape[0] for d, a in checked.items()
                    if not isinstance(d.shape[0], (int, sp.Integer)))
        env[batch] = float(rows)
        if batch in node_of:
            env[node_of[batch].var] = float(rows)
    return env, point


def run_arrays(source: Source, args, kwargs, digits: int = 4) -> Trace:
    """Run a matrix model's listing with NumPy on the given data and keep every value."""
    env, point = _environment(source, args, kwargs)

    def shown(value, section: str):
        return _wrap(value, GradientValue if section == "backward" else MatrixValue)

    rows = env.get(source.obj.lowered.batch)
    forward, backward = execute(source, env, evaluate_lowered, shown, rows)
    values = {line.target: line.value for line in (*forward, *backward)}
    values.update({s.name: _wrap(v) for s, v in env.items() if s.name not in values})
    wrt = {s: n for s, n in zip(source.wrt, (source.safe[s] for s in source.wrt))}
    return Trace(source.expr, point, source.output, wrt, forward, backward, values, digits)


def check_arrays(source: Source, args, kwargs, entries: int, seed: int, tol, row,
                 hessian: bool = False):
    """Gradient check rows: ``entries`` random entries of every parameter; with ``hessian``
    also the Hessian between every two of those entries (``model.hvp`` columns against
    central differences of the compiled gradient)."""
    model = source.obj
    data = _data(args, kwargs)
    at = model.evaluator(data)
    current = model.params
    # the evaluator's layout: every parameter flattened, one after another, in order
    flat = np.concatenate([v.ravel() for v in current.values()])
    grad = at(flat)[1]
    x = flat.astype(np.float64).tolist()

    def loss_at(p) -> float:
        return at(np.asarray(p, dtype=flat.dtype))[0]

    rng = np.random.default_rng(seed)
    rows, lo, picked = [], 0, []
    for p, v in current.items():
        size = v.size
        g = grad[lo:lo + size].reshape(v.shape)
        for k in np.sort(rng.choice(size, size=min(entries, size), replace=False)).tolist():
            i, j = divmod(k, g.shape[1])
            rows.append(row(f"{p.name}[{i},{j}]", float(g.flat[k]), loss_at, x, lo + k, tol))
            picked.append((f"{p.name}[{i},{j}]", lo + k))
        lo += size
    if hessian:
        for name_b, b in picked:
            unit = np.zeros(flat.size)
            unit[b] = 1.0
            column = model.hvp(unit, data)
            for name_a, a in picked:
                def grad_a(p, a=a) -> float:
                    return float(at(np.asarray(p, dtype=flat.dtype))[1][a])

                rows.append(row(f"{name_a},{name_b}", float(column[a]), grad_a, x, b, tol))
    title = (f"gradient check of {source.output} (compiled code) at the current parameters, "
             f"{entries} entries per parameter")
    return rows, title
