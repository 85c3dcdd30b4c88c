"""LBFGS and NewtonCG in ``fit``: scipy's methods on the compiled value, gradient and HVP.

References are independent of symgrad: the same risk written in NumPy and minimised by
``scipy.optimize.minimize(method="BFGS")``; Hessians from ``sympy.hessian``.
"""

import math
import warnings

import numpy as np
import pytest
import scipy.optimize as so
import sympy as sp
from test_train import DATA, INIT, PRED, XS, YS, a, x, y  # the same small curve fit

import symgrad as sg
from symgrad.train.optim import LBFGS, NewtonCG


def _model(**kwargs):
    return sg.Model(loss=(PRED - y) ** 2, params=dict(INIT), data=[x, y], prediction=PRED,
                    target=y, **kwargs)


def _risk(p, xs=XS, ys=YS):
    return float(np.mean((p[0] * np.tanh(p[1] * xs) + p[2] - ys) ** 2))


def _risk_grad(p, xs=XS, ys=YS):
    t = np.tanh(p[1] * xs)
    r = 2 * (p[0] * t + p[2] - ys)
    return np.array([np.mean(r * t), np.mean(r * p[0] * (1 - t**2) * xs), np.mean(r)])


_HESSIAN = sp.lambdify([*INIT, x, y], sp.hessian((PRED - y) ** 2, list(INIT)), "numpy")


def _hessian_at(p, v):
    """The risk's Hessian at p (sympy.hessian of the per-sample loss, averaged over the
    samples: an independent reference) times v."""
    H = np.mean([np.array(_HESSIAN(*p, xi, yi), dtype=float) for xi, yi in zip(XS, YS)],
                axis=0)
    return H @ np.asarray(v, dtype=float)


def _sympy_hvp(model):
    """``hvp(v, data)`` at the model's current parameters, by :func:`_hessian_at`."""
    return lambda v, data: _hessian_at(list(model.params.values()), v)


def _optimum():
    res = so.minimize(_risk, list(INIT.values()), jac=_risk_grad, method="BFGS",
                      options={"gtol": 1e-10})
    return res.x, res.fun


def test_lbfgs_reaches_the_bfgs_optimum():
    model = _model()
    hist = model.fit(DATA, optimizer=LBFGS(), epochs=200, verbose=0)
    p_opt, f_opt = _optimum()
    assert hist.stop_reason == "converged" and len(hist) < 200
    assert np.allclose(list(model.params.values()), p_opt, atol=1e-6)
    assert abs(hist.loss[-1] - f_opt) <= 1e-12 * f_opt
    assert model.evaluate(DATA) == pytest.approx(hist.loss[-1], rel=1e-12)


def test_newton_cg_reaches_the_bfgs_optimum():
    model = _model()
    hist = model.fit(DATA, optimizer=NewtonCG(), epochs=100, verbose=0)
    p_opt, f_opt = _optimum()
    assert hist.stop_reason == "converged" and len(hist) < 100
    assert np.allclose(list(model.params.values()), p_opt, atol=1e-6)
    assert abs(hist.loss[-1] - f_opt) <= 1e-12 * f_opt
    assert sum(hist.n_hvp) >= len(hist) and all(k >= 1 for k in hist.n_hvp)


def test_prepared_data_runs_the_same_iterations():
    runs = []
    for prepared in (False, True):
        model = _model()
        data = model.prepare(DATA) if prepared else DATA
        hist = model.fit(data, optimizer=NewtonCG(), epochs=100, verbose=0)
        runs.append((list(model.params.values()), hist.loss, hist.n_hvp))
    assert runs[0] == runs[1] and len(runs[0][1]) > 1


def test_newton_cg_drives_the_hvp_it_is_given():
    """The loop asks ``model.hvp`` at the point scipy names: with sympy's Hessian in its
    place the run is the same up to rounding."""
    model, reference = _model(), _model()
    reference.hvp = _sympy_hvp(reference)
    hist = model.fit(DATA, optimizer=NewtonCG(), epochs=100, verbose=0)
    ref = reference.fit(DATA, optimizer=NewtonCG(), epochs=100, verbose=0)
    assert len(hist) == len(ref) and hist.n_hvp == ref.n_hvp
    assert np.allclose(hist.loss, ref.loss, rtol=1e-10)


@pytest.mark.parametrize("method", ["L-BFGS-B", "Newton-CG"])
def test_history_counts_are_scipys(method):
    """The same method run by scipy on the NumPy risk takes the same path: iterations and
    nfev/njev/nhev equal the History's epochs and its summed counts."""
    model = _model()
    optimizer = LBFGS() if method == "L-BFGS-B" else NewtonCG()
    extra = {"hessp": _hessian_at} if method == "Newton-CG" else {}
    hist = model.fit(DATA, optimizer=optimizer, epochs=6, verbose=0)
    res = so.minimize(_risk, list(INIT.values()), jac=_risk_grad, method=method,
                      options={**optimizer.options(), "maxiter": 6}, **extra)
    assert len(hist) == res.nit == 6
    assert (sum(hist.n_fev), sum(hist.n_gev)) == (res.nfev, res.njev)
    assert sum(hist.n_hvp) == (res.nhev if method == "Newton-CG" else 0)
    assert len(hist.n_fev) == len(hist.n_gev) == len(hist.n_hvp) == len(hist)
    assert all(k >= 1 for k in hist.n_gev)
    assert np.allclose(list(model.params.values()), res.x, rtol=1e-9, atol=1e-12)
    assert hist.loss[-1] == pytest.approx(res.fun, rel=1e-12)
    assert hist.stop_reason == "completed"
    assert hist.as_dict()["n_gev"] == hist.n_gev


def test_minibatches_are_refused():
    model = _model()
    for opt in (LBFGS(), NewtonCG()):
        with pytest.raises(sg.InputError, match="full batch.*batch_size=None"):
            model.fit(DATA, optimizer=opt, epochs=3, batch_size=16, verbose=0)
    with pytest.raises(ValueError, match="engine must be 'auto' or 'compiled'"):
        model.fit(DATA, optimizer=LBFGS(), epochs=3, engine="numpy", verbose=0)
    with pytest.raises(sg.InputError, match="fit without client="):
        model.fit(DATA, optimizer=NewtonCG(), epochs=3, client=object(), verbose=0)
    assert model.params == INIT


@pytest.mark.parametrize("bad", [{"gtol": -1.0}, {"maxcor": 2.5}, {"ftol": float("nan")},
                                 {"maxls": True}, {"gtol": float("inf")}])
def test_bad_hyperparameters(bad):
    with pytest.raises(sg.InputError, match=f"LBFGS.{next(iter(bad))} must be"):
        LBFGS(**bad)
    opt = LBFGS()
    setattr(opt, *next(iter(bad.items())))  # reassigned after it was made: fit checks again
    with pytest.raises(sg.InputError, match=f"LBFGS.{next(iter(bad))} must be"):
        _model().fit(DATA, optimizer=opt, epochs=2, verbose=0)


def test_the_models_optimizer_is_used_and_epochs_bound_the_run():
    model = _model(optimizer=LBFGS())
    hist = model.fit(DATA, epochs=3, verbose=0, metrics=["r2"])
    assert len(hist) == 3 and hist.stop_reason == "completed"
    assert len(hist.metrics["r2"]) == 3 and hist.metrics["r2"][-1] > hist.metrics["r2"][0]
    assert hist.loss == sorted(hist.loss, reverse=True)  # a line search only goes down
    assert model.fit(DATA, epochs=0, verbose=0).epoch == []


def test_callback_stop_and_the_iterate_it_saw():
    model = _model()
    seen = []

    def stop_at_2(epoch, logs):
        seen.append((epoch, logs["loss"], _risk(list(model.params.values()))))
        return epoch == 2

    hist = model.fit(DATA, optimizer=LBFGS(), epochs=50, callbacks=[stop_at_2], verbose=0)
    assert hist.stop_reason == "callback" and len(hist) == 3
    for _, logged, at_params in seen:  # callbacks see the parameters of the epoch's loss
        assert logged == pytest.approx(at_params, rel=1e-12)
    assert _risk(list(model.params.values())) == pytest.approx(hist.loss[-1], rel=1e-12)


def test_keyboard_interrupt_keeps_history_and_iterate():
    model = _model()

    def interrupt(epoch, logs):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.warns(RuntimeWarning, match="interrupted after 2 epochs"):
        hist = model.fit(DATA, optimizer=LBFGS(), epochs=50, callbacks=[interrupt], verbose=0)
    assert hist.stop_reason == "interrupted" and len(hist) == 2
    assert model.params == hist.best_params  # restored; a line search only goes down, so
    assert _risk(list(model.params.values())) == pytest.approx(hist.loss[-1], rel=1e-12)


def test_an_exception_in_a_callback_is_recorded_and_raised():
    model = _model()

    def fail(epoch, logs):
        if epoch == 2:
            raise ZeroDivisionError("a bug in the callback")

    with pytest.raises(ZeroDivisionError, match="a bug in the callback"):
        model.fit(DATA, optimizer=LBFGS(), epochs=50, callbacks=[fail], verbose=0)
    hist = model.history
    assert hist.stop_reason == "error" and len(hist) == 3
    assert model.params == hist.best_params and hist.best_epoch == 2


def test_early_stopping_on_validation_restores_the_best():
    """The validation data follows another law, so fitting the training data makes the
    validation loss rise after a while."""
    xv = np.linspace(-2, 2, 40)
    val = {x: xv, y: -1.0 * np.tanh(0.5 * xv) + 0.4}
    model = _model()
    hist = model.fit(DATA, optimizer=LBFGS(), epochs=100, validation=val, early_stopping=2,
                     verbose=0)
    assert hist.stop_reason == "early_stopping"
    best = int(np.argmin(hist.val_loss))
    assert hist.best_epoch == best and len(hist) == best + 1 + 2
    assert hist.best_loss == min(hist.val_loss)
    p = list(model.params.values())
    assert p == list(hist.best_params.values())
    assert _risk(p, xv, val[y]) == pytest.approx(hist.best_loss, rel=1e-12)


def test_a_non_finite_loss_stops_as_divergence():
    """-exp(a x) has no minimum: the line search's trial steps overflow to -inf."""
    model = sg.Model(loss=-sp.exp(a * x), params={a: 0.0}, data=[x])
    with pytest.warns(sg.DivergenceWarning, match="diverged at epoch"):
        hist = model.fit({x: np.ones(4)}, optimizer=LBFGS(), epochs=50, verbose=0)
    assert hist.stop_reason == "diverged"
    assert not math.isfinite(hist.loss[-1]) and all(map(math.isfinite, hist.loss[:-1]))
    assert math.isfinite(model.params[a])
    if hist.best_epoch is not None:
        assert model.params == hist.best_params


def test_a_non_finite_hvp_stops_and_restores_the_best():
    model = _model()
    reference = model.hvp
    calls = []

    def hvp(v, data, **kwargs):
        calls.append(1)
        return reference(v, data, **kwargs) * (np.nan if len(calls) == 5 else 1.0)  # 1: warm-up

    model.hvp = hvp
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = model.fit(DATA, optimizer=NewtonCG(), epochs=50, verbose=0)
    assert any(issubclass(w.category, sg.DivergenceWarning) for w in caught)
    assert hist.stop_reason == "diverged" and len(calls) == 5
    assert hist.best_epoch == int(np.nanargmin(hist.loss[:-1]))
    assert model.params == hist.best_params
    assert _risk(list(model.params.values())) == pytest.approx(hist.best_loss, rel=1e-12)


@pytest.mark.slow  # compiling a matrix model's loop: ~20 s on a busy machine
@pytest.mark.parametrize("optimizer", [LBFGS(), NewtonCG()], ids=["LBFGS", "NewtonCG"])
def test_second_order_methods_train_a_matrix_model(optimizer):
    n = sp.Symbol("n", integer=True, positive=True)
    X, Y = sp.MatrixSymbol("X", n, 3), sp.MatrixSymbol("Y", n, 1)
    w, b = sp.MatrixSymbol("w", 3, 1), sp.MatrixSymbol("b", 1, 1)
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(240, 3))
    ys = (xs @ [1.0, -2.0, 0.5] + 0.3 + rng.logistic(size=240) > 0).astype(float)[:, None]

    def risk(p, xs, ys):
        z = xs @ p[:3] + p[3]
        return np.mean(np.logaddexp(0.0, z) - ys[:, 0] * z) + 0.005 * p[:3] @ p[:3]

    model = sg.Model(sg.losses.bce_with_logits(X * w + b, Y) + 0.5 * 0.01 * sg.l2(w),
                     params={w: np.zeros((3, 1)), b: np.zeros((1, 1))}, data=[X, Y])
    hist = model.fit({X: xs[:200], Y: ys[:200]}, optimizer=optimizer, epochs=100, verbose=0,
                     validation={X: xs[200:], Y: ys[200:]})
    ref = so.minimize(risk, np.zeros(4), args=(xs[:200], ys[:200]), method="BFGS",
                      options={"gtol": 1e-10})
    p = np.concatenate([model.params[w].ravel(), model.params[b].ravel()])
    assert hist.stop_reason == "converged"
    assert np.allclose(p, ref.x, atol=1e-6)
    assert abs(hist.loss[-1] - ref.fun) <= 1e-12 * ref.fun
    assert hist.val_loss[-1] == pytest.approx(risk(p, xs[200:], ys[200:]), rel=1e-12)


def test_checkpoint_and_resume_restart_the_method_from_the_saved_parameters(tmp_path):
    path = tmp_path / "fit.sgm"
    model = _model()
    hist = model.fit(DATA, optimizer=LBFGS(maxcor=5), epochs=4, checkpoint=path,
                     checkpoint_every=3, verbose=0)
    assert hist.epoch == [0, 1, 2, 3] and model.epochs_trained == 4
    loaded = sg.load_model(path)
    assert loaded.params == model.params and loaded.epochs_trained == 4
    assert loaded.optimizer == LBFGS(maxcor=5)
    resumed = loaded.fit(DATA, epochs=100, verbose=0)  # the saved model's optimizer
    assert resumed.epoch[0] == 4 and resumed.stop_reason == "converged"
    p_opt, f_opt = _optimum()
    assert np.allclose(list(loaded.params.values()), p_opt, atol=1e-6)
    assert abs(resumed.loss[-1] - f_opt) <= 1e-12 * f_opt
    again = model.fit(DATA, epochs=2, initial_epoch=10, verbose=0)
    assert again.epoch == [10, 11] and model.epochs_trained == 12


@pytest.mark.slow  # Adam for 3 x 10,000 epochs
def test_second_order_needs_a_fifth_of_adams_gradients():
    """The issue's target on synthetic logistic regression (features from 3 latent factors,
    so strongly correlated, standardized; L2 1e-3): L-BFGS and Newton-CG reach scipy BFGS's
    optimum to 1e-8 relative in at most 1/5 of the gradient evaluations (an HVP counts as
    one) that Adam with the best of lr 1e-3, 1e-2, 1e-1 needs to get within 1e-4."""
    rng = np.random.default_rng(3)
    n, d, lam = 300, 8, 1e-3
    F = rng.normal(size=(n, 3)) @ rng.normal(size=(3, d)) + 0.1 * rng.normal(size=(n, d))
    F = (F - F.mean(axis=0)) / F.std(axis=0)
    T = (F @ rng.normal(size=d) + 0.5 + rng.logistic(size=n) > 0).astype(float)
    w, xs, t = sp.symbols(f"w0:{d + 1}"), sp.symbols(f"x0:{d}"), sp.Symbol("t")
    logit = sum(wi * xi for wi, xi in zip(w, xs)) + w[d]
    model = sg.Model(sg.losses.bce_with_logits(logit, t) + 0.5 * lam * sum(wi**2 for wi in w[:d]),
                     params=dict.fromkeys(w, 0.0), data=[*xs, t])
    data = {**dict(zip(xs, F.T)), t: T}

    def risk(p):
        z = F @ p[:d] + p[d]
        return np.mean(np.logaddexp(0.0, z) - T * z) + 0.5 * lam * p[:d] @ p[:d]

    best = so.minimize(risk, np.zeros(d + 1), method="BFGS", options={"gtol": 1e-10}).fun

    def evaluations(optimizer, epochs, tol):
        model.params = dict.fromkeys(w, 0.0)
        hist = model.fit(data, optimizer=optimizer, epochs=epochs, verbose=0)
        hit = np.flatnonzero((np.array(hist.loss) - best) / best <= tol)
        if not hit.size:
            return np.inf
        if not hist.n_gev:  # Adam, full batch: one gradient per epoch
            return hit[0] + 1
        return np.cumsum(np.add(hist.n_gev, hist.n_hvp))[hit[0]]

    adam = min(evaluations(sg.optim.Adam(lr=lr), 10_000, 1e-4) for lr in (1e-3, 1e-2, 1e-1))
    assert np.isfinite(adam)
    assert evaluations(LBFGS(), 200, 1e-8) <= adam / 5
    assert evaluations(NewtonCG(), 100, 1e-8) <= adam / 5
