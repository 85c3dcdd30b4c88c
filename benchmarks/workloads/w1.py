"""W1 neuron: latency of one value+gradient call of sigmoid(w0*x0 + w1*x1 + w2).

Point (w0, x0, w1, x1, w2) = (2, -1, -3, -2, -3), value 0.731, gradient in that order.
Peers return their native result types (tensors, device arrays); symgrad returns floats.
Group ``py`` is one call from Python; group ``loop`` is ns per point of a kernel called
inside an njit loop over 100,000 nearby points (only for the Numba-based peers).
"""

from __future__ import annotations

import math
import sys

import numpy as np

from benchmarks.common import (
    PEER_MODULES,
    Clock,
    Options,
    c_modules,
    check,
    jax_cache,
    numba_cache_files,
    per_call,
    pytensor_cache,
)

PEERS = PEER_MODULES
POINT = (2.0, -1.0, -3.0, -2.0, -3.0)
TOL = 1e-12
LOOP_POINTS = 100_000


def runs(peers: list[str], quick: bool) -> list[dict]:
    """Subprocess runs: one per peer; symgrad three times: an empty cache dir, then the same
    dir (warm), then warm again with Numba imported first (to show what the import costs)."""
    out = []
    for peer in peers:
        if peer == "symgrad":
            out.append({"peer": peer, "phase": "cold", "cache": "w1"})
            out.append({"peer": peer, "phase": "warm", "cache": "w1"})
            out.append({"peer": peer, "phase": "warm-numba-preimported", "cache": "w1"})
        else:
            out.append({"peer": peer})
    return out


def reference(w0, x0, w1, x1, w2):
    """NumPy float64 by hand: value and (dL/dw0, dL/dx0, dL/dw1, dL/dx1, dL/dw2)."""
    w0, x0, w1, x1, w2 = np.float64(w0), np.float64(x0), np.float64(w1), x1, w2
    s = w0 * x0 + w1 * x1 + w2
    y = 1.0 / (1.0 + np.exp(-s))
    d = y * (1.0 - y)
    return y, (d * x0, d * w0, d * x1, d * w1, d)


REF_VALUE, REF_GRAD = reference(*POINT)


def run(spec: dict, opts: Options):
    yield from globals()[f"peer_{spec['peer']}"](spec, opts)


def _ok(value, grad) -> dict:
    return check(value, grad, REF_VALUE, REF_GRAD, TOL)


def _loop_points() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.asarray(POINT) + 0.01 * rng.standard_normal((LOOP_POINTS, 5))


def _njit_loop(kernel, opts: Options) -> dict:
    """ns per point of ``kernel`` called inside an njit loop (results summed, not hoisted);
    checked point by point against the reference on the first 1000 points."""
    from numba import njit

    @njit
    def loop(kernel, xs):
        acc = 0.0
        for i in range(xs.shape[0]):
            v, g = kernel(xs[i, 0], xs[i, 1], xs[i, 2], xs[i, 3], xs[i, 4])
            acc += v + g[0] + g[1] + g[2] + g[3] + g[4]
        return acc

    @njit
    def fill(kernel, xs, out):
        for i in range(xs.shape[0]):
            v, g = kernel(xs[i, 0], xs[i, 1], xs[i, 2], xs[i, 3], xs[i, 4])
            out[i, 0] = v
            for j in range(5):
                out[i, j + 1] = g[j]

    xs = _loop_points()
    with Clock() as c:
        loop(kernel, xs[:10])
    n = xs.shape[0]
    t = per_call(loop, (kernel, xs), opts=opts)
    got = np.empty((1000, 6))
    fill(kernel, xs[:1000], got)
    ref = np.array([[v, *g] for v, g in (reference(*p) for p in xs[:1000])])
    diff = float(np.max(np.abs(got - ref)))
    return {"group": "loop", "first_call_s": c.s, "points_per_call": n,
            **{k: v / n if k.endswith("_s") else v for k, v in t.items()},
            "max_abs_diff": diff, "tol": TOL, "check": diff <= TOL,
            "check_note": "checked on 1000 points"}


def peer_numpy(spec, opts):
    with Clock() as c:
        v, g = reference(*POINT)
    yield {"variant": "by hand (np.float64 scalars)", "group": "py", "first_call_s": c.s,
           **per_call(reference, POINT, opts=opts), **_ok(v, g), "peer_version": np.__version__}


def peer_numba(spec, opts):
    with Clock() as c:
        import numba
        from numba import njit
    import_s = c.s

    @njit(error_model="numpy")
    def neuron(w0, x0, w1, x1, w2):
        s = w0 * x0 + w1 * x1 + w2
        y = 1.0 / (1.0 + math.exp(-s))
        d = y * (1.0 - y)
        return y, (d * x0, d * w0, d * x1, d * w1, d)

    with Clock() as c:
        v, g = neuron(*POINT)
    yield {"variant": "handwritten njit, from Python", "group": "py", "first_call_s": c.s,
           "import_s": import_s, **per_call(neuron, POINT, opts=opts), **_ok(v, g),
           "cache_warm": None, "peer_version": numba.__version__}
    yield {"variant": "handwritten njit, in njit loop", **_njit_loop(neuron, opts),
           "peer_version": numba.__version__}


def peer_torch(spec, opts):
    with Clock() as c:
        import torch
    import_s = c.s
    torch.set_num_threads(2)
    leaves = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in POINT]

    def step(w0, x0, w1, x1, w2):
        y = torch.sigmoid(w0 * x0 + w1 * x1 + w2)
        return y, torch.autograd.grad(y, (w0, x0, w1, x1, w2))

    with Clock() as c:
        y, g = step(*leaves)
    yield {"variant": "eager, autograd.grad, 5 scalar leaves", "group": "py",
           "first_call_s": c.s, "import_s": import_s, **per_call(step, leaves, opts=opts),
           **_ok(y.item(), [t.item() for t in g]), "threads": torch.get_num_threads(),
           "peer_version": torch.__version__}


def peer_jax(spec, opts):
    with Clock() as c:
        import jax
        import jax.numpy as jnp
    import_s = c.s
    jax.config.update("jax_enable_x64", True)

    def f(p):
        return jax.nn.sigmoid(p[0] * p[1] + p[2] * p[3] + p[4])

    vg = jax.jit(jax.value_and_grad(f))
    p = jnp.asarray(POINT, dtype=jnp.float64)

    def call(p):
        return jax.block_until_ready(vg(p))

    with Clock() as c:
        v, g = call(p)
    yield {"variant": "jit(value_and_grad), f64[5], x64", "group": "py", "first_call_s": c.s,
           "import_s": import_s, **per_call(call, (p,), opts=opts), **_ok(float(v), np.asarray(g)),
           **jax_cache(jax), "dtype": str(g.dtype), "peer_version": jax.__version__}


def peer_pytensor(spec, opts):
    with Clock() as c:
        import pytensor
        import pytensor.tensor as pt
    import_s = c.s
    info = {"import_s": import_s, "peer_version": pytensor.__version__}
    # five scalar inputs (the fastest form here), then one f64[5] vector like JAX
    before = c_modules(pytensor.config.compiledir)
    s = pt.dscalars("w0", "x0", "w1", "x1", "w2")
    y = pt.sigmoid(s[0] * s[1] + s[2] * s[3] + s[4])
    args = [np.array(v) for v in POINT]
    with Clock() as c:
        fn = pytensor.function(s, [y, *pytensor.grad(y, s)], mode="CVM", trust_input=True)
        v, *g = fn(*args)
    yield {"variant": "C backend (CVM), 5 dscalars, trust_input", "group": "py",
           "first_call_s": c.s, **per_call(fn, args, opts=opts), **_ok(v, g),
           **pytensor_cache(pytensor.config.compiledir, before), **info}
    before = c_modules(pytensor.config.compiledir)
    p = pt.dvector("p")
    y = pt.sigmoid(p[0] * p[1] + p[2] * p[3] + p[4])
    x = np.asarray(POINT, dtype=np.float64)
    with Clock() as c:
        fn = pytensor.function([p], [y, pytensor.grad(y, p)], mode="CVM", trust_input=True)
        v, g = fn(x)
    yield {"variant": "C backend (CVM), f64[5], trust_input", "group": "py",
           "first_call_s": c.s, **per_call(fn, (x,), opts=opts), **_ok(v, g),
           **pytensor_cache(pytensor.config.compiledir, before), **info}


def peer_symgrad(spec, opts):
    cache_dir = spec["cache_dir"]
    files_before = numba_cache_files(cache_dir)
    numba_import_s = None
    if spec["phase"] == "warm-numba-preimported":
        with Clock() as c:
            import numba  # noqa: F401
        numba_import_s = c.s
    with Clock() as c:
        import sympy as sp
    sympy_import_s = c.s
    with Clock() as c:
        import symgrad as sg
    import_s, numba_imported = c.s, "numba" in sys.modules
    with Clock() as c:
        w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
        expr = sg.sigmoid(w0 * x0 + w1 * x1 + w2)
    build_s = c.s
    with Clock() as c:
        f = sg.compile(expr, wrt=[w0, x0, w1, x1, w2], cache_dir=cache_dir)
        v, g = f.value_and_grad(*POINT)
    timings = dict(getattr(f, "timings", {}) or {})
    common = {
        "cache_warm": files_before > 0, "import_s": import_s, "sympy_import_s": sympy_import_s,
        "numba_imported_by_import": numba_imported, "numba_import_s": numba_import_s,
        "build_s": build_s,
        **{k: timings.get(k) for k in ("codegen_s", "compile_s", "load_s", "cache_hit")},
        "peer_version": sg.__version__,
    }
    first = {"first_call_s": c.s, **common}
    if spec["phase"] != "cold":
        note = ", numba imported before" if numba_import_s is not None else ""
        yield {"variant": f"value_and_grad (checked){note}", "group": "py", **first, **_ok(v, g)}
        return
    yield {"variant": "value_and_grad (checked)", "group": "py", "baseline": True, **first,
           **per_call(f.value_and_grad, POINT, opts=opts), **_ok(v, g)}
    same = {"cache_warm": files_before > 0, "peer_version": sg.__version__}
    numpy_point = tuple(np.float64(p) for p in POINT)  # e.g. f.value_and_grad(*array)
    v, g = f.value_and_grad(*numpy_point)
    yield {"variant": "value_and_grad (checked), NumPy float64 args", "group": "py", **same,
           **per_call(f.value_and_grad, numpy_point, opts=opts), **_ok(v, g)}
    v, g = f.kernel(*POINT)
    yield {"variant": "kernel (raw njit)", "group": "py", **same,
           **per_call(f.kernel, POINT, opts=opts), **_ok(v, g)}
    yield {"variant": "kernel in njit loop", "baseline": True, **same, **_njit_loop(f.kernel, opts)}
