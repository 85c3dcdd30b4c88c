"""W5 expression swell: x_{k+1} = x_k + w_k*sin(x_k), x_0 = 0.5, loss (x_D - 2)**2.

Gradient w.r.t. all D weights w ~ U(0, 0.2) (numpy default_rng(0)), at depth 30 and (not
with --quick) depth 1000. As a tree the loss doubles per level; as a DAG it is linear.
symgrad gets the weights positionally as Python floats (wrt order); the array-based peers
get one f64[D] array. symgrad rows report the time to build the SymPy expression, codegen
and Numba compile time; every row reports first call and steady value+gradient per call.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.common import (
    PEER_MODULES,
    Clock,
    Options,
    c_modules,
    check,
    jax_cache,
    per_call,
    pytensor_cache,
)

PEERS = PEER_MODULES
CASES = {"d30": 30, "d500": 500, "d1000": 1000}
TOL = {"d30": 1e-12, "d500": 1e-10, "d1000": 1e-10}
# At depth 1000 x_D is within a few ulps of pi and every partial is below 3e-15, so the
# absolute check is weak there: also require a relative agreement (sin near pi is
# ill-conditioned, so loose).
RTOL = {"d30": None, "d500": 1e-6, "d1000": 1e-6}
X0 = 0.5
UNROLL_MAX = 100  # JAX and PyTensor unroll the Python loop up to this depth, else scan


def runs(peers: list[str], quick: bool) -> list[dict]:
    out = []
    for case in ["d30"] if quick else ["d30", "d500", "d1000"]:
        for peer in peers:
            spec = {"peer": peer, "case": case}
            if peer == "symgrad":
                spec.update(phase="cold", cache=f"w5-{case}")
            out.append(spec)
    return out


def weights(depth: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.0, 0.2, depth)


def reference(w: np.ndarray):
    """NumPy float64 by hand with loops: the forward chain, then the reverse sweep."""
    depth = len(w)
    x = np.empty(depth + 1)
    x[0] = X0
    for k in range(depth):
        x[k + 1] = x[k] + w[k] * np.sin(x[k])
    loss = (x[depth] - 2.0) ** 2
    grad = np.empty(depth)
    gx = 2.0 * (x[depth] - 2.0)
    for k in range(depth - 1, -1, -1):
        grad[k] = gx * np.sin(x[k])
        gx = gx * (1.0 + w[k] * np.cos(x[k]))
    return loss, grad


def run(spec: dict, opts: Options):
    case = spec["case"]
    w = weights(CASES[case])
    ref = reference(w)

    def ok(value, grad) -> dict:
        return check(value, grad, ref[0], ref[1], TOL[case], RTOL[case])

    if case != "d30":  # slow rows: fewer batches
        opts = Options(repeats=min(opts.repeats, 5), quick=opts.quick)
    yield from globals()[f"peer_{spec['peer']}"](spec, opts, w, ok)


def peer_numpy(spec, opts, w, ok):
    with Clock() as c:
        v, g = reference(w)
    yield {"variant": "by hand, loops over np.float64", "group": "py", "first_call_s": c.s,
           **per_call(reference, (w,), opts=opts), **ok(v, g), "peer_version": np.__version__}


def peer_numba(spec, opts, w, ok):
    with Clock() as c:
        import numba
        from numba import njit
    import_s = c.s

    @njit(error_model="numpy")
    def swell(w):
        depth = w.shape[0]
        x = np.empty(depth + 1)
        x[0] = X0
        for k in range(depth):
            x[k + 1] = x[k] + w[k] * math.sin(x[k])
        grad = np.empty(depth)
        gx = 2.0 * (x[depth] - 2.0)
        for k in range(depth - 1, -1, -1):
            grad[k] = gx * math.sin(x[k])
            gx = gx * (1.0 + w[k] * math.cos(x[k]))
        return (x[depth] - 2.0) ** 2, grad

    with Clock() as c:
        v, g = swell(w)
    yield {"variant": "handwritten njit loops, f64[D], from Python", "group": "py",
           "first_call_s": c.s, "import_s": import_s, **per_call(swell, (w,), opts=opts),
           **ok(v, g), "peer_version": numba.__version__}


def peer_torch(spec, opts, w, ok):
    with Clock() as c:
        import torch
    import_s = c.s
    torch.set_num_threads(2)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor(X0, dtype=torch.float64)

    def step(wt):
        x = x0
        for k in range(wt.shape[0]):
            x = x + wt[k] * torch.sin(x)
        loss = (x - 2.0) ** 2
        return loss, torch.autograd.grad(loss, wt)[0]

    with Clock() as c:
        v, g = step(wt)
    yield {"variant": "eager, autograd.grad, f64[D]", "group": "py", "first_call_s": c.s,
           "import_s": import_s, **per_call(step, (wt,), opts=opts),
           **ok(v.item(), g.numpy()), "threads": torch.get_num_threads(),
           "peer_version": torch.__version__}


def peer_jax(spec, opts, w, ok):
    with Clock() as c:
        import jax
        import jax.numpy as jnp
    import_s = c.s
    jax.config.update("jax_enable_x64", True)
    unrolled = len(w) <= UNROLL_MAX

    def loss(w):
        if unrolled:
            x = jnp.float64(X0)
            for k in range(w.shape[0]):
                x = x + w[k] * jnp.sin(x)
        else:
            x, _ = jax.lax.scan(lambda x, wk: (x + wk * jnp.sin(x), None), jnp.float64(X0), w)
        return (x - 2.0) ** 2

    vg = jax.jit(jax.value_and_grad(loss))
    wj = jnp.asarray(w)

    def call(wj):
        return jax.block_until_ready(vg(wj))

    with Clock() as c:
        v, g = call(wj)
    form = "unrolled loop" if unrolled else "lax.scan"
    yield {"variant": f"jit(value_and_grad), {form}, f64[D], x64", "group": "py",
           "first_call_s": c.s, "import_s": import_s, **per_call(call, (wj,), opts=opts),
           **ok(float(v), np.asarray(g)), **jax_cache(jax), "peer_version": jax.__version__}


def peer_pytensor(spec, opts, w, ok):
    with Clock() as c:
        import pytensor
        import pytensor.tensor as pt
    import_s = c.s
    before = c_modules(pytensor.config.compiledir)
    wv = pt.dvector("w")
    if len(w) <= UNROLL_MAX:
        x = pt.constant(X0, dtype="float64")
        for k in range(len(w)):
            x = x + wv[k] * pt.sin(x)
        form = "unrolled graph"
    else:
        xs = pytensor.scan(lambda wk, x: x + wk * pt.sin(x), sequences=[wv],
                           outputs_info=[pt.constant(X0, dtype="float64")], return_updates=False)
        x = xs[-1]
        form = "scan"
    loss = (x - 2.0) ** 2
    with Clock() as c:
        fn = pytensor.function([wv], [loss, pytensor.grad(loss, wv)], mode="CVM",
                               trust_input=True)
        v, g = fn(w)
    yield {"variant": f"C backend (CVM), {form}, f64[D], trust_input", "group": "py",
           "first_call_s": c.s, "import_s": import_s, **per_call(fn, (w,), opts=opts),
           **ok(v, g), **pytensor_cache(pytensor.config.compiledir, before),
           "peer_version": pytensor.__version__}


def peer_symgrad(spec, opts, w, ok):
    with Clock() as c:
        import sympy as sp
    sympy_import_s = c.s
    with Clock() as c:
        import symgrad as sg
    import_s = c.s
    depth = len(w)
    with Clock() as c:
        ws = sp.symbols(f"w0:{depth}")
        x = sp.Float(X0)
        for k in range(depth):
            x = x + ws[k] * sp.sin(x)
        loss = (x - 2) ** 2
    build_s = c.s
    args = [float(v) for v in w]
    with Clock() as c:
        f = sg.compile(loss, wrt=list(ws), cache_dir=spec["cache_dir"])
    compile_total_s = c.s
    with Clock() as c:
        v, g = f.value_and_grad(*args)
    timings = dict(getattr(f, "timings", {}) or {})
    generated = getattr(f, "generated", None)
    lines = len(generated.forward) + len(generated.backward) if generated else None
    yield {"variant": "value_and_grad (checked), D floats", "group": "py", "baseline": True,
           "first_call_s": compile_total_s + c.s, "first_call_only_s": c.s,
           "sg_compile_s": compile_total_s, "cache_warm": False, "import_s": import_s,
           "sympy_import_s": sympy_import_s, "build_s": build_s, "lines": lines,
           **{k: timings.get(k) for k in ("codegen_s", "compile_s", "load_s", "cache_hit",
                                          "backend")},
           **per_call(f.value_and_grad, args, opts=opts), **ok(v, g),
           "peer_version": sg.__version__}
    v, g = f.kernel(*args)
    yield {"variant": "kernel (raw njit), D floats", "group": "py", "cache_warm": False,
           **per_call(f.kernel, args, opts=opts), **ok(v, g), "peer_version": sg.__version__}
    x_arr = np.asarray(args)
    out = np.empty(depth)
    first = Clock()
    with first:
        v, g = f.value_and_grad_array(x_arr, out=out)
    yield {"variant": "value_and_grad_array (checked), f64[D] in/out", "group": "py",
           "cache_warm": False, "first_call_only_s": first.s,
           **per_call(lambda a: f.value_and_grad_array(a, out=out), (x_arr,), opts=opts),
           **ok(v, g.copy()), "peer_version": sg.__version__}
