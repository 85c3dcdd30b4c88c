"""H1 second order: the cost of one Hessian-vector product against one value+gradient.

Case ``w1``: W1's neuron sigmoid(w0*x0 + w1*x1 + w2) at (2, -1, -3, -2, -3), the generated
module's array kernels called from Python: ``value_and_grad_array(x, grad)`` (baseline)
against ``hvp_array(x, v, grad, hv)`` (value, gradient and H v in one pass). Case ``w4``:
W4's damped-sine MSE model over 1,000,000 points (x ~ U(0, 10), y from the true parameters
plus noise, numpy default_rng(0)) at W4's initial parameters: ``model.loss_and_grad_sum``
(the trainer's compiled pass, baseline) against ``model.hvp`` (one compiled pass of the
per-sample flat code and its tangent lines). The ratio column is the issue's target
(<= 4x). Checks: H v against central differences of the compiled gradient along v.
symgrad only (the peers' HVPs are not part of this comparison).
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import Clock, Options, per_call

PEERS = {"symgrad": "symgrad"}
CASES = ("w1", "w4")
N = 1_000_000
POINT = (2.0, -1.0, -3.0, -2.0, -3.0)
INIT = (1.5, 0.2, 2.9, 0.3, 0.0)
TRUE = (2.0, 0.3, 3.0, 0.5, 0.1)
FD_TOL = 1e-5  # central differences of the gradient: truncation and rounding ~1e-8


def runs(peers: list[str], quick: bool) -> list[dict]:
    return [{"peer": "symgrad", "case": case, "cache": f"h1-{case}"}
            for case in CASES if "symgrad" in peers]


def run(spec: dict, opts: Options):
    import os

    if spec.get("cache_dir"):
        os.environ["SYMGRAD_CACHE_DIR"] = spec["cache_dir"]
    yield from (_w1 if spec["case"] == "w1" else _w4)(spec, opts)


def _fd_check(grad_at, x: np.ndarray, v: np.ndarray, hv: np.ndarray) -> dict:
    h = np.finfo(float).eps ** (1 / 3) * max(1.0, float(np.abs(x).max()))
    want = (grad_at(x + h * v) - grad_at(x - h * v)) / (2 * h)
    diff = float(np.abs(hv - want).max() / max(1.0, float(np.abs(want).max())))
    return {"max_abs_diff": diff, "check": diff <= FD_TOL,
            "check_note": "H v vs central differences of the gradient"}


def _w1(spec, opts):
    import sympy as sp

    import symgrad as sg

    w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
    f = sg.compile(sg.sigmoid(w0 * x0 + w1 * x1 + w2), wrt=[w0, x0, w1, x1, w2])
    x = np.array(POINT)
    v = np.array([0.3, -1.0, 0.5, 2.0, -0.7])
    grad, hv = np.empty(5), np.empty(5)
    vg, hvp = f.module.value_and_grad_array, f.second_order.module.hvp_array
    with Clock() as c:
        vg(x, grad)
    yield {"variant": "value_and_grad_array (baseline)", "group": "w1", "baseline": True,
           "first_call_s": c.s, **per_call(vg, (x, grad), opts=opts)}
    with Clock() as c:
        hvp(x, v, grad, hv)

    def grad_at(p):
        g = np.empty(5)
        vg(p, g)
        return g

    yield {"variant": "hvp_array (value, gradient, H v)", "group": "w1", "first_call_s": c.s,
           **per_call(hvp, (x, v, grad, hv), opts=opts), **_fd_check(grad_at, x, v, hv)}


def _w4(spec, opts):
    import sympy as sp

    import symgrad as sg

    n = spec.get("n", N)
    rng = np.random.default_rng(0)
    xs = rng.uniform(0.0, 10.0, n)
    a, b, c_, d, e, x, y = sp.symbols("a b c d e x y")
    pred = a * sp.exp(-b * x) * sp.sin(c_ * x + d) + e
    true = dict(zip((a, b, c_, d, e), TRUE))
    ys = (true[a] * np.exp(-true[b] * xs) * np.sin(true[c_] * xs + true[d]) + true[e]
          + 0.05 * rng.standard_normal(n))
    model = sg.Model(sg.losses.mse(pred, y), params=dict(zip((a, b, c_, d, e), INIT)),
                     data=[x, y])
    X = np.ascontiguousarray(np.stack([xs, ys]))
    values = np.array(INIT)
    v = np.array([0.3, -1.0, 0.5, 2.0, -0.7])
    grad = np.empty(5)
    with Clock() as c:
        model.loss_and_grad_sum(values, X, grad)
    yield {"variant": "loss_and_grad_sum (baseline)", "group": "w4", "baseline": True,
           "first_call_s": c.s,
           **per_call(model.loss_and_grad_sum, (values, X, grad), opts=opts)}
    with Clock() as c:
        hv = model.hvp(v, X, values=values)

    def grad_at(p):
        g = np.empty(5)
        model.loss_and_grad_sum(p, X, g)
        return g / n

    yield {"variant": "model.hvp (H v of the mean loss)", "group": "w4", "first_call_s": c.s,
           **per_call(model.hvp, (v, X), opts=opts),
           **_fd_check(grad_at, values, v, hv)}
