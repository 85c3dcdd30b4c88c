"""W3 MNIST-shaped MLP: one epoch of minibatch Adam, float32 end to end.

Data: 60,000 synthetic samples from numpy default_rng(0): first X = rng.random((60000, 784),
dtype=float32) (uniform [0, 1)), then labels rng.integers(0, 10, 60000); one-hot targets Y
(float32) for the peers that take them. Model: 784 -> 128 ReLU -> 10, softmax cross-entropy
(mean over the batch). Init: He-normal from default_rng(1), W1 = N(0, 1) * sqrt(2/784) (784,
128) drawn first, then W2 = N(0, 1) * sqrt(2/128) (128, 10), both drawn in float64 and cast
to float32; zero biases b1 (1, 128), b2 (1, 10). Adam (lr 1e-3, betas 0.9 and 0.999, eps 1e-8,
torch.optim.Adam's formula), batch 128 in the data's order, the last partial batch dropped:
468 steps.

Per-step peers (NumPy, torch, JAX jit step, PyTensor) run the 468 steps twice in their
process, each step timed alone (garbage collector off): the first run gives the first call
(building/tracing/compiling + step 1) and the checked parameters, the second (100 steps with
--quick) the steady time per step (median). Whole-epoch peers (JAX jit(lax.scan), Numba njit
epoch) run the 468 steps in one call: first call = compile + the first epoch, steady = median
epoch time / 468. symgrad as in W4 (cold: two fits, the second one of a fresh Model gives the
steady time per step; warm: a new process on the same cache dir).

Check: every final parameter against the NumPy float32 peer's, max abs diff <= 1e-4 x the
largest |parameter| of the reference (about 5e-5; float32 peers agree to ~4e-7 and NumPy's
float32 run differs from the same run in float64 by ~4e-7). The NumPy peer runs first and
leaves its parameters in the run's shared directory; a run without it computes them here.
"""

from __future__ import annotations

import gc
import math
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import PEER_MODULES, Clock, Options, jax_cache, step_stats, timed_steps

PEERS = PEER_MODULES
SAMPLES, D, H, K = 60_000, 784, 128, 10
BATCH = 128
STEPS = SAMPLES // BATCH  # 468: the last partial batch is dropped
QUICK_STEPS = 100  # steps of the timed (second) run with --quick
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8
RTOL = 1e-4  # max abs diff / max |reference parameter|
REF_FILE = "w3-numpy-reference.npz"
NAMES = ("W1", "b1", "W2", "b2")
SHAPES = ((D, H), (1, H), (H, K), (1, K))


def runs(peers: list[str], quick: bool) -> list[dict]:
    """The NumPy reference first (its parameters are shared), then the others."""
    out = []
    for peer in sorted(peers, key=lambda p: p != "numpy"):
        spec = {"peer": peer, "shared": "w3"}
        if peer == "symgrad":
            out += [{**spec, "phase": phase, "cache": "w3"} for phase in ("cold", "warm")]
        elif peer == "pytensor":
            out += [{**spec, "mode": "NUMBA"}, {**spec, "mode": "FAST_RUN"}]
        else:
            out.append(spec)
    return out


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (60000, 784) float32, labels (60000,) int64, one-hot Y (60000, 10) float32."""
    rng = np.random.default_rng(0)
    X = rng.random((SAMPLES, D), dtype=np.float32)
    labels = rng.integers(0, K, SAMPLES)
    return X, labels, np.eye(K, dtype=np.float32)[labels]


def init() -> list[np.ndarray]:
    """[W1, b1, W2, b2] float32, fresh arrays (He-normal, zero biases)."""
    rng = np.random.default_rng(1)
    W1 = (rng.standard_normal((D, H)) * math.sqrt(2.0 / D)).astype(np.float32)
    W2 = (rng.standard_normal((H, K)) * math.sqrt(2.0 / H)).astype(np.float32)
    return [W1, np.zeros((1, H), np.float32), W2, np.zeros((1, K), np.float32)]


def batch(i: int) -> slice:
    return slice(i * BATCH, (i + 1) * BATCH)


# -- the reference: NumPy by hand ---------------------------------------------------------

class NumpyAdam:
    """torch.optim.Adam's update (single-tensor form) on float32 arrays, in place."""

    def __init__(self, params: list[np.ndarray]) -> None:
        self.p = params
        self.m = [np.zeros_like(a) for a in params]
        self.v = [np.zeros_like(a) for a in params]
        self.t = 0

    def update(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        step_size = LR / (1.0 - BETA1 ** self.t)
        bc2_sqrt = math.sqrt(1.0 - BETA2 ** self.t)
        for p, g, m, v in zip(self.p, grads, self.m, self.v):
            m *= BETA1
            m += (1.0 - BETA1) * g
            v *= BETA2
            v += (1.0 - BETA2) * g * g
            p -= step_size * m / (np.sqrt(v) / bc2_sqrt + EPS)


def numpy_grads(p, Xb, yb, Yb, rows):
    """Loss and [dW1, db1, dW2, db2] of the mean cross-entropy over one batch (float32)."""
    W1, b1, W2, b2 = p
    z1 = Xb @ W1 + b1
    a1 = np.maximum(z1, 0.0)
    scores = a1 @ W2 + b2
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(probs[rows, yb]))
    delta3 = (probs - Yb) / np.float32(Xb.shape[0])
    dW2 = a1.T @ delta3
    db2 = delta3.sum(axis=0, keepdims=True)
    delta2 = (delta3 @ W2.T) * (z1 > 0.0)
    dW1 = Xb.T @ delta2
    db1 = delta2.sum(axis=0, keepdims=True)
    return loss, [dW1, db1, dW2, db2]


def numpy_stepper(X, labels, Y, dtype=np.float32):
    state, rows = {}, np.arange(BATCH)
    if dtype != np.float32:
        X, Y = X.astype(dtype), Y.astype(dtype)

    def reset():
        state.update(opt=NumpyAdam([a.astype(dtype) for a in init()]), i=0)

    def step():
        i, opt = state["i"], state["opt"]
        sl = batch(i)
        loss, grads = numpy_grads(opt.p, X[sl], labels[sl], Y[sl], rows)
        opt.update(grads)
        state["i"] = i + 1
        return loss

    return reset, step, lambda: [a.copy() for a in state["opt"].p]


def reference(spec: dict, X, labels, Y) -> tuple[list[np.ndarray], str]:
    """The NumPy peer's final parameters from the shared directory, or computed here."""
    path = Path(spec["shared_dir"]) / REF_FILE if spec.get("shared_dir") else None
    if path is not None and path.exists():
        with np.load(path) as f:
            return [f[name] for name in NAMES], "numpy peer's run"
    reset, step, params = numpy_stepper(X, labels, Y)
    reset()
    for _ in range(STEPS):
        step()
    return params(), "computed in this process"


# -- harness --------------------------------------------------------------------------

def check_params(params, ref: list[np.ndarray], ref_note: str, losses=None) -> dict:
    got = [np.asarray(a).reshape(s) for a, s in zip(params, SHAPES)]
    scale = max(float(np.max(np.abs(r))) for r in ref)
    tol = RTOL * scale
    diffs = [float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64))))
             for g, r in zip(got, ref)]
    diff = max(diffs)
    finite = all(bool(np.all(np.isfinite(g))) for g in got)
    dtypes = sorted({str(g.dtype) for g in got})
    ok = finite and diff <= tol and dtypes == ["float32"]
    note = f"param diff / scale {diff / scale:.1e} (W1 {diffs[0]:.1e}, W2 {diffs[2]:.1e})"
    if dtypes != ["float32"]:
        note += f"; parameters are {'/'.join(dtypes)}, not float32"
    out = {"max_abs_diff": diff, "tol": tol, "param_scale": scale, "rel_diff": diff / scale,
           "rtol": RTOL, "check": bool(ok), "reference": ref_note, "check_note": note,
           "param_dtypes": dtypes}
    if losses is not None and len(losses):
        out["last_loss"] = float(losses[-1])
        out["steps_run"] = len(losses)
        if len(losses) != STEPS:
            out["check"] = False
            out["check_note"] += f"; {len(losses)} steps ran, not {STEPS}"
    return out


def step_rows(setup_s, reset, step, params, ref, ref_note, opts: Options) -> dict:
    """Per-step peers: first run (checked; first call = setup + step 1), then the timed run."""
    times, losses = timed_steps(reset, step, STEPS)
    out = {"first_call_s": setup_s + times[0], "total_s": setup_s + sum(times),
           **check_params(params(), ref, ref_note, losses)}
    times2, _ = timed_steps(reset, step, QUICK_STEPS if opts.quick else STEPS)
    return {**out, **step_stats(times2)}


def epoch_rows(compile_s, fit, ref, ref_note, opts: Options) -> dict:
    """Whole-epoch peers: ``fit()`` runs the 468 steps from the initial parameters and
    returns (losses, params). First call = compile + first epoch; steady = epoch / 468."""
    with Clock() as c:
        losses, params = fit()
    first = compile_s + c.s
    out = {"first_call_s": first, "total_s": first, "compile_s": compile_s,
           **check_params(params, ref, ref_note, losses)}
    out["check_note"] += f"; first call = compile + all {STEPS} steps"
    repeats = 3 if opts.quick else 5
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fit()
            times.append((time.perf_counter() - t0) / STEPS)
    finally:
        gc.enable()
    return {**out, **step_stats(times), "steps_timed": repeats * STEPS}


def run(spec: dict, opts: Options):
    yield from globals()[f"peer_{spec['peer']}"](spec, opts)


# -- peers ----------------------------------------------------------------------------

def peer_numpy(spec, opts):
    X, labels, Y = data()
    reset, step, params = numpy_stepper(X, labels, Y)
    times, losses = timed_steps(reset, step, STEPS)
    final = params()
    if spec.get("shared_dir"):
        np.savez(Path(spec["shared_dir"]) / REF_FILE, **dict(zip(NAMES, final)))
    out = {"first_call_s": times[0], "total_s": sum(times),
           **check_params(final, final, "itself", losses)}
    times2, _ = timed_steps(reset, step, QUICK_STEPS if opts.quick else STEPS)
    # the same run in float64: how far float32 rounding alone moves the parameters
    reset64, step64, params64 = numpy_stepper(X, labels, Y, np.float64)
    reset64()
    for _ in range(STEPS):
        step64()
    f64 = max(float(np.max(np.abs(a - b))) for a, b in zip(final, params64()))
    out["float64_diff"] = f64
    out["check_note"] += f"; float64 run differs by {f64:.1e}"
    yield {"variant": "by hand + Adam, per step (reference)", "group": "step", **out,
           **step_stats(times2), "peer_version": np.__version__}


def peer_numba(spec, opts):
    with Clock() as c:
        import numba
        from numba import njit
    import_s = c.s
    X, labels, Y = data()
    ref, ref_note = reference(spec, X, labels, Y)
    b1c, b2c = np.float32(BETA1), np.float32(BETA2)
    one = np.float32(1.0)
    eps = np.float32(EPS)

    @njit(error_model="numpy")
    def adam(p, g, m, v, step_size, bc2_sqrt):
        p, g, m, v = p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1)
        for i in range(p.shape[0]):
            gi = g[i]
            m[i] = b1c * m[i] + (one - b1c) * gi
            v[i] = b2c * v[i] + (one - b2c) * gi * gi
            p[i] -= step_size * m[i] / (np.sqrt(v[i]) / bc2_sqrt + eps)

    @njit(error_model="numpy")
    def fit_epoch(X, labels, W1, b1, W2, b2, state, losses):
        """All steps: np.dot (BLAS sgemm) into preallocated buffers, fused loops between."""
        B, h, k = BATCH, W1.shape[1], W2.shape[1]
        params = (W1, b1, W2, b2)
        grads = (np.empty_like(W1), np.empty_like(b1), np.empty_like(W2), np.empty_like(b2))
        z1 = np.empty((B, h), np.float32)
        a1 = np.empty((B, h), np.float32)
        sc = np.empty((B, k), np.float32)
        d3 = np.empty((B, k), np.float32)
        da1 = np.empty((B, h), np.float32)
        inv_b = np.float32(1.0 / B)
        for s in range(losses.shape[0]):
            Xb = X[s * B:(s + 1) * B]
            np.dot(Xb, W1, z1)
            for i in range(B):
                for j in range(h):
                    z = z1[i, j] + b1[0, j]
                    z1[i, j] = z
                    a1[i, j] = z if z > 0 else np.float32(0.0)
            np.dot(a1, W2, sc)
            loss = np.float32(0.0)
            for i in range(B):
                m = sc[i, 0] + b2[0, 0]
                for c in range(k):
                    sc[i, c] += b2[0, c]
                    m = max(m, sc[i, c])
                z = np.float32(0.0)
                for c in range(k):
                    e = np.exp(sc[i, c] - m)
                    d3[i, c] = e
                    z += e
                yi = labels[s * B + i]
                loss += np.log(z) - (sc[i, yi] - m)
                for c in range(k):
                    d3[i, c] = (d3[i, c] / z - (one if c == yi else np.float32(0.0))) * inv_b
            losses[s] = loss * inv_b
            np.dot(a1.T, d3, grads[2])
            np.dot(d3, W2.T, da1)
            gb1, gb2 = grads[1], grads[3]
            gb1[:] = 0.0
            gb2[:] = 0.0
            for i in range(B):
                for c in range(k):
                    gb2[0, c] += d3[i, c]
                for j in range(h):
                    if z1[i, j] <= 0:
                        da1[i, j] = 0.0
                    gb1[0, j] += da1[i, j]
            np.dot(Xb.T, da1, grads[0])
            m_, v_ = state
            t = s + 1
            step_size = np.float32(LR / (1.0 - BETA1 ** t))
            bc2_sqrt = np.float32(math.sqrt(1.0 - BETA2 ** t))
            for q in range(4):
                adam(params[q], grads[q], m_[q], v_[q], step_size, bc2_sqrt)

    def fit():
        p = init()
        state = ([np.zeros_like(a) for a in p], [np.zeros_like(a) for a in p])
        losses = np.empty(STEPS, np.float32)
        fit_epoch(X, labels, *p, _typed(state), losses)
        return losses, p

    def _typed(state):
        return tuple(tuple(lst) for lst in state)

    with Clock() as c:  # compile: a call that runs 0 steps
        p = init()
        fit_epoch(X, labels, *p, _typed(([np.zeros_like(a) for a in p],) * 2),
                  np.empty(0, np.float32))
    yield {"variant": "njit whole epoch, BLAS np.dot into buffers, fused loops",
           "group": "step", "import_s": import_s, **epoch_rows(c.s, fit, ref, ref_note, opts),
           "threads": numba.get_num_threads(), "cache_warm": None,
           "peer_version": numba.__version__}


def peer_torch(spec, opts):
    with Clock() as c:
        import torch
    import_s = c.s
    torch.set_num_threads(2)
    X, labels, Y = data()
    ref, ref_note = reference(spec, X, labels, Y)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(labels)
    F = torch.nn.functional
    state = {}

    def reset():
        p = [torch.tensor(a, requires_grad=True) for a in init()]
        state.update(p=p, i=0, opt=torch.optim.Adam(p, lr=LR, betas=(BETA1, BETA2), eps=EPS,
                                                    fused=True))

    def step():
        i, opt = state["i"], state["opt"]
        W1, b1, W2, b2 = state["p"]
        opt.zero_grad(set_to_none=True)
        sl = batch(i)
        loss = F.cross_entropy(torch.relu(Xt[sl] @ W1 + b1) @ W2 + b2, yt[sl])
        loss.backward()
        opt.step()
        state["i"] = i + 1
        return loss.detach()

    yield {"variant": "eager, backward + Adam(fused=True)", "group": "step",
           "import_s": import_s,
           **step_rows(0.0, reset, step, lambda: [t.detach().numpy().copy() for t in state["p"]],
                       ref, ref_note, opts),
           "threads": torch.get_num_threads(), "peer_version": torch.__version__}


def peer_jax(spec, opts):
    with Clock() as c:
        import jax
        import jax.numpy as jnp
    import_s = c.s
    X, labels, Y = data()
    ref, ref_note = reference(spec, X, labels, Y)
    used = STEPS * BATCH
    Xr = jax.device_put(X[:used].reshape(STEPS, BATCH, D))
    Yr = jax.device_put(Y[:used].reshape(STEPS, BATCH, K))
    tmap = jax.tree_util.tree_map

    def loss_fn(p, Xb, Yb):
        W1, b1, W2, b2 = p
        scores = jax.nn.relu(Xb @ W1 + b1) @ W2 + b2
        return -jnp.mean(jnp.sum(Yb * jax.nn.log_softmax(scores, axis=1), axis=1))

    def adam_step(state, xy):
        p, m, v, t = state
        loss, g = jax.value_and_grad(loss_fn)(p, *xy)
        t = t + 1.0
        m = tmap(lambda m, g: BETA1 * m + (1.0 - BETA1) * g, m, g)
        v = tmap(lambda v, g: BETA2 * v + (1.0 - BETA2) * g * g, v, g)
        step_size = LR / (1.0 - BETA1 ** t)
        bc2_sqrt = jnp.sqrt(1.0 - BETA2 ** t)
        p = tmap(lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / bc2_sqrt + EPS), p, m, v)
        return (p, m, v, t), loss

    p0 = tuple(jnp.asarray(a) for a in init())
    init_state = (p0, tmap(jnp.zeros_like, p0), tmap(jnp.zeros_like, p0), jnp.float32(0.0))
    jstep = jax.jit(adam_step)
    batches = [(Xr[i], Yr[i]) for i in range(STEPS)]  # on the device before timing
    jax.block_until_ready(batches)
    state = {}

    def reset():
        state.update(s=init_state, i=0)

    def step():
        s, loss = jstep(state["s"], batches[state["i"]])
        state["s"] = jax.block_until_ready(s)
        state["i"] += 1
        return loss

    info = {"import_s": import_s, **jax_cache(jax), "peer_version": jax.__version__}
    yield {"variant": "jit(value_and_grad + Adam) step, batches on device", "group": "step",
           **step_rows(0.0, reset, step, lambda: [np.asarray(a) for a in state["s"][0]], ref,
                       ref_note, opts), **info}

    @jax.jit
    def fit_all(state, Xr, Yr):
        return jax.lax.scan(adam_step, state, (Xr, Yr))

    def fit():
        s, losses = jax.block_until_ready(fit_all(init_state, Xr, Yr))
        return np.asarray(losses), [np.asarray(a) for a in s[0]]

    yield {"variant": f"jit(lax.scan over the epoch, {STEPS} steps)", "group": "step",
           **epoch_rows(0.0, fit, ref, ref_note, opts), "compile_s": None, **info}


def peer_pytensor(spec, opts):
    # float32 end to end: Python-float constants would otherwise upcast to float64
    os.environ["PYTENSOR_FLAGS"] = ",".join(
        filter(None, [os.environ.get("PYTENSOR_FLAGS"), "floatX=float32"]))
    with Clock() as c:
        import pytensor
        import pytensor.tensor as pt
    import_s = c.s
    X, labels, Y = data()
    ref, ref_note = reference(spec, X, labels, Y)
    mode = spec["mode"]
    before = sum(1 for _ in Path(pytensor.config.compiledir).rglob("*"))
    with Clock() as c:
        p = [pytensor.shared(a, name) for a, name in zip(init(), NAMES)]
        m = [pytensor.shared(np.zeros_like(a), f"m_{name}") for a, name in zip(init(), NAMES)]
        v = [pytensor.shared(np.zeros_like(a), f"v_{name}") for a, name in zip(init(), NAMES)]
        t = pytensor.shared(np.float32(0.0), "t")
        Xb, Yb = pt.fmatrix("Xb"), pt.fmatrix("Yb")
        W1, b1, W2, b2 = p
        a1 = pt.maximum(pt.dot(Xb, W1) + pt.addbroadcast(b1, 0), 0.0)
        scores = pt.dot(a1, W2) + pt.addbroadcast(b2, 0)
        logp = scores - pt.logsumexp(scores, axis=1, keepdims=True)
        loss = -pt.mean(pt.sum(Yb * logp, axis=1))
        grads = pytensor.grad(loss, p)
        t1 = t + 1.0
        step_size = LR / (1.0 - BETA1 ** t1)
        bc2_sqrt = pt.sqrt(1.0 - BETA2 ** t1)
        updates = [(t, t1)]
        for a, g, ma, va in zip(p, grads, m, v):
            m1 = BETA1 * ma + (1.0 - BETA1) * g
            v1 = BETA2 * va + (1.0 - BETA2) * g * g
            updates += [(ma, m1), (va, v1),
                        (a, a - step_size * m1 / (pt.sqrt(v1) / bc2_sqrt + EPS))]
        fn = pytensor.function([Xb, Yb], loss, updates=updates, mode=mode)
        fn.trust_input = True
    state = {}

    def reset():
        for a, val in zip(p, init()):
            a.set_value(val)
        for a in (*m, *v):
            a.set_value(np.zeros_like(a.get_value()))
        t.set_value(np.float32(0.0))
        state["i"] = 0

    def step():
        sl = batch(state["i"])
        loss = fn(X[sl], Y[sl])
        state["i"] += 1
        return loss

    new = sum(1 for _ in Path(pytensor.config.compiledir).rglob("*")) - before
    label = {"NUMBA": "Numba linker (mode=NUMBA)", "FAST_RUN": "C backend (FAST_RUN, CVM)"}
    yield {"variant": f"{label.get(mode, mode)}, Adam as updates", "group": "step",
           "import_s": import_s,
           **step_rows(c.s, reset, step, lambda: [a.get_value() for a in p], ref, ref_note,
                       opts),
           "cache_warm": new == 0, "cache_note": f"{new} new files in compiledir",
           "peer_version": pytensor.__version__}


def peer_symgrad(spec, opts):
    os.environ["SYMGRAD_CACHE_DIR"] = spec["cache_dir"]
    cache_warm = any(Path(spec["cache_dir"]).iterdir())
    with Clock() as c:
        import sympy as sp
    sympy_import_s = c.s
    with Clock() as c:
        import symgrad as sg
    import_s = c.s
    X, labels, Y = data()
    ref, ref_note = reference(spec, X, labels, Y)
    n = sp.Symbol("n", integer=True, positive=True)
    Xs, Ys = sp.MatrixSymbol("X", n, D), sp.MatrixSymbol("Y", n, K)
    syms = [sp.MatrixSymbol(name, *shape) for name, shape in zip(NAMES, SHAPES)]

    def fit():
        t0 = time.perf_counter()
        W1, b1, W2, b2 = syms
        scores = sg.relu(Xs * W1 + b1) * W2 + b2
        model = sg.Model(sg.softmax_cross_entropy(scores, Ys), params=dict(zip(syms, init())),
                         data=[Xs, Ys], optimizer=sg.optim.Adam(lr=LR, beta1=BETA1,
                                                                beta2=BETA2, eps=EPS),
                         dtype="float32")
        build_s = time.perf_counter() - t0
        gc.collect()
        gc.disable()
        try:
            hist = model.fit({Xs: X, Ys: Y}, epochs=1, batch_size=BATCH, shuffle=False,
                             drop_last=True, verbose=0)
        finally:
            gc.enable()
        return model, hist, build_s, time.perf_counter() - t0

    model, hist, build_s, wall = fit()
    timings = dict(getattr(model, "timings", {}) or {})
    epoch_s = sum(getattr(hist, "time", []) or [])
    row = {
        "variant": "Model.fit, Adam, batch 128", "group": "step", "cache_warm": cache_warm,
        # Model(), codegen, load, Numba compile and the whole epoch (one call)
        "first_call_s": wall, "total_s": wall, "first_fit_s": wall, "epoch_s": epoch_s or None,
        "import_s": import_s, "sympy_import_s": sympy_import_s, "build_s": build_s,
        **{k: timings.get(k) for k in ("codegen_s", "load_s", "compile_s", "cache_hit")},
        "stop_reason": getattr(hist, "stop_reason", None),
        **check_params([model.params[s] for s in syms], ref, ref_note),
        "peer_version": sg.__version__,
    }
    row["check_note"] += "; first call = Model() + compile + the whole epoch"
    if spec["phase"] != "cold":
        yield row
        return
    # steady: fits of fresh Models (module already loaded); the epoch's time / 468
    times = []
    for _ in range(1 if opts.quick else 3):
        model2, hist2, _, wall2 = fit()
        times.append((sum(getattr(hist2, "time", []) or []) or wall2) / STEPS)
    second = check_params([model2.params[s] for s in syms], ref, ref_note)
    if second["max_abs_diff"] > row["max_abs_diff"] or not second["check"]:
        row.update({k: second[k] for k in ("max_abs_diff", "rel_diff", "check")})
        row["check_note"] = second["check_note"] + " (second fit)"
    yield {**row, **step_stats(times), "steps_timed": len(times) * STEPS, "baseline": True,
           "second_fit_s": wall2}
