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

Group "fit-call", the time a user waits: symgrad's model, fitted once, then FIT_CALLS calls
``fit(data, epochs=FIT_EPOCHS, batch_size=128, shuffle=False, drop_last=True)`` timed from the
call to its return, best call / (FIT_EPOCHS * 468), with ``model.prepare(data)`` (the way to fit
repeatedly; the baseline) and with the plain dict, which checks and lays out the 188 MB again on
every call; the notes give the compiled epochs alone (``History.time``) of the same calls.
The reference is JAX's ``jit(lax.scan)`` over the epoch, each call timed to
``block_until_ready``, best of its repeats.

Checks, against the NumPy float32 peer (scale = the largest |parameter| of the reference,
about 0.5): the final parameters within 1e-4 x scale, float32 parameters, all 468 steps run;
and, as a diagnostic that also has to pass, the parameters after the first 10 steps (a separate
short run) within 1e-4 x scale. Float32 peers that follow torch's formula agree to ~3e-6 x
scale (NumPy's float32 run and its float64 twin to 8e-7 x scale). The workload is sensitive
to small *systematic* differences, though: Adam's normalised steps are about lr whatever the
gradient's size, so once a ReLU flips for one (sample, unit) pair the whole unit's column
moves apart. Computing the bias correction 1 - 0.999^t in float32 (1.3e-5 off at t = 1), or
1 - float32(0.999) instead of float32(1 - 0.999), flipped ReLUs within 2 steps and left the
final parameters ~2e-2 x scale apart; the peers here therefore take Adam's step size and
sqrt(1 - beta2^t) from a schedule computed in float64 (``adam_schedule``), as torch does.
Measured with NumPy variants, a wrong batch order, a bias correction one step off, lr + 1 %
or eps 1e-7 move the parameters after 10 steps by 4e-3 to 3e-2 x scale.
The NumPy peer runs first and leaves its results in the run's shared directory; a run
without it computes them here.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    PEER_MODULES,
    Clock,
    Options,
    engines,
    jax_cache,
    step_stats,
    timed_steps,
)

PEERS = PEER_MODULES
SAMPLES, D, H, K = 60_000, 784, 128, 10
BATCH = 128
STEPS = SAMPLES // BATCH  # 468: the last partial batch is dropped
QUICK_STEPS = 100  # steps of the timed (second) run with --quick
FIT_EPOCHS, FIT_CALLS = 3, 5  # group "fit-call": epochs per fit call, calls (best of)
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8
EARLY = 10  # steps of the short run whose parameters are held to EARLY_RTOL
EARLY_RTOL = 1e-4  # max abs diff / max |reference parameter| after EARLY steps
FINAL_RTOL = 1e-4  # the same after all STEPS
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


def adam_schedule(steps: int = STEPS) -> np.ndarray:
    """(steps, 2) float32: Adam's step size lr / (1 - beta1^t) and sqrt(1 - beta2^t) for
    t = 1..steps, computed in float64 as torch does (in float32, 1 - 0.999^1 is 1.3e-5 off,
    which is enough to flip a ReLU and move the parameters by ~1e-4 x scale in 10 steps)."""
    t = np.arange(1, steps + 1, dtype=np.float64)
    return np.stack([LR / (1.0 - BETA1 ** t), np.sqrt(1.0 - BETA2 ** t)], axis=1).astype(
        np.float32)


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


def numpy_reference(X, labels, Y) -> dict:
    """NumPy's parameters after EARLY and after STEPS steps, and the per-step losses."""
    reset, step, params = numpy_stepper(X, labels, Y)
    reset()
    losses = [step() for _ in range(EARLY)]
    early = params()
    losses += [step() for _ in range(STEPS - EARLY)]
    return {"final": params(), "early": early, "losses": np.array(losses)}


def reference(spec: dict, X, labels, Y) -> dict:
    """The NumPy peer's results from the shared directory, or computed here."""
    path = Path(spec["shared_dir"]) / REF_FILE if spec.get("shared_dir") else None
    if path is not None and path.exists():
        with np.load(path) as f:
            return {"final": [f[name] for name in NAMES],
                    "early": [f[f"early_{name}"] for name in NAMES], "losses": f["losses"],
                    "note": "numpy peer's run"}
    return {**numpy_reference(X, labels, Y), "note": "computed in this process"}


# -- harness --------------------------------------------------------------------------

def _diff(params, ref: list[np.ndarray]) -> tuple[float, float, list[str], bool]:
    """(max abs diff, scale = max |ref|, dtypes, all finite)."""
    got = [np.asarray(a).reshape(s) for a, s in zip(params, SHAPES)]
    scale = max(float(np.max(np.abs(r))) for r in ref)
    diff = max(float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64))))
               for g, r in zip(got, ref))
    finite = all(bool(np.all(np.isfinite(g))) for g in got)
    return diff, scale, sorted({str(g.dtype) for g in got}), finite


def check_params(params, early, ref: dict, losses=None) -> dict:
    """Final parameters (and the parameters after EARLY steps) against the reference."""
    diff, scale, dtypes, finite = _diff(params, ref["final"])
    early_diff, early_scale, early_dtypes, early_finite = _diff(early, ref["early"])
    tol = FINAL_RTOL * scale
    early_ok = early_finite and early_diff <= EARLY_RTOL * early_scale
    ok = finite and diff <= tol and early_ok and dtypes == early_dtypes == ["float32"]
    note = (f"after {EARLY} steps {early_diff / early_scale:.1e} x scale, final "
            f"{diff / scale:.1e} x scale")
    if dtypes != ["float32"] or early_dtypes != ["float32"]:
        note += f"; parameters are {'/'.join(dtypes)}, not float32"
    out = {"max_abs_diff": diff, "tol": tol, "param_scale": scale, "rel_diff": diff / scale,
           "rtol": FINAL_RTOL, "early_diff": early_diff,
           "early_rel_diff": early_diff / early_scale, "early_rtol": EARLY_RTOL,
           "check": bool(ok), "reference": ref["note"], "check_note": note,
           "param_dtypes": dtypes}
    if losses is not None and len(losses):
        losses = np.asarray([float(v) for v in losses])
        out.update(last_loss=float(losses[-1]), mean_loss=float(np.mean(losses)),
                   steps_run=len(losses))
        if len(losses) == STEPS:
            out["loss_curve_diff"] = float(np.max(np.abs(losses - ref["losses"])))
        else:
            out["check"] = False
            out["check_note"] += f"; {len(losses)} steps ran, not {STEPS}"
    return out


def step_rows(setup_s, reset, step, params, ref, opts: Options) -> dict:
    """Per-step peers: the first run (checked; first call = setup + step 1), the timed run
    (steady = median step), then the check's short run of EARLY steps."""
    times, losses = timed_steps(reset, step, STEPS)
    final = params()
    times2, _ = timed_steps(reset, step, QUICK_STEPS if opts.quick else STEPS)
    timed_steps(reset, step, EARLY)
    return {"first_call_s": setup_s + times[0], "total_s": setup_s + sum(times),
            **check_params(final, params(), ref, losses), **step_stats(times2)}


def epoch_rows(compile_s, fit, ref, opts: Options) -> dict:
    """Whole-epoch peers: ``fit(steps)`` runs that many steps from the initial parameters
    and returns (losses, params). First call = compile + the first epoch; steady = median
    epoch time / STEPS; then the check's short run ``fit(EARLY)``."""
    with Clock() as c:
        losses, params = fit(STEPS)
    first = compile_s + c.s
    repeats = 3 if opts.quick else 5
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fit(STEPS)
            times.append((time.perf_counter() - t0) / STEPS)
    finally:
        gc.enable()
    out = {"first_call_s": first, "total_s": first, "compile_s": compile_s,
           **check_params(params, fit(EARLY)[1], ref, losses)}
    out["check_note"] += f"; first call = compile + all {STEPS} steps"
    return {**out, **step_stats(times), "steps_timed": repeats * STEPS}


def run(spec: dict, opts: Options):
    yield from globals()[f"peer_{spec['peer']}"](spec, opts)


# -- peers ----------------------------------------------------------------------------

def peer_numpy(spec, opts):
    X, labels, Y = data()
    reset, step, params = numpy_stepper(X, labels, Y)
    times, losses = timed_steps(reset, step, STEPS)
    final = params()
    times2, _ = timed_steps(reset, step, QUICK_STEPS if opts.quick else STEPS)
    timed_steps(reset, step, EARLY)
    ref = {"final": final, "early": params(), "losses": np.array(losses), "note": "itself"}
    if spec.get("shared_dir"):
        np.savez(Path(spec["shared_dir"]) / REF_FILE, losses=ref["losses"],
                 **dict(zip(NAMES, final)),
                 **{f"early_{name}": a for name, a in zip(NAMES, ref["early"])})
    out = {"first_call_s": times[0], "total_s": sum(times),
           **check_params(final, ref["early"], ref, losses)}
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
    ref = reference(spec, X, labels, Y)
    # float32 constants rounded from the float64 values, as torch (and NumPy) use them:
    # 1 - float32(0.999) is 1.3e-5 off 0.001, enough to flip a ReLU within 2 steps
    b1c, b2c = np.float32(BETA1), np.float32(BETA2)
    c1, c2 = np.float32(1.0 - BETA1), np.float32(1.0 - BETA2)
    schedule = adam_schedule()
    one = np.float32(1.0)
    eps = np.float32(EPS)

    @njit(error_model="numpy")
    def adam(p, g, m, v, step_size, bc2_sqrt):
        p, g, m, v = p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1)
        for i in range(p.shape[0]):
            gi = g[i]
            m[i] = b1c * m[i] + c1 * gi
            v[i] = b2c * v[i] + c2 * gi * gi
            p[i] -= step_size * m[i] / (np.sqrt(v[i]) / bc2_sqrt + eps)

    @njit(error_model="numpy")
    def fit_epoch(X, labels, W1, b1, W2, b2, state, schedule, losses):
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
            for q in range(4):
                adam(params[q], grads[q], m_[q], v_[q], schedule[s, 0], schedule[s, 1])

    def fit(steps):
        p = init()
        state = ([np.zeros_like(a) for a in p], [np.zeros_like(a) for a in p])
        losses = np.empty(steps, np.float32)
        fit_epoch(X, labels, *p, _typed(state), schedule, losses)
        return losses, p

    def _typed(state):
        return tuple(tuple(lst) for lst in state)

    with Clock() as c:  # compile: a call that runs 0 steps
        p = init()
        fit_epoch(X, labels, *p, _typed(([np.zeros_like(a) for a in p],) * 2), schedule,
                  np.empty(0, np.float32))
    yield {"variant": "njit whole epoch, BLAS np.dot into buffers, fused loops",
           "group": "step", "import_s": import_s, **epoch_rows(c.s, fit, ref, opts),
           "threads": numba.get_num_threads(), "cache_warm": None,
           "peer_version": numba.__version__}


def peer_torch(spec, opts):
    with Clock() as c:
        import torch
    import_s = c.s
    torch.set_num_threads(2)
    X, labels, Y = data()
    ref = reference(spec, X, labels, Y)
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
                       ref, opts),
           "threads": torch.get_num_threads(), "peer_version": torch.__version__}


def peer_jax(spec, opts):
    with Clock() as c:
        import jax
        import jax.numpy as jnp
    import_s = c.s
    X, labels, Y = data()
    ref = reference(spec, X, labels, Y)
    used = STEPS * BATCH
    Xr = jax.device_put(X[:used].reshape(STEPS, BATCH, D))
    Yr = jax.device_put(Y[:used].reshape(STEPS, BATCH, K))
    tmap = jax.tree_util.tree_map

    def loss_fn(p, Xb, Yb):
        W1, b1, W2, b2 = p
        scores = jax.nn.relu(Xb @ W1 + b1) @ W2 + b2
        return -jnp.mean(jnp.sum(Yb * jax.nn.log_softmax(scores, axis=1), axis=1))

    def adam_step(state, xys):
        p, m, v = state
        Xb, Yb, (step_size, bc2_sqrt) = xys  # bias corrections precomputed in float64
        loss, g = jax.value_and_grad(loss_fn)(p, Xb, Yb)
        m = tmap(lambda m, g: BETA1 * m + (1.0 - BETA1) * g, m, g)
        v = tmap(lambda v, g: BETA2 * v + (1.0 - BETA2) * g * g, v, g)
        p = tmap(lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / bc2_sqrt + EPS), p, m, v)
        return (p, m, v), loss

    p0 = tuple(jnp.asarray(a) for a in init())
    init_state = (p0, tmap(jnp.zeros_like, p0), tmap(jnp.zeros_like, p0))
    Sr = jax.device_put(adam_schedule())
    jstep = jax.jit(adam_step)
    batches = [(Xr[i], Yr[i], Sr[i]) for i in range(STEPS)]  # on the device before timing
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
                       opts), **info}

    @jax.jit
    def fit_all(state, Xr, Yr, Sr):
        return jax.lax.scan(adam_step, state, (Xr, Yr, Sr))

    def fit(steps):  # a new shape (steps = EARLY) compiles once more
        xs = (Xr, Yr, Sr) if steps == STEPS else (Xr[:steps], Yr[:steps], Sr[:steps])
        s, losses = jax.block_until_ready(fit_all(init_state, *xs))
        return np.asarray(losses), [np.asarray(a) for a in s[0]]

    scan = {"variant": f"jit(lax.scan over the epoch, {STEPS} steps)", "group": "step",
            **epoch_rows(0.0, fit, ref, opts), "compile_s": None, **info}
    yield scan
    yield {**scan, "group": "fit-call", "steady_s": scan["steady_min_s"],
           "variant": scan["variant"] + ", each call to its end, best"}


def peer_pytensor(spec, opts):
    # float32 end to end: Python-float constants would otherwise upcast to float64
    os.environ["PYTENSOR_FLAGS"] = ",".join(
        filter(None, [os.environ.get("PYTENSOR_FLAGS"), "floatX=float32"]))
    with Clock() as c:
        import pytensor
        import pytensor.tensor as pt
    import_s = c.s
    X, labels, Y = data()
    ref = reference(spec, X, labels, Y)
    mode = spec["mode"]
    schedule = adam_schedule()
    # base_compiledir holds the C modules (compiledir) and the Numba linker's cache (numba/)
    before = sum(1 for _ in Path(pytensor.config.base_compiledir).rglob("*"))
    with Clock() as c:
        p = [pytensor.shared(a, name) for a, name in zip(init(), NAMES)]
        m = [pytensor.shared(np.zeros_like(a), f"m_{name}") for a, name in zip(init(), NAMES)]
        v = [pytensor.shared(np.zeros_like(a), f"v_{name}") for a, name in zip(init(), NAMES)]
        Xb, Yb = pt.fmatrix("Xb"), pt.fmatrix("Yb")
        step_size, bc2_sqrt = pt.fscalar("step_size"), pt.fscalar("bc2_sqrt")
        W1, b1, W2, b2 = p
        a1 = pt.maximum(pt.dot(Xb, W1) + b1[0], 0.0)
        scores = pt.dot(a1, W2) + b2[0]
        logp = scores - pt.logsumexp(scores, axis=1, keepdims=True)
        loss = -pt.mean(pt.sum(Yb * logp, axis=1))
        grads = pytensor.grad(loss, p)
        updates = []
        for a, g, ma, va in zip(p, grads, m, v):
            m1 = BETA1 * ma + (1.0 - BETA1) * g
            v1 = BETA2 * va + (1.0 - BETA2) * g * g
            updates += [(ma, m1), (va, v1),
                        (a, a - step_size * m1 / (pt.sqrt(v1) / bc2_sqrt + EPS))]
        fn = pytensor.function([Xb, Yb, step_size, bc2_sqrt], loss, updates=updates,
                               mode=mode)
        fn.trust_input = True
    state = {}

    def reset():
        for a, val in zip(p, init()):
            a.set_value(val)
        for a in (*m, *v):
            a.set_value(np.zeros_like(a.get_value()))
        state["i"] = 0

    def step():
        i = state["i"]
        sl = batch(i)
        loss = fn(X[sl], Y[sl], schedule[i, 0], schedule[i, 1])
        state["i"] += 1
        return loss

    new = sum(1 for _ in Path(pytensor.config.base_compiledir).rglob("*")) - before
    label = {"NUMBA": "Numba linker (mode=NUMBA)", "FAST_RUN": "C backend (FAST_RUN, CVM)"}
    yield {"variant": f"{label.get(mode, mode)}, Adam as updates", "group": "step",
           "import_s": import_s,
           **step_rows(c.s, reset, step, lambda: [a.get_value() for a in p], ref, opts),
           "cache_warm": new == 0, "cache_note": f"{new} new files in base_compiledir",
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
    ref = reference(spec, X, labels, Y)
    n = sp.Symbol("n", integer=True, positive=True)
    Xs, Ys = sp.MatrixSymbol("X", n, D), sp.MatrixSymbol("Y", n, K)
    syms = [sp.MatrixSymbol(name, *shape) for name, shape in zip(NAMES, SHAPES)]

    def fit(steps=STEPS, engine=None):
        t0 = time.perf_counter()
        W1, b1, W2, b2 = syms
        scores = sg.relu(Xs * W1 + b1) * W2 + b2
        model = sg.Model(sg.softmax_cross_entropy(scores, Ys), params=dict(zip(syms, init())),
                         data=[Xs, Ys], optimizer=sg.optim.Adam(lr=LR, beta1=BETA1,
                                                                beta2=BETA2, eps=EPS),
                         dtype="float32")
        build_s = time.perf_counter() - t0
        rows = slice(None) if steps == STEPS else slice(0, steps * BATCH)
        gc.collect()
        gc.disable()
        try:
            hist = model.fit({Xs: X[rows], Ys: Y[rows]}, epochs=1, batch_size=BATCH,
                             shuffle=False, drop_last=True, verbose=0, engine=engine)
        finally:
            gc.enable()
        return model, hist, build_s, time.perf_counter() - t0

    def final(model):
        return [model.params[s] for s in syms]

    model, hist, build_s, wall = fit()
    timings = dict(getattr(model, "timings", {}) or {})
    epoch_s = sum(getattr(hist, "time", []) or [])
    from symgrad.train.background import wait_all

    wait_all()  # the background compile a cold first fit started, if any
    early = final(fit(EARLY, "compiled")[0])  # the check's short run
    row = {
        "variant": "Model.fit, Adam, batch 128", "group": "step", "cache_warm": cache_warm,
        # Model(), codegen, load, Numba compile and the whole epoch (one call)
        "first_call_s": wall, "total_s": wall, "first_fit_s": wall, "epoch_s": epoch_s or None,
        "engines": engines(hist),
        "import_s": import_s, "sympy_import_s": sympy_import_s, "build_s": build_s,
        **{k: timings.get(k) for k in ("codegen_s", "load_s", "compile_s", "cache_hit")},
        "stop_reason": getattr(hist, "stop_reason", None), "epoch_loss": list(hist.loss),
        **check_params(final(model), early, ref), "peer_version": sg.__version__,
    }
    row["check_note"] += "; first call = Model() + compile + the whole epoch"
    if spec["phase"] != "cold":
        yield row
        return
    # steady: fits of fresh Models (module already loaded); the epoch's time / 468
    times = []
    for _ in range(1 if opts.quick else 3):
        model2, hist2, _, wall2 = fit(engine="compiled")
        times.append((sum(getattr(hist2, "time", []) or []) or wall2) / STEPS)
    second = check_params(final(model2), early, ref)
    if second["max_abs_diff"] > row["max_abs_diff"] or not second["check"]:
        row.update({k: second[k] for k in ("max_abs_diff", "rel_diff", "check")})
        row["check_note"] = second["check_note"] + " (second fit)"
    yield {**row, **step_stats(times), "steps_timed": len(times) * STEPS, "baseline": True,
           "second_fit_s": wall2}
    yield from fit_calls(model2, {Xs: X, Ys: Y}, cache_warm, opts)


def fit_calls(model, data, cache_warm, opts):
    """Group "fit-call": repeated fit calls on a model fitted once, timed as the user waits
    (best call / step), with prepared data (baseline) and with the plain dict."""
    with Clock() as c:
        prepared = model.prepare(data)
    for variant, given in (("Model.fit(model.prepare(data))", prepared),
                           ("Model.fit({X: X, Y: Y})", data)):
        walls, epochs = [], []
        for _ in range(2 if opts.quick else FIT_CALLS):
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                hist = model.fit(given, epochs=FIT_EPOCHS, batch_size=BATCH, shuffle=False,
                                 drop_last=True, verbose=0)
                walls.append((time.perf_counter() - t0) / (FIT_EPOCHS * STEPS))
            finally:
                gc.enable()
            epochs.append(sum(hist.time) / (FIT_EPOCHS * STEPS))
        note = (f"{FIT_EPOCHS} epochs per call, best of {len(walls)} calls (median "
                f"{statistics.median(walls) * 1e6:.0f} µs); compiled epochs alone (History.time) "
                f"{min(epochs) * 1e6:.0f} µs/step")
        if given is prepared:
            note += f"; model.prepare(data) {c.s:.2f} s once, not in the calls"
        yield {"variant": variant, "group": "fit-call", "cache_warm": cache_warm,
               "baseline": given is prepared, **step_stats(walls), "steady_s": min(walls),
               "steps_timed": len(walls) * FIT_EPOCHS * STEPS,
               "epoch_only_s": min(epochs), "prepare_s": c.s if given is prepared else None,
               "check_note": note + "; timing only (the step rows check the numbers)"}
