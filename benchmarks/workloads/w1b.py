"""W1B batched neuron: value and gradient of sigmoid(w0*x0 + w1*x1 + w2) at 1,000,000 points.

The points are numpy default_rng(0).standard_normal((5, N)), rows in the order (w0, x0, w1,
x1, w2); every peer gets five float64 arrays of N and returns the N values and the five
N-vectors of partials (symgrad: a (5, N) array; the others their native containers). Times
are per point (one call's time / N); the first call is the whole first call (including any
compile or trace). Checked against NumPy by hand (max abs diff over all values and partials).
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.common import (
    PEER_MODULES,
    Clock,
    Options,
    c_modules,
    jax_cache,
    numba_cache_files,
    per_call,
    pytensor_cache,
)

PEERS = PEER_MODULES
N = 1_000_000
TOL = 1e-12


def runs(peers: list[str], quick: bool) -> list[dict]:
    return [{"peer": p, **({"phase": "cold", "cache": "w1b"} if p == "symgrad" else {})}
            for p in peers]


def points() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((5, N))


def reference(w0, x0, w1, x1, w2):
    """NumPy vectorised by hand: values (N,) and partials (5, N)."""
    s = w0 * x0 + w1 * x1 + w2
    y = 1.0 / (1.0 + np.exp(-s))
    d = y * (1.0 - y)
    g = np.empty((5, s.shape[0]))
    np.multiply(d, x0, out=g[0])
    np.multiply(d, w0, out=g[1])
    np.multiply(d, x1, out=g[2])
    np.multiply(d, w1, out=g[3])
    g[4] = d
    return y, g


def run(spec: dict, opts: Options):
    pts = points()
    ref_v, ref_g = reference(*pts)

    def ok(values, grads) -> dict:
        v = np.asarray(values, dtype=np.float64)
        g = np.stack([np.asarray(gi, dtype=np.float64) for gi in grads])
        if v.shape != ref_v.shape or g.shape != ref_g.shape:
            return {"max_abs_diff": None, "tol": TOL, "check": False,
                    "check_note": f"shapes {v.shape}, {g.shape}"}
        diff = float(max(np.max(np.abs(v - ref_v)), np.max(np.abs(g - ref_g))))
        return {"max_abs_diff": diff, "tol": TOL, "check": diff <= TOL}

    for row in globals()[f"peer_{spec['peer']}"](spec, opts, pts, ok):
        if "steady_s" in row:  # per point
            row.update({k: v / N for k, v in row.items()
                        if k.startswith("steady") and k.endswith("_s")}, points_per_call=N)
        yield row


def peer_numpy(spec, opts, pts, ok):
    with Clock() as c:
        v, g = reference(*pts)
    yield {"variant": "vectorised by hand (reference)", "group": "batch", "first_call_s": c.s,
           **per_call(reference, tuple(pts), opts=opts), **ok(v, g),
           "peer_version": np.__version__}


def peer_numba(spec, opts, pts, ok):
    with Clock() as c:
        import numba
        from numba import njit, prange
    import_s = c.s

    def body(w0, x0, w1, x1, w2, value, grad):
        for i in prange(w0.shape[0]):
            s = w0[i] * x0[i] + w1[i] * x1[i] + w2[i]
            y = 1.0 / (1.0 + math.exp(-s))
            d = y * (1.0 - y)
            value[i] = y
            grad[0, i] = d * x0[i]
            grad[1, i] = d * w0[i]
            grad[2, i] = d * x1[i]
            grad[3, i] = d * w1[i]
            grad[4, i] = d

    # outputs allocated by np.empty in Python, like symgrad's wrapper (NumPy's large
    # allocations use transparent huge pages; np.empty inside njit page-faults ~2x longer)
    first = True
    for parallel in (False, True):
        kernel = njit(parallel=parallel, error_model="numpy")(body)

        def call(w0, x0, w1, x1, w2, kernel=kernel):
            value, grad = np.empty(w0.shape[0]), np.empty((5, w0.shape[0]))
            kernel(w0, x0, w1, x1, w2, value, grad)
            return value, grad

        with Clock() as c:
            v, g = call(*pts)
        label = "prange, 2 threads" if parallel else "serial loop"
        info = {"cache_warm": None, "threads": numba.get_num_threads() if parallel else 1,
                "peer_version": numba.__version__}
        yield {"variant": f"handwritten njit {label}, outputs np.empty per call",
               "group": "batch", "first_call_s": c.s, "import_s": import_s if first else None,
               **per_call(call, tuple(pts), opts=opts), **ok(v, g), **info}
        first = False
        value, grad = np.empty(N), np.empty((5, N))
        kernel(*pts, value, grad)
        yield {"variant": f"handwritten njit {label}, preallocated outputs", "group": "batch",
               **per_call(kernel, (*pts, value, grad), opts=opts), **ok(value, grad), **info}


def peer_torch(spec, opts, pts, ok):
    with Clock() as c:
        import torch
    import_s = c.s
    torch.set_num_threads(2)
    leaves = [torch.from_numpy(row.copy()).requires_grad_() for row in pts]

    def step(w0, x0, w1, x1, w2):
        y = torch.sigmoid(w0 * x0 + w1 * x1 + w2)
        g = torch.autograd.grad(y, (w0, x0, w1, x1, w2), grad_outputs=torch.ones_like(y))
        return y.detach(), g

    with Clock() as c:
        y, g = step(*leaves)
    yield {"variant": "eager, autograd.grad(y, grad_outputs=ones), 5 f64[N] leaves",
           "group": "batch", "first_call_s": c.s, "import_s": import_s,
           **per_call(step, leaves, opts=opts), **ok(y.numpy(), [t.numpy() for t in g]),
           "threads": torch.get_num_threads(), "peer_version": torch.__version__}


def peer_jax(spec, opts, pts, ok):
    with Clock() as c:
        import jax
        import jax.numpy as jnp
    import_s = c.s
    jax.config.update("jax_enable_x64", True)

    def f(w0, x0, w1, x1, w2):
        return jax.nn.sigmoid(w0 * x0 + w1 * x1 + w2)

    args = [jax.device_put(row) for row in pts]
    vmapped = jax.jit(jax.vmap(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4))))

    @jax.jit
    def vjp(*a):
        y, pull = jax.vjp(f, *a)
        return y, pull(jnp.ones_like(y))

    info = {"import_s": import_s, **jax_cache(jax), "peer_version": jax.__version__}
    for label, fn in (("jit(vmap(value_and_grad))", vmapped), ("jit(vjp with ones)", vjp)):
        def call(w0, x0, w1, x1, w2, fn=fn):
            return jax.block_until_ready(fn(w0, x0, w1, x1, w2))

        with Clock() as c:
            v, g = call(*args)
        yield {"variant": f"{label}, 5 f64[N], x64", "group": "batch", "first_call_s": c.s,
               **per_call(call, args, opts=opts), **ok(np.asarray(v), [np.asarray(t) for t in g]),
               **info}
        info = {**info, "import_s": None}


def peer_pytensor(spec, opts, pts, ok):
    with Clock() as c:
        import pytensor
        import pytensor.tensor as pt
    import_s = c.s
    before = c_modules(pytensor.config.compiledir)
    s = pt.dvectors("w0", "x0", "w1", "x1", "w2")
    y = pt.sigmoid(s[0] * s[1] + s[2] * s[3] + s[4])
    with Clock() as c:
        fn = pytensor.function(s, [y, *pytensor.grad(y.sum(), s)], mode="CVM", trust_input=True)
        v, *g = fn(*pts)
    yield {"variant": "C backend (CVM), grad of sum, 5 dvectors, trust_input",
           "group": "batch", "first_call_s": c.s, "import_s": import_s,
           **per_call(fn, tuple(pts), opts=opts), **ok(v, g),
           **pytensor_cache(pytensor.config.compiledir, before),
           "peer_version": pytensor.__version__}


def peer_symgrad(spec, opts, pts, ok):
    cache_dir = spec["cache_dir"]
    files_before = numba_cache_files(cache_dir)
    with Clock() as c:
        import sympy as sp
    sympy_import_s = c.s
    with Clock() as c:
        import symgrad as sg
    import_s = c.s
    with Clock() as c:
        w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
        expr = sg.sigmoid(w0 * x0 + w1 * x1 + w2)
    build_s = c.s
    for fast in (True, False):
        yield from _symgrad_rows(sg, expr, (w0, x0, w1, x1, w2), fast, spec, opts, pts, ok,
                                 files_before, import_s, sympy_import_s, build_s)


def _symgrad_rows(sg, expr, syms, fast, spec, opts, pts, ok, files_before, import_s,
                  sympy_import_s, build_s):
    tag = f"fast_math={fast}"
    with Clock() as c:
        f = sg.compile(expr, wrt=list(syms), cache_dir=spec["cache_dir"], fast_math=fast)
    compile_total_s = c.s
    with Clock() as c:
        v, g = f.value_and_grad_batch(*pts)
    timings = dict(getattr(f, "timings", {}) or {})
    same = {"cache_warm": files_before > 0, "peer_version": sg.__version__}
    yield {"variant": f"value_and_grad_batch (5 arrays in, (N,), (5, N) out), {tag}",
           "group": "batch", "baseline": fast, "first_call_s": compile_total_s + c.s,
           "first_call_only_s": c.s, "sg_compile_s": compile_total_s, "import_s": import_s,
           "sympy_import_s": sympy_import_s, "build_s": build_s,
           **{k: timings.get(k) for k in ("codegen_s", "compile_s", "load_s", "cache_hit")},
           **per_call(f.value_and_grad_batch, tuple(pts), opts=opts), **ok(v, g), **same}
    bufs = (np.empty(N), np.empty((5, N)))
    f.value_and_grad_batch(*pts, out=bufs)
    yield {"variant": f"value_and_grad_batch(..., out=preallocated), {tag}", "group": "batch",
           **per_call(lambda *a: f.value_and_grad_batch(*a, out=bufs), tuple(pts), opts=opts),
           **ok(*bufs), **same}
    # the compiled loop alone (internal API: preallocated outputs), to separate the
    # wrapper's argument handling and NaN check from the kernel
    kernel = f.module.value_and_grad_batch
    cols = tuple(np.ascontiguousarray(p) for p in pts)
    value, grad = np.empty(N), np.empty((5, N))
    kernel(cols, value, grad)
    yield {"variant": f"module.value_and_grad_batch (internal, preallocated), {tag}",
           "group": "batch", **per_call(kernel, (cols, value, grad), opts=opts),
           **ok(value, grad), **same}
