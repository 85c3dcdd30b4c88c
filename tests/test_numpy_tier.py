"""The NumPy tier of matrix models (a cold fit starts there while Numba compiles in another
process): same results as the compiled loop up to rounding, and the switch between them."""

import copy

import broadcast_cases as bc
import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from symgrad.kernels.loops import permute
from symgrad.kernels.optim import KINDS, update
from symgrad.train.background import BackgroundCompile, compiled_in_cache
from symgrad.train.numpy_loop import numpy_update, permutation

n = sp.Symbol("n", integer=True, positive=True)
X, Y = sp.MatrixSymbol("X", n, 2), sp.MatrixSymbol("Y", n, 2)
W1, b1 = sp.MatrixSymbol("W1", 2, 8), sp.MatrixSymbol("b1", 1, 8)
W2, b2 = sp.MatrixSymbol("W2", 8, 2), sp.MatrixSymbol("b2", 1, 2)


def _data(rows=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    return {X: x, Y: sg.one_hot((x[:, 0] * x[:, 1] > 0).astype(int), 2)}


def _model(dtype="float64", cache_dir=None):
    rng = np.random.default_rng(1)
    S = sg.tanh(X * W1 + b1) * W2 + b2
    loss = sg.softmax_cross_entropy(S, Y) + 0.5 * 0.01 * (sg.l2(W1) + sg.l2(W2))
    return sg.Model(loss, params={W1: rng.normal(size=(2, 8)) / 2, b1: np.zeros((1, 8)),
                                  W2: rng.normal(size=(8, 2)) / 3, b2: np.zeros((1, 2))},
                    data=[X, Y], dtype=dtype, cache_dir=cache_dir)


@pytest.mark.parametrize("n_items, key", [(1, 0), (2, 5), (64, 7 * 1000003 + 2), (1000, -3)])
def test_permutation_is_the_kernels_shuffle(n_items, key):
    order = np.empty(n_items, dtype=np.int64)
    permute(order, key)
    np.testing.assert_array_equal(permutation(n_items, key), order)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", range(len(KINDS)))
def test_numpy_update_is_the_kernels_update(kind, dtype):
    rng = np.random.default_rng(kind)
    hyper = np.array([0.05, 0.01, 0.002, 0.9, 0.99, 1e-6])
    p = rng.normal(size=50).astype(dtype)
    a, b = p.copy(), p.copy()
    sa, sb = np.zeros((3, 50), dtype=dtype), np.zeros((3, 50), dtype=dtype)
    for t in range(1, 6):
        g = rng.normal(size=50).astype(dtype)
        update(kind, a, g, sa, t, hyper)
        numpy_update(kind, b, g, sb, t, hyper)
    tol = 1e-14 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
    np.testing.assert_allclose(sb, sa, rtol=tol, atol=tol)


@pytest.mark.parametrize("opts", [
    dict(optimizer=sg.optim.SGD(lr=0.5), epochs=30),
    dict(optimizer=sg.optim.Adam(lr=0.02), epochs=6, batch_size=32, seed=3),
    dict(optimizer=sg.optim.Momentum(lr=0.1), epochs=5, batch_size=50, drop_last=True),
    dict(optimizer=sg.optim.RMSprop(lr=0.01), epochs=8, batch_size=40,
         validation=_data(60, seed=9), early_stopping=2),
])
def test_numpy_tier_trains_like_the_compiled_loop(opts):
    data = _data()
    runs = {}
    for engine in ("compiled", "numpy"):
        model = _model()
        fresh = copy.deepcopy(opts)  # the optimizer keeps state: one per run
        hist = model.fit(data, **fresh, verbose=0, engine=engine)
        runs[engine] = (hist, model._values.copy())
        assert set(hist.engine) == {engine}
    (hc, pc), (hn, pn) = runs["compiled"], runs["numpy"]
    assert len(hc) == len(hn) and hc.stop_reason == hn.stop_reason
    np.testing.assert_allclose(hn.loss, hc.loss, rtol=1e-10)
    np.testing.assert_allclose(hn.val_loss, hc.val_loss, rtol=1e-10)
    np.testing.assert_allclose(pn, pc, rtol=1e-9, atol=1e-12)
    assert hn.best_epoch == hc.best_epoch


def test_numpy_tier_in_float32():
    data = _data()
    runs = {}
    for engine in ("compiled", "numpy"):
        model = _model(dtype="float32")
        hist = model.fit(data, optimizer=sg.optim.Adam(lr=0.01), epochs=5, batch_size=30,
                         verbose=0, engine=engine)
        assert model._values.dtype == np.float32
        runs[engine] = (np.array(hist.loss), model._values.copy())
    np.testing.assert_allclose(runs["numpy"][0], runs["compiled"][0], rtol=1e-5)
    np.testing.assert_allclose(runs["numpy"][1], runs["compiled"][1], rtol=1e-4, atol=1e-5)


def test_a_cold_fit_starts_on_numpy_and_switches_when_the_compile_is_done(tmp_path):
    """engine='auto' (the default): NumPy while another process compiles, then compiled."""
    model = _model(cache_dir=tmp_path)
    path = model._module_file()
    assert not compiled_in_cache(path)

    def wait_for_the_compile(epoch, logs):
        if epoch == 1:  # the background compile was requested when the fit started
            assert BackgroundCompile.request(path, {}).wait(timeout=600)

    hist = model.fit(_data(), optimizer=sg.optim.SGD(lr=0.5), epochs=6, verbose=0,
                     engine="auto", callbacks=[wait_for_the_compile])
    assert hist.engine[:2] == ["numpy", "numpy"] and hist.engine[-1] == "compiled"
    assert compiled_in_cache(path) and model.timings["switched_at_epoch"] >= 2
    reference = _model(cache_dir=tmp_path)
    ref = reference.fit(_data(), optimizer=sg.optim.SGD(lr=0.5), epochs=6, verbose=0,
                        engine="auto")
    assert ref.engine == ["compiled"] * 6  # warm cache: compiled from the start
    np.testing.assert_allclose(hist.loss, ref.loss, rtol=1e-10)
    np.testing.assert_allclose(model._values, reference._values, rtol=1e-9, atol=1e-12)


def test_engine_is_checked():
    with pytest.raises(ValueError, match="engine must be"):
        _model().fit(_data(), epochs=1, verbose=0, engine="fast")
    a, x = sp.symbols("a x")
    scalar = sg.Model(loss=(a * x) ** 2, params={a: 1.0}, data=[x])
    with pytest.raises(ValueError, match="for matrix models"):
        scalar.fit({x: np.ones(3)}, epochs=1, verbose=0, engine="numpy")


def test_status_numbers_and_end_of_epoch_agree_with_the_kernels():
    from symgrad.kernels import loops
    from symgrad.train import history
    from symgrad.train.numpy_loop import end_epoch

    assert (history.DONE, history.DIVERGED, history.EARLY_STOPPING) == (
        loops.DONE, loops.DIVERGED, loops.EARLY_STOPPING)
    before = [0.5, 1.5]  # the parameters the epoch started from
    cases = [(0.9, 0.5, True, [1.0, 2.0], [0.6, 3, 1], 0),  # better: new best
             (0.5, 0.9, True, [1.0, 2.0], [0.6, 3, 1], 2),  # no better: wait 2 -> stop
             (0.5, 0.0, False, [1.0, np.inf], [0.6, 3, 0], 0),  # non-finite parameter
             (0.5, np.nan, True, [1.0, 2.0], [0.6, 3, 0], 0),  # non-finite validation loss
             (0.4, 0.0, False, [1.0, 2.0], [0.6, 3, 0], 5),  # training loss monitored
             (0.7, 0.0, False, [1.0, np.inf], [0.6, 3, 0], 0),  # diverged, no better
             (np.inf, 0.0, False, [1.0, 2.0], [0.6, 3, 0], 0),  # non-finite loss
             (0.5, 0.0, False, [1e308, 1e308], [0.6, 3, 0], 0),  # finite; the sum overflows
             (0.9, 0.5, True, [1.0, np.inf], [0.6, 3, 0], 0),  # better, parameter not finite
             (0.9, 0.5, True, [np.nan, 1.0], [0.6, 3, 0], 0)]  # better, parameter NaN
    expected = [(0, [0.5, 4, 0], [1.0, 2.0]), (2, [0.6, 3, 2], [0, 0]),
                (1, [0.5, 4, 0], before), (1, [0.6, 3, 0], [0, 0]), (0, [0.4, 4, 0], before),
                (1, [0.6, 3, 0], [0, 0]), (1, [0.6, 3, 0], [0, 0]), (0, [0.5, 4, 0], before),
                (1, [0.6, 3, 0], [0, 0]), (1, [0.6, 3, 0], [0, 0])]
    for (loss, monitor, validating, params, best, patience), want in zip(cases, expected):
        out = []
        for fn in (loops.end_epoch, end_epoch):
            p, b = np.array(params), np.array(best, dtype=float)
            losses, val_losses, best_params = np.zeros(9), np.zeros(9), np.zeros(2)
            with np.errstate(over="ignore"):  # as in the loop that calls it
                status = fn(4, loss, monitor, validating, p, np.array(before), losses,
                            val_losses, b, best_params, patience)
            out.append((status, losses.tolist(), val_losses.tolist(), b.tolist(),
                        best_params.tolist()))
        np.testing.assert_equal(out[0], out[1])  # NaN equals NaN here
        assert (out[0][0], out[0][3], out[0][4]) == want


def test_dropout_models_train_compiled_only():
    rng = np.random.default_rng(1)
    S = sg.dropout(sg.tanh(X * W1 + b1), 0.2) * W2 + b2
    model = sg.Model(sg.softmax_cross_entropy(S, Y),
                     params={W1: rng.normal(size=(2, 8)), b1: np.zeros((1, 8)),
                             W2: rng.normal(size=(8, 2)), b2: np.zeros((1, 2))}, data=[X, Y])
    with pytest.raises(ValueError, match="dropout"):
        model.fit(_data(), epochs=1, verbose=0, engine="numpy")
    assert model._numpy_first() is False  # auto: compiled from the start


def _diverging_line():
    """A linear matrix model with far too large a step: it diverges (issue 14)."""
    Z, T = sp.MatrixSymbol("Z", n, 2), sp.MatrixSymbol("T", n, 1)
    W, c = sp.MatrixSymbol("W", 2, 1), sp.MatrixSymbol("c", 1, 1)
    rng = np.random.default_rng(3)
    z = rng.normal(size=(40, 2))
    model = sg.Model(sg.losses.mse(Z * W + c, T), params={W: np.zeros((2, 1)), c: np.zeros((1, 1))},
                     data=[Z, T], optimizer=sg.optim.SGD(lr=50.0))
    return model, {Z: z, T: z @ np.array([[2.0], [-1.0]]) + 0.5}


@pytest.mark.parametrize("engine", ["numpy", "compiled"])
def test_divergence_keeps_the_parameters_best_loss_belongs_to(engine):
    model, data = _diverging_line()
    with pytest.warns(sg.DivergenceWarning):
        hist = model.fit(data, epochs=500, verbose=0, engine=engine)
    assert hist.stop_reason == "diverged" and hist.best_epoch == 0
    for p, value in model.params.items():
        np.testing.assert_array_equal(value, hist.best_params[p])
    # full batch: the epoch's loss is the kept parameters' loss (the NumPy tier sums with
    # NumPy's own rounding, evaluate runs the compiled code)
    tol = 0.0 if engine == "compiled" else 1e-14
    assert model.evaluate(data) == pytest.approx(hist.best_loss, rel=tol, abs=0.0)


# -- names keep their shapes: smaller adjoints broadcast (tests/broadcast_cases.py) -------

@pytest.mark.parametrize("name", list(bc.CASES))
def test_broadcast_adjoints_on_the_numpy_tier_and_in_the_trace(name):
    """A scalar adjoint below sum(), a column below a row sum, a bias row's adjoint: the
    NumPy tier's gradient (one full-batch SGD step of lr=1 moves the parameters by minus
    it) and the trace's equal central differences of the NumPy reference."""
    f, v0 = bc.reference(name)
    want = bc.fd_gradient(f, v0)
    params = bc.CASES[name][1]
    model = bc.model(name)
    hist = model.fit({bc.X: bc.XV}, engine="numpy", epochs=1, verbose=0,
                     optimizer=sg.optim.SGD(lr=1.0))
    assert hist.engine == ["numpy"]
    assert hist.loss[0] == pytest.approx(f(v0), rel=1e-12)
    assert bc.err(v0 - bc.flat(model.params, params), want) <= 1e-8
    trace = bc.model(name).trace({bc.X: bc.XV})
    assert trace.value == pytest.approx(f(v0), rel=1e-12)
    got = np.concatenate([trace[f"grad_{p.name}"].array.ravel() for p in params])
    assert bc.err(got, want) <= 1e-8


@pytest.mark.slow  # compiles a matrix model (about 15 s on a busy 2-core machine)
def test_broadcast_cases_agree_on_every_engine():
    """Several cases in one loss: the compiled loop's value and gradient, one SGD step on it
    and on the NumPy tier, the trace and hessian/hvp, against the NumPy reference."""
    name = "a few in one"
    f, v0 = bc.reference(name)
    want = bc.fd_gradient(f, v0)
    params = bc.CASES[name][1]
    data = {bc.X: bc.XV}
    model = bc.model(name)
    value, grad = model.value_and_grad(data)
    assert value == pytest.approx(f(v0), rel=1e-12)
    assert bc.err(bc.flat(grad, params), want) <= 1e-8
    steps = {}
    for engine in ("compiled", "numpy"):
        stepped = bc.model(name)
        hist = stepped.fit(data, engine=engine, epochs=1, verbose=0,
                           optimizer=sg.optim.SGD(lr=1.0))
        assert hist.engine == [engine] and hist.loss[0] == pytest.approx(f(v0), rel=1e-12)
        steps[engine] = v0 - bc.flat(stepped.params, params)
        assert bc.err(steps[engine], want) <= 1e-8
    assert bc.err(steps["numpy"], steps["compiled"]) <= 1e-12
    trace = model.trace(data)
    got = np.concatenate([trace[f"grad_{p.name}"].array.ravel() for p in params])
    assert bc.err(got, bc.flat(grad, params)) <= 1e-12
    hess = model.hessian(data)
    assert bc.err(hess, bc.fd_hessian(f, v0)) <= 1e-6


# -- how the tier evaluates a step (symgrad.expression.evaluate.numpy_function) -------------

@pytest.mark.parametrize("columns", range(1, 11))
def test_row_max_and_sum_over_few_columns_are_numpys_bits(columns):
    from symgrad.expression.evaluate import _rowmax, _rowsum

    rng = np.random.default_rng(columns)
    a = rng.normal(size=(257, columns)) * 10.0 ** rng.uniform(-8, 8, size=(257, columns))
    a[3, -1] = np.nan
    for got, want in ((_rowmax(a), a.max(axis=1, keepdims=True)),
                      (_rowsum(a), a.sum(axis=1, keepdims=True))):
        assert got.shape == want.shape == (257, 1)
        assert np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("make", [
    lambda x, y, z: -x + y, lambda x, y, z: x - y - z, lambda x, y, z: -x - y,
    lambda x, y, z: 1 - x ** 2, lambda x, y, z: -2 * x * y + z, lambda x, y, z: -x * y,
    lambda x, y, z: z * (x - y) / 3, lambda x, y, z: -x + 2 - y * z,
], ids=["-x+y", "x-y-z", "-x-y", "1-x^2", "-2xy+z", "-xy", "z(x-y)/3", "-x+2-yz"])
def test_a_step_is_evaluated_as_the_interpreter_does(make):
    """numpy_function (the tier's closures, terms -x subtracted) against evaluate_lowered
    (one NumPy call per node, sums and products as sum() and math.prod): the same bits."""
    from symgrad.expression.evaluate import evaluate_lowered, numpy_function

    x, y, z = sp.symbols("x y z")
    expr = make(x, y, z)
    rng = np.random.default_rng(0)
    values = {s: rng.normal(size=(5, 3)) for s in (x, y, z)}
    fn = numpy_function(expr, {x: 0, y: 1, z: 2})
    got = fn([values[x], values[y], values[z]])
    assert np.array_equal(got, evaluate_lowered(expr, values))


def test_the_softmax_of_the_cross_entropy_is_kept_for_its_gradient():
    """The step computing softmax_cross_entropy(s, Y) leaves softmax(s) where the gradient's
    step reads it: computed once, and equal to an independent softmax and cross-entropy."""
    from scipy.special import log_softmax, softmax

    from symgrad.expression.evaluate import numpy_function
    from symgrad.train.numpy_loop import _kept

    model = _model()
    steps = [*model.program.forward, *model.program.backward]
    kept = _kept(steps, 100)
    assert len(kept) == 1
    ((node, (slot, at)),) = kept.items()
    assert type(node).__name__ == "softmax"
    assert type(steps[at].rhs).__name__ == "softmax_cross_entropy"
    assert any(a.rhs.has(node) for a in steps[at + 1:])
    s, y = steps[at].rhs.args
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(40, 2)) * 30
    targets = sg.one_hot(rng.integers(0, 2, 40), 2)
    fn = numpy_function(steps[at].rhs, {s: 0, y: 1}, keep=2)
    env = [scores, targets, None]
    loss = fn(env)
    np.testing.assert_allclose(env[2], softmax(scores, axis=1), rtol=1e-13, atol=1e-300)
    assert loss == pytest.approx(-np.sum(targets * log_softmax(scores, axis=1)) / 40, rel=1e-13)
    reader = numpy_function(node, {node: 2})
    assert reader(env) is env[2]  # read, not computed again


@pytest.mark.parametrize("columns", [2, 3, 7])
def test_rowsum_of_negative_zeros_has_numpys_and_the_compiled_loops_sign(columns):
    """A review found the tier's sum over few columns, column by column, gave -0.0 for a
    row of negative zeros, where NumPy and the compiled loop's ``rowsums`` (a sum from 0.0)
    give +0.0: 1 / rowsum(...) was -inf on one engine and +inf on the other."""
    from symgrad.expression.evaluate import _rowsum
    from symgrad.kernels.arrays import rowsums

    a = np.full((4, columns), -0.0)
    got = _rowsum(a)
    want = a.sum(axis=1, keepdims=True)
    compiled = np.empty(4)
    rowsums.py_func(a, 4, columns, compiled, False)  # the compiled loop's kernel, as written
    assert np.array_equal(np.signbit(want).ravel(), np.signbit(compiled))
    assert np.array_equal(np.signbit(got), np.signbit(want)), (got.ravel(), want.ravel())
