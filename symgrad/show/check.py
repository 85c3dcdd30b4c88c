"""``check_gradients``: the analytic gradient checked against the numerical one.

As the lectures recommend: for every differentiated input, the compiled gradient next to
the central difference ``(f(x + h) - f(x - h)) / 2h``, their relative error and a verdict.
For a Model the per-sample loss of a few samples is checked with the trainer's own
compiled code, the code that ``fit`` runs.

The verdict allows the truncation error of the difference (``rtol``), an absolute floor
(``atol``) and the rounding error of the difference itself, which grows as ``|f| eps / h``
and would otherwise fail large losses with small gradients. Tolerances and the step ``h``
depend on the dtype (float64 today; float32 when models of that type exist). Where the
function has a kink inside ``[x - h, x + h]`` (relu at 0, max at a tie) the one-sided
differences disagree; if the analytic value lies between them the row reads ``kink``, which
is not a failure: any subgradient there is a legitimate choice.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ..errors import InputError
from ..train.data import columns as data_columns
from .source import Source, source_of
from .trace import align_decimals, format_number

__all__ = ["GradientCheck", "GradientRow", "TOLERANCES", "Tolerance", "check_gradients"]

if TYPE_CHECKING:
    from ..compile import CompiledFunction
    from ..train import Model


@dataclass(frozen=True)
class Tolerance:
    """Step ``h = eps * max(1, |x|)`` and the pass test ``|a - n| <= atol + rtol*max|a|,|n|``."""

    eps: float
    rtol: float
    atol: float
    unit: float  # machine epsilon, for the rounding error of the difference


def _tolerance(dtype: type, rtol: float, atol: float) -> Tolerance:
    unit = float(np.finfo(dtype).eps)
    return Tolerance(unit ** (1 / 3), rtol, atol, unit)


#: Per dtype: the step is the cube root of machine epsilon (best for central differences).
TOLERANCES = {
    "float64": _tolerance(np.float64, 1e-6, 1e-9),
    "float32": _tolerance(np.float32, 1e-2, 1e-4),
}


@dataclass(frozen=True)
class GradientRow:
    """One input (at one sample, for a Model): both gradients and the verdict."""

    name: str
    analytic: float
    numerical: float
    abs_error: float
    rel_error: float
    allowed: float
    status: str  # "ok", "kink" or "FAIL"
    sample: int | None = None

    @property
    def passed(self) -> bool:
        return self.status != "FAIL"


@dataclass(frozen=True)
class GradientCheck:
    """The result of :func:`check_gradients`: truthy when every row passed.

    ``check["w0"]`` is the row of input ``w0`` (the first sample's, for a Model);
    ``str(check)`` is the table that ``check_gradients`` prints.
    """

    title: str
    rows: tuple[GradientRow, ...]
    dtype: str
    tolerance: Tolerance

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    @property
    def failures(self) -> list[GradientRow]:
        return [row for row in self.rows if not row.passed]

    @property
    def max_rel_error(self) -> float:
        return max((row.rel_error for row in self.rows), default=0.0)

    def __bool__(self) -> bool:
        return self.passed

    def __getitem__(self, name: str | sp.Symbol) -> GradientRow:
        name = name.name if isinstance(name, sp.Symbol) else name
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def assert_ok(self) -> None:
        """Raise AssertionError with the table unless every row passed."""
        if not self.passed:
            raise AssertionError(f"gradient check failed:\n{self}")

    def table(self) -> list[list[str]]:
        head = ["input", "analytic", "numerical", "rel error", ""]
        if any(row.sample is not None for row in self.rows):
            head.insert(1, "sample")
        analytic = align_decimals([_g(row.analytic) for row in self.rows])
        numerical = align_decimals([_g(row.numerical) for row in self.rows])
        body = []
        for row, a, n in zip(self.rows, analytic, numerical):
            cells = [row.name, a, n, f"{row.rel_error:.1e}", row.status]
            if len(head) == 6:
                cells.insert(1, str(row.sample))
            body.append(cells)
        return [head, *body]

    def __str__(self) -> str:
        rows = self.table()
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        lines = [self.title, self._settings()]
        for r in rows:
            lines.append("  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                                   for k, (c, w) in enumerate(zip(r, widths))).rstrip())
        lines.append(self.summary())
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        n, bad = len(self.rows), len(self.failures)
        if bad:
            names = ", ".join(dict.fromkeys(row.name for row in self.failures))
            return f"FAILED: {bad} of {n} gradients disagree ({names})"
        kinks = sum(row.status == "kink" for row in self.rows)
        note = f" ({kinks} at a kink)" if kinks else ""
        return f"passed: {n} of {n} gradients agree{note}, max rel error {self.max_rel_error:.1e}"

    def _settings(self) -> str:
        t = self.tolerance
        return (f"central differences, h = {t.eps:.1e}*max(1, |x|); {self.dtype}: "
                f"rtol {t.rtol:g}, atol {t.atol:g}")

    def __repr__(self) -> str:
        return f"<GradientCheck {self.summary()}>"

    def _repr_html_(self) -> str:
        rows = self.table()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
        )
        return (f"<p><b>{html.escape(self.title)}</b><br><small>{html.escape(self._settings())}"
                f"</small></p><table><tr>{head}</tr>{body}</table>"
                f"<p>{html.escape(self.summary())}</p>")


def check_gradients(
    obj: CompiledFunction | Model,
    *args,
    samples: int = 3,
    seed: int = 0,
    eps: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    verbose: bool = True,
    hessian: bool = False,
    **kwargs,
) -> GradientCheck:
    """Compare the compiled gradient with central differences; print and return the result.

    For a CompiledFunction the point is given as in a call (positionally, by keyword or one
    dict). For a Model give data: one sample's values, or arrays (a dict as for ``fit``) of
    which ``samples`` samples are checked (chosen reproducibly from ``seed``), at the current
    parameters. ``eps``, ``rtol`` and ``atol`` override the dtype's defaults
    (:data:`TOLERANCES`): ``eps`` lies between machine epsilon and 1, ``rtol`` and ``atol``
    in [0, 1) (a tolerance of 1 or more would pass a gradient of the wrong sign).
    ``verbose=False`` does not print. ``hessian=True`` also checks the second derivatives:
    every Hessian entry (row ``w0,x1``: d/dx1 of the gradient's ``w0`` entry) against
    central differences of the compiled gradient (for a matrix model: between every two of
    the checked entries). A symbol whose name is one of these options is given in the
    dict form.
    """
    source = source_of(obj)
    base = TOLERANCES.get(source.dtype, TOLERANCES["float64"])
    tol = Tolerance(_option("eps", eps, base.eps, base.unit),
                    _option("rtol", rtol, base.rtol, 0.0),
                    _option("atol", atol, base.atol, 0.0), base.unit)
    if source.matrix:
        from .arrays import check_arrays

        rows, title = check_arrays(source, args, kwargs, samples, seed, tol, _row, hessian)
    elif source.kind == "model":
        rows, title = _check_model(source, args, kwargs, samples, seed, tol, hessian)
    else:
        rows, title = _check_function(source, args, kwargs, tol, hessian)
    if hessian:
        title += ", with its Hessian"
    result = GradientCheck(title, tuple(rows), source.dtype, tol)
    if verbose:
        print(result, end="")
    return result


def _option(name: str, value, default: float, low: float) -> float:
    """A tolerance or step: a real number in ``[low, 1)``, or ``default`` for None."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {type(value).__name__} {value!r:.40}.")
    v = float(value)
    if not low <= v < 1.0:  # NaN fails this too
        what = ("the relative step of the central difference" if name == "eps"
                else "a tolerance")
        raise InputError(f"{name} is {what}: it must lie in [{low:.3g}, 1) "
                         f"(default {default:.3g}), got {v!r}.")
    return v


def _check_function(source: Source, args, kwargs, tol: Tolerance, hessian: bool = False):
    f = source.obj
    point = source.bind(args, kwargs)
    x = list(point.values())
    _, grad = f.value_and_grad(*x)
    rows = []
    for s, g in zip(f.wrt, grad):
        rows.append(_row(s.name, g, lambda v: f.value_kernel(*v), x, f.inputs.index(s), tol))
    if hessian:
        hess = f.hessian(*x)
        for i, si in enumerate(f.wrt):
            def grad_i(v, i=i) -> float:
                return f.value_and_grad(*v)[1][i]

            for j, sj in enumerate(f.wrt):
                rows.append(_row(f"{si.name},{sj.name}", float(hess[i, j]), grad_i, x,
                                 f.inputs.index(sj), tol))
    return rows, f"gradient check of {source.output} at {_point(point)}"


def _check_model(source: Source, args, kwargs, samples: int, seed: int, tol: Tolerance,
                 hessian: bool = False):
    model = source.obj
    data = [s for s in source.inputs if s not in set(source.wrt)]
    columns = _data(source, data, args, kwargs)
    n = columns.shape[1]
    pick = np.sort(np.random.default_rng(seed).choice(n, size=min(samples, n), replace=False))
    params = np.array(list(model.params.values()))
    grad = np.empty(len(params))
    rows = []
    for i in pick.tolist():
        one = np.ascontiguousarray(columns[:, i:i + 1])
        model.loss_and_grad_sum(params, one, grad)

        def loss_at(p: Sequence[float], one=one) -> float:
            return model.loss_and_grad_sum(np.array(p), one, np.empty(len(p)))

        for k, s in enumerate(source.wrt):
            rows.append(_row(s.name, float(grad[k]), loss_at, params.tolist(), k, tol, i))
        if hessian:
            hess = model.hessian(one, params)
            for a, sa in enumerate(source.wrt):
                def grad_a(p: Sequence[float], one=one, a=a) -> float:
                    g = np.empty(len(p))
                    model.loss_and_grad_sum(np.array(p), one, g)
                    return float(g[a])

                for b, sb in enumerate(source.wrt):
                    rows.append(_row(f"{sa.name},{sb.name}", float(hess[a, b]), grad_a,
                                     params.tolist(), b, tol, i))
    what = f"samples {', '.join(map(str, pick.tolist()))} of {n}" if n > 1 else "one sample"
    return rows, (f"gradient check of the per-sample {source.output} (trainer code) at the "
                  f"current parameters, {what}")


def _data(source: Source, data: list[sp.Symbol], args, kwargs) -> np.ndarray:
    if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
        args, kwargs = (), dict(args[0])
    given = dict(zip(data, args))
    names = {s.name: s for s in data}
    for key, value in kwargs.items():
        s = key if key in set(data) else names.get(key)
        if s is None:
            raise InputError(f"{key!r} is not a data column of the model (data: "
                             f"{', '.join(names)}); parameters are checked at their current "
                             "values.")
        given[s] = value
    one = all(np.ndim(v) == 0 for v in given.values())
    return data_columns({s: np.atleast_1d(v) if one else v for s, v in given.items()}, data, "data")


def _row(name: str, analytic: float, f: Callable, x: list[float], k: int, tol: Tolerance,
         sample: int | None = None) -> GradientRow:
    h = tol.eps * max(1.0, abs(x[k]))
    up, down = _moved(x, k, h), _moved(x, k, -h)
    f_up, f_0, f_down = f(up), f(x), f(down)
    step = up[k] - down[k]  # the step as represented, not as intended
    numerical = (f_up - f_down) / step
    error = abs(analytic - numerical)
    scale = max(abs(analytic), abs(numerical))
    rounding = 64 * tol.unit * max(abs(f_up), abs(f_0), abs(f_down)) / step
    allowed = tol.atol + tol.rtol * scale + rounding
    status = "ok" if error <= allowed else "FAIL"
    if status == "FAIL" and _kink(f, x, k, h, f_0, analytic, allowed):
        status = "kink"
    if not (math.isfinite(analytic) and math.isfinite(numerical)):
        status = "FAIL"
    rel = error / scale if scale > 0 else 0.0
    return GradientRow(name, float(analytic), float(numerical), error, rel, allowed, status,
                       sample)


def _kink(f: Callable, x: list[float], k: int, h: float, f_0: float, analytic: float,
          allowed: float) -> bool:
    """True if ``f`` has a kink at ``x`` and ``analytic`` lies between its one-sided slopes.

    The one-sided slopes of a smooth function differ by about ``h f''``, which shrinks with
    the step; at a kink they differ by the jump in slope whatever the step.
    """

    def sides(step: float) -> tuple[float, float]:
        up, down = _moved(x, k, step), _moved(x, k, -step)
        return (f_0 - f(down)) / (x[k] - down[k]), (f(up) - f_0) / (up[k] - x[k])

    wide, narrow = sides(h), sides(h / 16)
    gap = abs(narrow[1] - narrow[0])
    if gap < 0.5 * abs(wide[1] - wide[0]) or gap <= allowed:
        return False
    return min(narrow) - allowed <= analytic <= max(narrow) + allowed


def _moved(x: list[float], k: int, step: float) -> list[float]:
    moved = list(x)
    moved[k] = x[k] + step
    return moved


def _g(value: float) -> str:
    return format_number(value, 12)


def _point(point: dict) -> str:
    return ", ".join(f"{s.name}={v:.6g}" for s, v in point.items())
