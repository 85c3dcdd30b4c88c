"""Full-batch training on chunks of the samples (two cores): which programs split by samples
(symgrad.emit.split), and the chunked loop (symgrad.kernels.split) against independent
references: a NumPy transcription of the loss with its finite differences, a hand-written
backprop loop, and the NumPy tier (the program run by NumPy, not the generated code). The
thread counts against each other: the same bits on 1, 2 and 4 threads.
"""

import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from symgrad.kernels import split as ksplit
from symgrad.kernels.loops import DIVERGED, EARLY_STOPPING
from symgrad.train.arrays import split_chunk, split_chunks, split_work

n = sp.Symbol("n", integer=True, positive=True)

# -- a model of many operations that works sample by sample, on 700 rows (4 chunks) --------

X = sp.MatrixSymbol("X", n, 3)
T = sp.MatrixSymbol("T", n, 2)
W = sp.MatrixSymbol("W", 3, 2)
B = sp.MatrixSymbol("b", 1, 2)
U = sp.MatrixSymbol("U", 2, 2)
Z = X * W + B
LOSS = (sg.mean(sg.elementwise(lambda p, y: (p - y) ** 2, sg.sigmoid(Z), T))
        + sg.sum(sg.log(sg.sum(sg.exp(Z * U), axis=1))) / n
        + sg.mean(sg.maxout(Z, Z * U.T)) + 0.1 * sg.l1(U) + 0.05 * sg.l2(W))
ROWS = 700
_rng = np.random.default_rng(7)
INIT = {W: _rng.standard_normal((3, 2)), B: 0.3 * _rng.standard_normal((1, 2)),
        U: _rng.standard_normal((2, 2))}
DATA = {X: _rng.standard_normal((ROWS, 3)), T: _rng.uniform(size=(ROWS, 2))}
ORDER = (W, B, U)


def np_loss(p, x=DATA[X], t=DATA[T]):
    z = x @ p[W] + p[B]
    zu, zut = z @ p[U], z @ p[U].T
    rows = x.shape[0]
    return (np.mean((1 / (1 + np.exp(-z)) - t) ** 2)
            + np.sum(np.log(np.sum(np.exp(zu), axis=1))) / rows
            + np.mean(np.maximum(z, zut)) + 0.1 * np.sum(np.abs(p[U]))
            + 0.05 * np.sum(p[W] ** 2))


def np_grad(p, h=1e-4):
    """Fourth-order central differences of np_loss."""
    out = {}
    for key, a in p.items():
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            vals = []
            for step in (2 * h, h, -h, -2 * h):
                q = {k: v.copy() for k, v in p.items()}
                q[key][idx] += step
                vals.append(np_loss(q))
            g[idx] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
        out[key] = g
    return out


def np_grad_exact(p, x=DATA[X], t=DATA[T]):
    """The gradient of np_loss by hand (backprop through each term)."""
    rows = x.shape[0]
    z = x @ p[W] + p[B]
    zu, zut = z @ p[U], z @ p[U].T
    sig = 1 / (1 + np.exp(-z))
    dz = 2 * (sig - t) * sig * (1 - sig) / z.size
    e = np.exp(zu - zu.max(axis=1, keepdims=True))
    dzu = e / e.sum(axis=1, keepdims=True) / rows
    mask = z > zut
    dzut = ~mask / z.size
    dz = dz + dzu @ p[U].T + mask / z.size + dzut @ p[U]
    du = z.T @ dzu + dzut.T @ z + 0.1 * np.sign(p[U])
    return {W: x.T @ dz + 0.1 * p[W], B: dz.sum(axis=0, keepdims=True), U: du}


def test_the_references_agree():
    for k, g in np_grad(INIT).items():
        np.testing.assert_allclose(np_grad_exact(INIT)[k], g, rtol=0, atol=1e-9)


def flat(p):
    return np.concatenate([p[k].ravel() for k in ORDER])


@pytest.fixture(scope="module")
def model():
    return sg.Model(LOSS, params={k: v.copy() for k, v in INIT.items()}, data=[X, T],
                    optimizer=sg.optim.SGD(lr=0.1))


def _stored(model, data):
    return tuple(np.ascontiguousarray(a.T) if f else a
                 for a, f in zip((data[X], data[T]), model._flipped()))


def _chunks(model, data=DATA):
    module = model.pipeline.module
    return module, split_chunks(module, _stored(model, data), [True, True], model._flipped(),
                                ROWS)


def test_view2d_is_a_reshaped_slice_sharing_memory():
    from numba import njit

    from symgrad.kernels.loops import view2d

    @njit
    def view(a, start, rows, cols):
        return view2d(a, start, rows, cols)

    a = np.arange(40.0)
    for start, rows, cols in ((0, 4, 5), (8, 2, 16), (24, 1, 0), (40, 3, 0)):
        v = view(a, start, rows, cols)
        want = a[start:start + rows * cols].reshape(rows, cols)
        assert v.shape == want.shape and v.flags.c_contiguous
        np.testing.assert_array_equal(v, want)
    v = view(a, 8, 2, 3)
    v[1, 2] = -1.0
    assert a[13] == -1.0


def test_the_program_splits_and_its_module_says_so(model):
    source = model.generated.source
    assert "def chunk(" in source and "CHUNK_LAYOUT" in source
    assert "Two cores: not for this model" not in source


def test_chunks_are_fixed_by_the_sample_count_alone():
    assert ksplit.chunk_size(300) == 160  # two chunks: 160 + 140
    assert ksplit.chunk_size(700) == 192  # four: 192 * 3 + 124
    assert ksplit.chunk_size(200) >= 200  # one chunk: the serial loop
    for rows in (256, 300, 511, 700, 4096, 100_001):
        size = ksplit.chunk_size(rows)
        assert size % ksplit.VECTOR_STEP == 0 and size >= ksplit.MIN_CHUNK
        count = -(-rows // size)  # the last chunk takes the rest
        shared = 1 << (rows // ksplit.MIN_CHUNK).bit_length() - 1  # the power of two it shares by
        assert (count - 1) * size < rows <= count * size and count <= shared
        assert size == -(-rows // shared // ksplit.VECTOR_STEP) * ksplit.VECTOR_STEP
    assert -(-1025 // ksplit.chunk_size(1025)) == 7  # 7 of 160: not 8 (see chunk_size)


def test_chunk_sums_less_the_parameter_part_are_the_batch_loss_and_gradient(model):
    """Each chunk's loss and gradient (the parameter-only part plus its samples' sums, 1/n
    of the whole batch): added up, less the part of no samples counted once per extra
    chunk, they are NumPy's loss and its finite differences."""
    module, (works, widths) = _chunks(model)
    assert list(widths) == [192, 192, 192, 124, 0]
    chunk = split_chunk(module)
    p = flat(INIT)
    loss, grad = 0.0, np.zeros_like(p)
    results = []
    for c in range(len(widths)):
        g = np.zeros_like(p)
        results.append((chunk(p, g, works[c], widths[c], ROWS, module.DIMS), g))
    for value, g in results[:-1]:
        loss, grad = loss + value, grad + g
    loss -= 3 * results[-1][0]
    grad -= 3 * results[-1][1]
    assert loss == pytest.approx(np_loss(INIT), rel=1e-12)
    np.testing.assert_allclose(grad, flat(np_grad(INIT)), rtol=0, atol=1e-8)
    # the part of no samples is the parameter-only terms, NumPy's l1 and l2
    assert results[-1][0] == pytest.approx(0.1 * np.abs(INIT[U]).sum()
                                           + 0.05 * (INIT[W] ** 2).sum(), rel=1e-14)


def _train(model, threads, epochs, p, validation=None, patience=0, lr=0.1):
    module, (works, widths) = _chunks(model)
    vrows = 0 if validation is None else validation[X].shape[0]
    val = split_work(module, _stored(model, validation or {X: DATA[X][:0], T: DATA[T][:0]}),
                     [True, True], model._flipped(), 0, vrows)
    losses, val_losses = np.full(epochs, np.nan), np.full(epochs, np.nan)
    best = np.array([np.inf, -1.0, 0.0])
    best_params = p.copy()
    ran, status = ksplit.train(threads, split_chunk(module), works, widths, ROWS, module.DIMS,
                               val, vrows, p, np.empty_like(p), 0, np.zeros((1, p.size)),
                               np.zeros(1, np.int64), np.array([lr, 0.0, 0.0]), 0, epochs,
                               patience, losses, val_losses, best, best_params)
    return ran, status, p, losses, val_losses, best, best_params


@pytest.mark.parametrize("threads", [2, 4])
def test_the_same_bits_on_any_thread_count(model, threads):
    one = _train(model, 1, 60, flat(INIT))
    many = _train(model, threads, 60, flat(INIT))
    assert one[:2] == many[:2] == (60, 0)
    for a, b in zip(one[2:], many[2:]):
        np.testing.assert_array_equal(a, b)


def test_one_thread_stops_early_like_two_with_the_same_bits(model):
    """Validation and early stopping on one thread and on two: the same epochs run, status,
    losses, validation losses, best loss and parameters."""
    rng = np.random.default_rng(5)
    val = {X: rng.standard_normal((40, 3)), T: rng.uniform(size=(40, 2))}
    one = _train(model, 1, 400, flat(INIT), validation=val, patience=2, lr=3.0)
    two = _train(model, 2, 400, flat(INIT), validation=val, patience=2, lr=3.0)
    assert one[1] == two[1] == EARLY_STOPPING and one[0] == two[0] < 400
    for a, b in zip(one[2:], two[2:]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [1, 2])
def test_chunked_epochs_match_numpy_gradient_descent(model, threads):
    """20 full-batch gradient-descent steps: the loss before each step and the final
    parameters against NumPy's loss and a descent on its gradient by hand, on one thread
    and on two."""
    ran, status, p, losses, *_ = _train(model, threads, 20, flat(INIT))
    q = {k: v.copy() for k, v in INIT.items()}
    for e in range(20):
        assert losses[e] == pytest.approx(np_loss(q), rel=1e-11)
        for k, g in np_grad_exact(q).items():
            q[k] -= 0.1 * g
    np.testing.assert_allclose(p, flat(q), rtol=0, atol=1e-12)


def test_fit_on_chunks_matches_the_numpy_tier_with_validation_and_early_stopping(model):
    """fit (compiled: chunks of the samples) against fit on the NumPy tier (the program run
    by NumPy): the same epochs, losses, validation losses, best epoch and parameters."""
    rng = np.random.default_rng(3)
    val = {X: rng.standard_normal((90, 3)), T: rng.uniform(size=(90, 2))}
    runs = {}
    for engine in ("compiled", "numpy"):
        model.params = {k: v.copy() for k, v in INIT.items()}
        history = model.fit(DATA, epochs=400, validation=val, early_stopping=2,
                            optimizer=sg.optim.SGD(lr=3.0), verbose=0, engine=engine,
                            initial_epoch=0)
        runs[engine] = history, model.params
        if engine == "compiled":
            cores = model.timings["epochs_on_cores"]
            assert cores["all"] + cores["one"] == len(history)
    (h1, p1), (h2, p2) = runs["compiled"], runs["numpy"]
    assert h1.stop_reason == h2.stop_reason == "early_stopping"
    assert h1.epoch == h2.epoch == [0, 1, 2, 3, 4] and h1.best_epoch == h2.best_epoch == 2
    np.testing.assert_allclose(h1.loss, h2.loss, rtol=1e-10)
    np.testing.assert_allclose(h1.val_loss, h2.val_loss, rtol=1e-10)
    for k in ORDER:
        np.testing.assert_allclose(p1[k], p2[k], rtol=0, atol=1e-10)
    assert set(h1.engine) == {"compiled"}


@pytest.mark.parametrize("threads", [1, 2])
def test_divergence_stops_the_chunked_loop(model, threads):
    ran, status, p, losses, *_ = _train(model, threads, 200, flat(INIT), lr=1e6)
    assert status == DIVERGED and ran < 200
    assert not np.isfinite(losses[ran - 1]) or not np.all(np.isfinite(p))


def test_interrupt_and_callbacks_between_chunked_epochs(model):
    seen = []

    def stop_at_2(epoch, logs):
        seen.append(logs["loss"])
        if epoch == 2:
            raise KeyboardInterrupt

    model.params = {k: v.copy() for k, v in INIT.items()}
    with pytest.warns(RuntimeWarning, match="interrupted after 3 epochs"):
        history = model.fit(DATA, epochs=50, callbacks=[stop_at_2], verbose=0,
                            optimizer=sg.optim.SGD(lr=0.1), initial_epoch=0)
    assert history.stop_reason == "interrupted" and len(history) == 3
    assert seen[0] == pytest.approx(np_loss(INIT), rel=1e-12)


# -- programs that do not split: they keep the one-thread loop, and the module says why ------

def _reason(loss, params, data, dtype="float64"):
    model = sg.Model(loss, params=params, data=data, dtype=dtype)
    source = model.generated.source
    if "def chunk(" in source:
        return ""
    return next(ln for ln in source.splitlines() if "Two cores: not for this model" in ln)


@pytest.mark.parametrize("loss, why", [
    # a batch statistic used by later per-sample lines: centring by the batch mean
    (lambda: sg.mean(sg.elementwise(lambda z, m: (z - m) ** 2, X * W,
                                    sp.OneMatrix(n, 1) * sg.sum(X * W, axis=0) / n)),
     "combines per-sample values with a sum over the batch"),
    # a sum over the batch entering non-linearly
    (lambda: sg.sum(sg.elementwise(lambda s: s ** 2, sg.sum(sg.tanh(X * W), axis=0))) / n,
     "not linear"),
    (lambda: sg.sum(sg.log(sg.sum(sg.exp(X * W), axis=0))), "not linear"),
    # a softmax across the samples (each column of a batch-by-2 matrix)
    (lambda: sg.sum(sg.elementwise(lambda s, t: s * t, sg.softmax((X * W).T), T.T)) / n,
     "across the samples"),
])
def test_cross_sample_programs_stay_on_one_thread(loss, why):
    expr = loss()
    reason = _reason(expr, {W: INIT[W].copy()}, [X, T] if T in expr.atoms(sp.MatrixSymbol)
                     else [X])
    assert reason and why in reason, reason


def test_float32_models_stay_on_one_thread():
    reason = _reason(LOSS, {k: v.copy() for k, v in INIT.items()}, [X, T], dtype="float32")
    assert "float32" in reason


def test_a_cross_sample_model_trains_on_one_thread_like_numpy():
    """The batch-centred loss (not split) still fits on the compiled loop, against NumPy."""
    loss = sg.mean(sg.elementwise(lambda z, m: (z - m) ** 2, X * W,
                                  sp.OneMatrix(n, 1) * sg.sum(X * W, axis=0) / n))
    model = sg.Model(loss, params={W: INIT[W].copy()}, data=[X],
                     optimizer=sg.optim.SGD(lr=0.05))
    history = model.fit({X: DATA[X]}, epochs=5, verbose=0, engine="compiled")
    assert model.timings["epochs_on_cores"] == {"all": 0, "one": 5}
    w = INIT[W].copy()
    x = DATA[X]
    for e in range(5):
        z = x @ w
        c = z - z.mean(axis=0)
        assert history.loss[e] == pytest.approx(np.mean(c ** 2), rel=1e-12)
        w -= 0.05 * x.T @ (2 * (c - c.mean(axis=0)) / c.size)
    np.testing.assert_allclose(model.params[W], w, rtol=0, atol=1e-12)


def test_fits_in_pieces_go_on_to_the_same_bits(model):
    """Two fits of 7 epochs give the bits of one fit of 14 (every chunk of epochs, however
    fit cuts them, runs the same chunked epochs), on whatever cores each run chose."""
    runs = []
    for pieces in ((14,), (7, 7)):
        model.params = {k: v.copy() for k, v in INIT.items()}
        model.optimizer = sg.optim.SGD(lr=0.1)
        losses = []
        for i, epochs in enumerate(pieces):
            losses += model.fit(DATA, epochs=epochs, verbose=0,
                                initial_epoch=None if i else 0).loss
        runs.append((losses, flat(model.params)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_sigint_during_the_chunked_loop_keeps_every_epoch_it_ran(model):
    """A real Ctrl-C while both threads train: held until the chunk of epochs returns."""
    import os
    import signal
    import threading

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    model.params = {k: v.copy() for k, v in INIT.items()}
    model.fit(DATA, epochs=1, verbose=0, optimizer=sg.optim.SGD(lr=1e-3))  # compiled first
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.warns(RuntimeWarning, match="interrupted"):
            history = model.fit(DATA, epochs=2_000_000, verbose=0,
                                optimizer=sg.optim.SGD(lr=1e-6))
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert history.stop_reason == "interrupted" and 0 < len(history) < 2_000_000
    assert np.all(np.isfinite(history.loss))
    assert model.epochs_trained == history.epoch[-1] + 1


def test_unbatched_data_in_the_parameter_only_part():
    """A data matrix without the batch (A) in a term of parameters only: every chunk, and
    the task of no samples that takes that term off, read it (against NumPy by hand)."""
    A = sp.MatrixSymbol("A", 3, 2)
    loss = (sg.mean(sg.elementwise(lambda p, y: (p - y) ** 2, sg.sigmoid(X * W), T))
            + 0.5 * sg.sum(sg.elementwise(lambda w, a: (w - a) ** 2, W, A)))
    a = np.arange(6.0).reshape(3, 2) / 4
    model = sg.Model(loss, params={W: INIT[W].copy()}, data=[X, T, A],
                     optimizer=sg.optim.SGD(lr=0.2))
    history = model.fit({**DATA, A: a}, epochs=6, verbose=0, engine="compiled")
    assert "def chunk(" in model.generated.source
    w, x, t = INIT[W].copy(), DATA[X], DATA[T]
    for e in range(6):
        s = 1 / (1 + np.exp(-(x @ w)))
        assert history.loss[e] == pytest.approx(np.mean((s - t) ** 2)
                                                + 0.5 * np.sum((w - a) ** 2), rel=1e-12)
        w = w - 0.2 * (x.T @ (2 * (s - t) * s * (1 - s) / s.size) + (w - a))
    np.testing.assert_allclose(model.params[W], w, rtol=0, atol=1e-12)



_Y = sp.MatrixSymbol("Y", n, 1)


@pytest.mark.parametrize("pairs", [
    lambda: sg.sum(_Y * _Y.T) / n,  # a product of two batched operands
    lambda: sg.sum(sg.elementwise(lambda a, b: a * b, _Y, _Y.T)) / n,  # broadcasting
    lambda: sg.sum(_Y * sp.OneMatrix(1, n) * sp.OneMatrix(n, 1) * _Y.T) / n ** 2,
], ids=["matmul", "elementwise", "ones"])
def test_a_value_pairing_the_samples_does_not_split(pairs):
    """Review of s10-w2: a batch x batch value (every pair of samples) summed is (sum of
    Y)^2, not a sum over samples; chunks see only their own pairs. In a term of data only no
    gradient line reads it (with a parameter in it, the backward pass's lines refuse the
    split). The loss against NumPy by hand, on the compiled loop."""
    loss = sg.mean(sg.elementwise(lambda a, b: (a - b) ** 2, X * W, T)) + pairs()
    reason = _reason(loss, {W: INIT[W].copy()}, [X, T, _Y])
    assert "pairs samples" in reason, reason
    model = sg.Model(loss, params={W: INIT[W].copy()}, data=[X, T, _Y],
                     optimizer=sg.optim.SGD(lr=1e-3))
    y = np.linspace(0.5, 1.5, ROWS)[:, None]
    history = model.fit({**DATA, _Y: y}, epochs=1, verbose=0, engine="compiled")
    ref = np.mean((DATA[X] @ INIT[W] - DATA[T]) ** 2) + y.sum() ** 2 / ROWS
    assert history.loss[0] == pytest.approx(ref, rel=1e-12)


def test_a_model_with_blas_products_stays_on_one_thread():
    """Review of s10-w2: products through BLAS (which has threads of its own) keep the
    one-thread loop. A guard for the check on the generated code ("np.dot("): whatever
    calls BLAS there must still be seen (s10-w3 writes gemm( instead)."""
    Xw, Ww = sp.MatrixSymbol("X", n, 64), sp.MatrixSymbol("W", 64, 64)
    loss = sg.mean(sg.tanh(Xw * Ww))
    reason = _reason(loss, {Ww: np.eye(64)}, [Xw])
    assert "BLAS" in reason, reason
