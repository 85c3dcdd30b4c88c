"""The compiled loop's working layout (``symgrad.emit.arrays.working_layout``): parameter
matrices whose BLAS products pass fewer transposed operands when stored transposed are kept
so inside ``train``, and converted at its boundaries. Everything outside sees the model's
layout: the same bits as the canonical-layout loop (``WORKING_LAYOUT = False``) for every
optimizer, across fits, with validation, early stopping, divergence and Ctrl-C; loss and
gradient against backpropagation written out in NumPy.
"""

import math

import numpy as np
import pytest
import sympy as sp

import symgrad as sg
import symgrad.emit.arrays as emit_arrays
from symgrad import optim

n = sp.Symbol("n", integer=True, positive=True)
D, H, K = 64, 32, 3  # X @ W1 is a BLAS product (2**18 multiply-adds at 128 rows)
X_, Y_ = sp.MatrixSymbol("X", n, D), sp.MatrixSymbol("Y", n, K)
W1, b1 = sp.MatrixSymbol("W1", D, H), sp.MatrixSymbol("b1", 1, H)
W2, b2 = sp.MatrixSymbol("W2", H, K), sp.MatrixSymbol("b2", 1, K)


def _init(dtype):
    rng = np.random.default_rng(1)
    return {W1: (rng.standard_normal((D, H)) / math.sqrt(D)).astype(dtype),
            b1: (0.1 * rng.standard_normal((1, H))).astype(dtype),
            W2: (rng.standard_normal((H, K)) / math.sqrt(H)).astype(dtype),
            b2: np.zeros((1, K), dtype)}


def _data(rows, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, D))
    teacher = np.random.default_rng(7).standard_normal((D, K))  # labels to be learnt
    return {X_: X, Y_: np.eye(K)[np.argmax(X @ teacher, axis=1)]}


DATA, VAL = _data(200, 0), _data(50, 1)


def _model(working: bool, dtype="float32", penalty=0.0):
    was = emit_arrays.WORKING_LAYOUT
    emit_arrays.WORKING_LAYOUT = working
    try:
        loss = sg.softmax_cross_entropy(sg.relu(X_ * W1 + b1) * W2 + b2, Y_)
        if penalty:
            loss = loss + penalty * sg.l2(W1)
        model = sg.Model(loss, params=_init(dtype), data=[X_, Y_], dtype=dtype)
        model._generated()  # rendered under the setting
    finally:
        emit_arrays.WORKING_LAYOUT = was
    return model


@pytest.fixture(scope="module")
def pair():
    return _model(False), _model(True)


def test_the_rule_keeps_the_products_matrices_transposed(pair):
    canonical, working = pair
    src = working._generated().source
    assert "W1 = _p[0:2048].reshape((_dims[1], _dims[0]))  # stored transposed" in src
    assert "W2 = _p[2080:2176].reshape((_dims[5], _dims[4]))  # stored transposed" in src
    assert "gemm(W1, X.T, s0)" in src  # was gemm(W1.T, X.T, s0)
    assert "gemm(grad_s0, X, grad_W1)" in src  # was gemm(X.T, grad_s0.T, grad_W1)
    assert "_layout" not in canonical._generated().source
    assert ")  # stored transposed" not in canonical._generated().source


def test_a_matrix_read_by_a_sum_keeps_its_layout():
    # the penalty's sum over W1 would add in another order: W1 stays, W2 still moves
    src = _model(True, penalty=1e-3)._generated().source
    assert "W1 = _p[0:2048].reshape((_dims[0], _dims[1]))\n" in src
    assert "W2 = _p[2080:2176].reshape((_dims[5], _dims[4]))  # stored transposed" in src


def test_small_products_keep_the_modules_as_they_were():
    # W2's products in a two-moons MLP are written out (no BLAS): nothing changes
    x, y = sp.MatrixSymbol("x", n, 2), sp.MatrixSymbol("y", n, 2)
    w1, w2 = sp.MatrixSymbol("w1", 2, 16), sp.MatrixSymbol("w2", 16, 2)
    rng = np.random.default_rng(0)
    model = sg.Model(sg.softmax_cross_entropy(sg.tanh(x * w1) * w2, y),
                     params={w1: rng.standard_normal((2, 16)), w2: rng.standard_normal((16, 2))},
                     data=[x, y])
    assert "_layout" not in model._generated().source


def test_conversions_are_transposes(pair):
    from symgrad.train.arrays import to_model, to_working

    _, model = pair
    module = model._trainer()
    assert module.WORKING == ((0, D, H), (D * H + H, H, K))
    rng = np.random.default_rng(2)
    state = rng.standard_normal((3, D * H + H + H * K + K)).astype(np.float32)
    w = to_working(module, state)
    np.testing.assert_array_equal(w[:, :D * H], [r[:D * H].reshape(D, H).T.ravel() for r in state])
    lo = D * H + H
    w2 = state[1, lo:lo + H * K].reshape(H, K)
    np.testing.assert_array_equal(w[1, lo:lo + H * K], w2.T.ravel())
    np.testing.assert_array_equal(w[:, D * H:lo], state[:, D * H:lo])
    back = np.empty_like(state)
    to_model(module, w, back)
    np.testing.assert_array_equal(back, state)


def _same(a, b):
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


def _fresh(model):
    model.params = _init(model.dtype)
    model.epochs_trained = 0
    return model


OPTIMIZERS = [
    lambda: optim.SGD(lr=0.05, weight_decay=1e-3, l1=1e-4),
    lambda: optim.Momentum(lr=0.05),
    lambda: optim.Nesterov(lr=0.05, weight_decay=1e-3),
    lambda: optim.Adagrad(lr=0.05),
    lambda: optim.RMSprop(lr=0.01),
    lambda: optim.Adadelta(),
    lambda: optim.Adam(lr=0.01),
    lambda: optim.AMSGrad(lr=0.01, weight_decay=1e-3),
]
FIT = dict(batch_size=32, shuffle=True, seed=3, validation=VAL, verbose=0, engine="compiled")


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_the_loops_boundaries_change_no_bit(pair, make):
    """The working copies are made and given back at every call of the compiled loop
    (symgrad.train.arrays.call_train): four epochs in one fit (two calls of the loop) and
    in four fits (four calls, the optimizer's state carried across them) end with the same
    bits, and both within float32's rounding of the canonical-layout loop (the BLAS
    products' sums may be added in another order there)."""
    canonical, working = pair
    ends = []
    for model, calls in ((working, 1), (working, 4), (canonical, 1)):
        opt = make()
        _fresh(model)
        losses, val = [], []
        for _ in range(calls):
            hist = model.fit(DATA, optimizer=opt, epochs=4 // calls, **FIT)
            losses += list(hist.loss)
            val += list(hist.val_loss)
        ends.append((dict(model.params), opt.state.copy(), int(opt.step[0]), losses, val))
    (p1, s1, t1, l1, v1), (p4, s4, t4, l4, v4), (pc, sc, tc, lc, vc) = ends
    assert t1 == t4 == tc == 4 * 7
    assert all(_same(p1[k], p4[k]) for k in p1) and _same(s1, s4)
    assert _same(l1, l4) and _same(v1, v4)
    for k in p1:
        np.testing.assert_allclose(p1[k], pc[k], rtol=0, atol=2e-4)
    np.testing.assert_allclose(s1, sc, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(l1, lc, rtol=1e-5)
    np.testing.assert_allclose(v1, vc, rtol=1e-5)


@pytest.mark.parametrize("validation", [VAL, None])
def test_best_parameters_are_the_models(pair, validation):
    """The best parameters, kept inside the loop's epochs (one call runs several), are those
    of the best epoch in the model's layout: evaluated, they give the best loss to the bit
    (validation: after the epoch; without: full batch, the parameters the epoch started
    from). Early stopping restores them."""
    _, model = pair
    _fresh(model)
    data = validation if validation is not None else DATA
    hist = model.fit(DATA, optimizer=optim.Adam(lr=0.01), epochs=12, validation=validation,
                     early_stopping=3, batch_size=32 if validation is not None else None,
                     verbose=0, engine="compiled")
    assert hist.best_epoch > 0 and len(hist) > 2
    if hist.stop_reason == "early_stopping":
        assert all(_same(model.params[k], v) for k, v in hist.best_params.items())
    model.params = hist.best_params
    assert model.evaluate(data) == hist.best_loss


def test_divergence_and_interrupt_keep_the_best_parameters(pair):
    canonical, working = pair
    for model in pair:
        _fresh(model)
        with pytest.warns(RuntimeWarning):
            hist = model.fit(DATA, optimizer=optim.SGD(lr=1e30), epochs=6, verbose=0,
                             engine="compiled")
        assert hist.stop_reason == "diverged" and hist.best_epoch == 0
        assert all(_same(model.params[k], v) for k, v in _init(model.dtype).items())

    def ctrl_c(epoch, logs):
        if epoch == 3:
            raise KeyboardInterrupt

    runs = []
    for model in pair:
        _fresh(model)
        with pytest.warns(RuntimeWarning, match="interrupted after 4 epochs"):
            hist = model.fit(DATA, optimizer=optim.SGD(lr=3.0), epochs=10,
                             callbacks=[ctrl_c], verbose=0, engine="compiled")
        assert hist.stop_reason == "interrupted"
        assert all(_same(model.params[k], v) for k, v in hist.best_params.items())
        assert model.evaluate(DATA) == hist.best_loss
        runs.append((hist.best_epoch, list(hist.loss)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-5)


# -- against backpropagation in NumPy (float64) -------------------------------------------

def _numpy_loss_grad(p, X, Y):
    z1 = X @ p[W1] + p[b1]
    a1 = np.maximum(z1, 0.0)
    s = a1 @ p[W2] + p[b2]
    s = s - s.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    m = X.shape[0]
    loss = -(Y * logp).sum() / m
    d = (np.exp(logp) - Y) / m
    g = {W2: a1.T @ d, b2: d.sum(axis=0, keepdims=True)}
    d1 = (d @ p[W2].T) * (z1 > 0)
    g.update({W1: X.T @ d1, b1: d1.sum(axis=0, keepdims=True)})
    return loss, g


@pytest.fixture(scope="module")
def working64():
    return _model(True, "float64")


def test_loss_and_gradient_against_numpy(working64):
    model = working64
    assert ")  # stored transposed" in model._generated().source
    model.params = _init(np.float64)
    loss, grad = model.value_and_grad(DATA)
    want_loss, want = _numpy_loss_grad(_init(np.float64), DATA[X_], DATA[Y_])
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for k in want:
        np.testing.assert_allclose(grad[k], want[k], rtol=0, atol=1e-13)
    # the module's own value_and_grad takes and gives the model's layout too
    mod = model._trainer()
    p = np.concatenate([v.ravel() for v in _init(np.float64).values()])
    g = np.full_like(p, np.nan)
    m = 7
    got = mod.value_and_grad(p, g, DATA[X_][:m].copy(), np.ascontiguousarray(DATA[Y_][:m].T), m,
                             mod.alloc(m), mod.DIMS)
    want_loss, want = _numpy_loss_grad(_init(np.float64), DATA[X_][:m], DATA[Y_][:m])
    assert got == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(g, np.concatenate([want[k].ravel() for k in (W1, b1, W2, b2)]),
                               rtol=0, atol=1e-13)
    start = np.concatenate([v.ravel() for v in _init(np.float64).values()])
    np.testing.assert_array_equal(p, start)  # not changed


def test_adam_steps_against_numpy(working64):
    """Five minibatches of Adam (torch's formula, written out) from the same start."""
    model = working64
    _fresh(model)
    opt = optim.Adam(lr=0.01)
    model.fit(DATA, optimizer=opt, epochs=1, batch_size=40, shuffle=False, verbose=0,
              engine="compiled")
    p = _init(np.float64)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    for t in range(1, 6):
        rows = slice((t - 1) * 40, t * 40)
        _, g = _numpy_loss_grad(p, DATA[X_][rows], DATA[Y_][rows])
        for k in p:
            m[k] = 0.9 * m[k] + 0.1 * g[k]
            v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
            p[k] = p[k] - 0.01 / (1 - 0.9 ** t) * m[k] / (np.sqrt(v[k] / (1 - 0.999 ** t)) + 1e-8)
    for k in p:
        np.testing.assert_allclose(model.params[k], p[k], rtol=0, atol=1e-11)
    # the optimizer's state is kept in the model's layout: Adam's first moment of W1
    np.testing.assert_allclose(opt.state[0][:D * H].reshape(D, H), m[W1], rtol=0, atol=1e-12)


def test_save_and_load_continue_bit_for_bit(pair, tmp_path):
    _, model = pair
    opt = optim.Adam(lr=0.01)
    _fresh(model).fit(DATA, optimizer=opt, epochs=2, batch_size=32, seed=5, verbose=0,
                      engine="compiled")
    path = tmp_path / "m.sgm"
    sg.save_model(model, path)
    loaded = sg.load_model(path)
    assert ")  # stored transposed" in loaded._generated().source
    loaded.fit(DATA, epochs=2, batch_size=32, verbose=0, engine="compiled")
    model.fit(DATA, optimizer=opt, epochs=2, batch_size=32, verbose=0, engine="compiled")
    for k, v in model.params.items():
        assert _same(loaded.params[k], v)


def test_a_forced_ctrl_c_in_the_conversion_back_keeps_the_best_parameters(pair):
    """A second Ctrl-C raises KeyboardInterrupt at once (Interrupts, forceable), at whatever
    line Python is on: here each line of the conversions back into the model's layout after
    the compiled loop returned (call_train's to_model calls and the _transposed work they
    do, in every call of the loop). As when
    it lands elsewhere between chunks, the fit ends "interrupted" with the best parameters
    restored: in the model's layout, evaluated they give the best loss recorded (the loop
    writes the best loss in place; its parameters reach the model's layout only when their
    conversion back is done)."""
    import signal
    import sys
    import warnings

    import symgrad.train.arrays as train_arrays

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has a handler other than Python's: fit leaves it alone")
    _, model = pair
    seen = [0]
    target = [0]

    def tracer(frame, event, arg):
        if frame.f_code is train_arrays._transposed.__code__:  # to_model's work
            frame = frame.f_back
        if (frame.f_code is not train_arrays.to_model.__code__
                or "w_best" not in frame.f_back.f_locals):  # a training call's, not evaluate's
            return None

        def lines(frame, event, arg):
            if event == "line":
                seen[0] += 1
                if seen[0] == target[0]:
                    signal.raise_signal(signal.SIGINT)  # "stopping after this chunk"
                    signal.raise_signal(signal.SIGINT)  # again: stop at once
            return lines

        return lines

    def per_epoch(epoch, logs):  # one epoch per call of the loop
        return None

    events = []
    bad = []
    for n in range(1, 80):
        _fresh(model)
        seen[0], target[0] = 0, n
        sys.settrace(tracer)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hist = model.fit(DATA, optimizer=optim.SGD(lr=0.5), epochs=4, batch_size=None,
                                 callbacks=[per_epoch], verbose=0, engine="compiled")
        except KeyboardInterrupt:  # in the loop's first call, made while fit compiles
            continue
        finally:
            sys.settrace(None)
        assert hist.stop_reason == "interrupted" and seen[0] >= n  # Ctrl-C at line n
        events.append(n)
        if model.evaluate(DATA) != hist.best_loss:
            bad.append(n)
    assert len(events) > 70
    assert not bad, f"the restored parameters are not the best ones for line events {bad}"

