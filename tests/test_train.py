"""The compiled trainer: optimizers against independent transcriptions, batching, fit()."""

import math
import os
import signal
import threading
import warnings

import numpy as np
import pytest
import sympy as sp
from conftest import requires

import symgrad as sg
from symgrad.kernels.loops import permute
from symgrad.train import optim

a, b, c, x, y = sp.symbols("a b c x y")
PRED = a * sp.tanh(b * x) + c
INIT = {a: 0.5, b: -0.3, c: 0.1}
RNG = np.random.default_rng(0)
XS = RNG.normal(size=64)
YS = 1.5 * np.tanh(0.8 * XS) - 0.2 + RNG.normal(scale=0.05, size=64)
DATA = {x: XS, y: YS}


def _model():
    return sg.Model(loss=(PRED - y) ** 2, params=dict(INIT), data=[x, y], prediction=PRED,
                    target=y)


def _grad_np(p, xs, ys):
    """Mean gradient of (a tanh(b x) + c - y)^2, by hand."""
    pa, pb, pc = p
    t = np.tanh(pb * xs)
    r = 2 * (pa * t + pc - ys)
    return np.array([np.mean(r * t), np.mean(r * pa * (1 - t**2) * xs), np.mean(r)])


def _numpy_run(name, hp, steps, xs=XS, ys=YS):
    """Each optimizer's formula transcribed in NumPy (torch.optim's formulation)."""
    p = np.array(list(INIT.values()))
    s1, s2, s3 = np.zeros(3), np.zeros(3), np.zeros(3)
    lr, wd, l1 = hp["lr"], hp.get("weight_decay", 0.0), hp.get("l1", 0.0)
    for t in range(1, steps + 1):
        g = _grad_np(p, xs, ys) + wd * p + l1 * np.sign(p)
        if name == "SGD":
            p = p - lr * g
        elif name in ("Momentum", "Nesterov"):
            mu = hp["momentum"]
            s1 = g if t == 1 else mu * s1 + g
            p = p - lr * (g + mu * s1 if name == "Nesterov" else s1)
        elif name == "Adagrad":
            s1 = s1 + g * g
            p = p - lr * g / (np.sqrt(s1) + hp["eps"])
        elif name == "RMSprop":
            s1 = hp["alpha"] * s1 + (1 - hp["alpha"]) * g * g
            p = p - lr * g / (np.sqrt(s1) + hp["eps"])
        elif name == "Adadelta":
            rho, eps = hp["rho"], hp["eps"]
            s1 = rho * s1 + (1 - rho) * g * g
            d = np.sqrt(s2 + eps) / np.sqrt(s1 + eps) * g
            s2 = rho * s2 + (1 - rho) * d * d
            p = p - lr * d
        else:
            b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
            s1 = b1 * s1 + (1 - b1) * g
            s2 = b2 * s2 + (1 - b2) * g * g
            mhat, vhat = s1 / (1 - b1**t), s2 / (1 - b2**t)
            if name == "AMSGrad":
                s3 = np.maximum(s3, s2)
                vhat = s3 / (1 - b2**t)
            p = p - lr * mhat / (np.sqrt(vhat) + eps)
    return p


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.01, l1=0.001)),
    ("Momentum", dict(lr=0.05, momentum=0.9)),
    ("Nesterov", dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("Adagrad", dict(lr=0.1, eps=1e-10)),
    ("RMSprop", dict(lr=0.01, alpha=0.99, eps=1e-8)),
    ("Adadelta", dict(lr=1.0, rho=0.9, eps=1e-6)),
    ("Adam", dict(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8)),
    ("Adam", dict(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)),
    ("AMSGrad", dict(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8)),
]


@pytest.mark.parametrize("name, hp", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_optimizer_matches_numpy_transcription(name, hp):
    model = _model()
    model.fit(DATA, optimizer=getattr(optim, name)(**hp), epochs=50, verbose=0)
    got = np.array(list(model.params.values()))
    want = _numpy_run(name, hp, 50)
    assert np.max(np.abs(got - want)) < 1e-10, (got, want)


@pytest.mark.parametrize("name, hp", [c for c in CONFIGS if "l1" not in c[1]],
                         ids=[f"{n}-{i}" for i, (n, h) in enumerate(CONFIGS) if "l1" not in h])
def test_optimizer_matches_torch(name, hp):
    torch = requires("torch")
    p = torch.tensor(list(INIT.values()), dtype=torch.float64, requires_grad=True)
    tx, ty = torch.tensor(XS), torch.tensor(YS)
    wd = hp.get("weight_decay", 0.0)
    if name == "SGD":
        opt = torch.optim.SGD([p], lr=hp["lr"], weight_decay=wd)
    elif name in ("Momentum", "Nesterov"):
        opt = torch.optim.SGD([p], lr=hp["lr"], momentum=hp["momentum"],
                              nesterov=name == "Nesterov", weight_decay=wd)
    elif name == "Adagrad":
        opt = torch.optim.Adagrad([p], lr=hp["lr"], eps=hp["eps"], weight_decay=wd)
    elif name == "RMSprop":
        opt = torch.optim.RMSprop([p], lr=hp["lr"], alpha=hp["alpha"], eps=hp["eps"],
                                  weight_decay=wd)
    elif name == "Adadelta":
        opt = torch.optim.Adadelta([p], lr=hp["lr"], rho=hp["rho"], eps=hp["eps"],
                                   weight_decay=wd)
    else:
        opt = torch.optim.Adam([p], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]),
                               eps=hp["eps"], weight_decay=wd, amsgrad=name == "AMSGrad")
    for _ in range(50):
        opt.zero_grad()
        loss = torch.mean((p[0] * torch.tanh(p[1] * tx) + p[2] - ty) ** 2)
        loss.backward()
        opt.step()
    model = _model()
    model.fit(DATA, optimizer=getattr(optim, name)(**hp), epochs=50, verbose=0)
    got = np.array(list(model.params.values()))
    assert np.max(np.abs(got - p.detach().numpy())) < 1e-10


def test_minibatches_match_numpy_with_the_same_order():
    model = _model()
    opt = optim.SGD(lr=0.1)
    model.fit(DATA, optimizer=opt, epochs=3, batch_size=10, seed=7, verbose=0)
    p = np.array(list(INIT.values()))
    steps = 0
    for epoch in range(3):
        order = np.empty(64, dtype=np.int64)
        permute(order, 7 * 1000003 + epoch)  # the trainer's seeded shuffle
        assert sorted(order) == list(range(64))
        for start in range(0, 64, 10):
            idx = order[start:start + 10]
            p = p - 0.1 * _grad_np(p, XS[idx], YS[idx])
            steps += 1
    assert opt.step[0] == steps == 21
    assert np.max(np.abs(np.array(list(model.params.values())) - p)) < 1e-12


def test_batch_modes_seeds_and_drop_last():
    runs = {}
    for key, kwargs in {
        "full": dict(batch_size=None),
        "mini": dict(batch_size=16, seed=1),
        "mini_again": dict(batch_size=16, seed=1),
        "mini_other_seed": dict(batch_size=16, seed=2),
        "sgd": dict(batch_size=1, seed=1),
    }.items():
        model = _model()
        opt = optim.SGD(lr=0.01)
        hist = model.fit(DATA, optimizer=opt, epochs=4, verbose=0, **kwargs)
        runs[key] = (np.array(list(model.params.values())), opt.step[0], hist.loss)
    assert runs["full"][1] == 4 and runs["mini"][1] == 16 and runs["sgd"][1] == 256
    assert np.array_equal(runs["mini"][0], runs["mini_again"][0])
    assert not np.array_equal(runs["mini"][0], runs["mini_other_seed"][0])
    model = _model()
    opt = optim.SGD(lr=0.01)
    model.fit(DATA, optimizer=opt, epochs=2, batch_size=30, drop_last=True, verbose=0)
    assert opt.step[0] == 4
    opt = optim.SGD(lr=0.01)
    model.fit(DATA, optimizer=opt, epochs=2, batch_size=30, drop_last=False, verbose=0)
    assert opt.step[0] == 6


def test_history_metrics_and_predict():
    model = _model()
    hist = model.fit(DATA, optimizer=optim.Adam(lr=0.05), epochs=30, metrics=["r2", "mse"],
                     validation={x: XS[:20], y: YS[:20]}, verbose=0)
    assert hist.epoch == list(range(30)) and len(hist.loss) == len(hist.val_loss) == 30
    assert len(hist.metrics["r2"]) == 30 and len(hist.val_metrics["mse"]) == 30
    assert hist.loss[-1] < hist.loss[0]
    pred = model.predict(PRED, {x: XS})
    p = model.params
    want = p[a] * np.tanh(p[b] * XS) + p[c]
    assert np.allclose(pred, want, rtol=1e-14)
    assert np.array_equal(model.predict(PRED, {"x": XS}), pred)
    with pytest.raises(sg.InputError, match="lacks the column"):  # not x, as fit says too
        model.predict(PRED, {sp.Symbol("x", positive=True): XS})
    assert hist.metrics["r2"][-1] == pytest.approx(sg.metrics.r2(YS, pred), rel=1e-9, abs=1e-9)
    assert model.evaluate(DATA) == pytest.approx(np.mean((want - YS) ** 2), rel=1e-12)
    assert hist.stop_reason == "completed" and "30 epochs" in hist.summary()


def test_early_stopping_restores_best_params():
    model = _model()
    xv = np.linspace(-3, 3, 40)
    yv = -2.0 * np.tanh(0.8 * xv)  # validation disagrees with training: val loss turns up
    hist = model.fit(DATA, optimizer=optim.Adam(lr=0.05), epochs=500,
                     validation={x: xv, y: yv}, early_stopping=5, verbose=0)
    assert hist.stop_reason == "early_stopping"
    assert len(hist) == hist.best_epoch + 6
    assert hist.best_loss == min(hist.val_loss)
    assert model.params == hist.best_params
    assert model.evaluate({x: xv, y: yv}) == pytest.approx(hist.best_loss, rel=1e-12)


def test_divergence_stops_with_warning_and_keeps_work():
    model = _model()
    with pytest.warns(sg.DivergenceWarning, match=r"diverged at epoch \d+.*smaller learning"):
        hist = model.fit({x: XS * 1e3, y: YS}, optimizer=optim.SGD(lr=1e6), epochs=100,
                         verbose=0)
    assert hist.stop_reason == "diverged" and len(hist) < 100
    assert not math.isfinite(hist.loss[-1])
    assert all(math.isfinite(v) for v in model.params.values())
    assert model.params == hist.best_params


def test_callbacks_and_interrupt():
    seen = []

    def stop_at_three(epoch, logs):
        seen.append((epoch, logs["loss"]))
        return epoch == 3

    model = _model()
    hist = model.fit(DATA, optimizer=optim.SGD(lr=0.1), epochs=10, callbacks=[stop_at_three],
                     verbose=0)
    assert hist.stop_reason == "callback" and len(hist) == 4
    assert [e for e, _ in seen] == [0, 1, 2, 3]

    def ctrl_c(epoch, logs):
        if epoch == 2:
            raise KeyboardInterrupt

    model = _model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = model.fit(DATA, optimizer=optim.SGD(lr=0.1), epochs=10, callbacks=[ctrl_c],
                         verbose=0)
    assert hist.stop_reason == "interrupted" and len(hist) == 3
    assert any("interrupted" in str(w.message) for w in caught)
    assert hist.best_params and model.history is hist
    assert model.params == hist.best_params  # restored, as after divergence


# -- lost or wrong work (issue 14) -------------------------------------------------------------

w, v = sp.symbols("w v")
LINE_X = RNG.normal(size=50)
LINE = {x: LINE_X, y: 3 * LINE_X + 1 + 0.1 * RNG.normal(size=50)}


def _line(lr=5.0):
    return sg.Model((w * x + v - y) ** 2, {w: 0.0, v: 0.0}, [x, y], optimizer=optim.SGD(lr=lr))


def test_divergence_keeps_the_parameters_best_loss_belongs_to():
    """SGD(lr=5) on a line diverges: best_loss is epoch 0's, measured before its update, so
    the kept parameters are the ones the epoch started from (it kept those after it)."""
    model = _line()
    with pytest.warns(sg.DivergenceWarning):
        hist = model.fit(LINE, epochs=1000, verbose=0)
    assert hist.stop_reason == "diverged"
    assert model.params == hist.best_params
    assert model.evaluate(LINE) == hist.best_loss  # full batch: exactly the epoch's loss
    assert hist.best_loss == min(hist.loss[:-1])
    want = np.mean((0.0 * LINE_X + 0.0 - LINE[y]) ** 2)  # the loss at the initial values
    assert hist.best_epoch == 0 and hist.best_loss == pytest.approx(want, rel=1e-13)


def test_best_parameters_are_where_the_best_epoch_started():
    """Full batch without validation: best_params are the parameters after best_epoch
    epochs (found again by a fresh run of that many epochs), their loss is best_loss; with
    minibatches the same parameters are kept, the ones the best epoch started from."""
    for batch_size in (None, 16):
        model = _line(lr=0.02)
        hist = model.fit(LINE, epochs=40, batch_size=batch_size, early_stopping=3, verbose=0)
        again = _line(lr=0.02)
        again.fit(LINE, epochs=hist.best_epoch, batch_size=batch_size, verbose=0)
        assert again.params == hist.best_params
        if batch_size is None:
            assert again.evaluate(LINE) == hist.best_loss


def test_divergence_within_an_epoch_keeps_its_best_loss():
    """An epoch whose loss is finite but whose update overflows still counts: its loss and
    the parameters it started from are kept (they were lost: the parameters stayed -inf)."""
    model = sg.Model(sp.exp(w * x), {w: 709.0}, [x], optimizer=optim.SGD(lr=10.0))
    data = {x: np.array([1.0])}
    with pytest.warns(sg.DivergenceWarning):
        hist = model.fit(data, epochs=5, verbose=0)
    assert hist.stop_reason == "diverged" and len(hist) == 1 and hist.best_epoch == 0
    assert model.params == {w: 709.0} and model.evaluate(data) == hist.best_loss
    assert hist.best_loss == pytest.approx(math.exp(709.0), rel=1e-15)


def test_interrupt_restores_the_best_parameters():
    """Ctrl-C kept the last parameters, while the README promised the best ones."""
    def ctrl_c(epoch, logs):
        if epoch == 3:
            raise KeyboardInterrupt

    model = _line(lr=1.2)  # too large a step: the loss grows from epoch 0 on
    with pytest.warns(RuntimeWarning, match="interrupted after 4 epochs"):
        hist = model.fit(LINE, epochs=10, callbacks=[ctrl_c], verbose=0)
    assert hist.stop_reason == "interrupted" and hist.best_epoch == 0
    assert model.params == {w: 0.0, v: 0.0} == hist.best_params
    assert model.evaluate(LINE) == hist.best_loss == hist.loss[0] < hist.loss[3]


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler, as in a user's process. symgrad holds Ctrl-C only over
    that one and leaves any other handler alone; with every extra installed, some earlier test
    of the full suite (a library's helper process machinery) sometimes leaves SIGINT ignored
    in this process, so these tests set the default themselves and put back what was there."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_during_the_compiled_loop_keeps_every_epoch_it_ran(default_sigint):
    """A real Ctrl-C while the compiled loop runs: it is held until the chunk of epochs
    returns, so every epoch run is in the History (the chunk in flight was lost)."""
    model = _line(lr=1e-6)  # a loss that falls every epoch: the best epoch is the last run
    model.fit(LINE, epochs=1, verbose=0)  # compiled before the Ctrl-C comes
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.warns(RuntimeWarning, match="interrupted"):
            hist = model.fit(LINE, epochs=2_000_000, verbose=0)
    finally:
        timer.cancel()
    assert hist.stop_reason == "interrupted" and 0 < len(hist) < 2_000_000
    assert hist.best_epoch == hist.epoch[-1] and hist.best_loss == hist.loss[-1]  # the last
    assert model.params == hist.best_params
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_between_epochs_stops_there(default_sigint):
    def press_ctrl_c(epoch, logs):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, held until the epoch ends

    model = _model()
    with pytest.warns(RuntimeWarning, match="interrupted after 3 epochs"):
        hist = model.fit(DATA, optimizer=optim.SGD(lr=0.1), epochs=10,
                         callbacks=[press_ctrl_c], verbose=0)
    assert hist.stop_reason == "interrupted" and len(hist) == 3
    assert model.params == hist.best_params and hist.best_epoch == 2


def test_sigint_during_the_first_compile_is_a_clean_keyboard_interrupt(default_sigint):
    """Ctrl-C while the model's code compiles: the compile finishes (Numba cannot be
    interrupted safely), then fit raises KeyboardInterrupt; the next fit works."""
    model = _model()
    blocks = model._blocks

    def interrupted_blocks():
        os.kill(os.getpid(), signal.SIGINT)
        return blocks()  # loads the module: compiles the block kernel

    model._blocks = interrupted_blocks
    with pytest.raises(KeyboardInterrupt):
        model.fit(DATA, optimizer=optim.SGD(lr=0.1), epochs=5, verbose=0)
    assert model.history is None and model.params == INIT
    assert "compile_s" in model.timings  # the compile ran to its end: Numba's state is whole
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    model._blocks = blocks
    hist = model.fit(DATA, optimizer=optim.SGD(lr=0.1), epochs=5, verbose=0)
    fresh = _model()
    fresh.fit(DATA, optimizer=optim.SGD(lr=0.1), epochs=5, verbose=0)
    assert hist.stop_reason == "completed" and model.params == fresh.params


def test_a_callback_that_raises_is_recorded_and_reraised():
    def broken(epoch, logs):
        if epoch == 2:
            raise ValueError("callback bug")

    model = _model()
    with pytest.raises(ValueError, match="callback bug"):
        model.fit(DATA, optimizer=optim.SGD(lr=0.1), epochs=10, callbacks=[broken], verbose=0)
    hist = model.history
    assert hist.stop_reason == "error" and len(hist) == 3
    assert hist.best_params and model.params == hist.best_params


@pytest.mark.parametrize(
    "data, message",
    [
        ({x: [1.0, np.nan], y: [1.0, 2.0]}, "column x holds NaN at index 1"),
        ({x: [1.0, np.inf], y: [1.0, 2.0]}, "column x holds inf at index 1"),
        ({x: [1.0, 2.0], y: [1.0]}, "different lengths"),
        ({x: [1.0, 2.0]}, "lacks the column"),
        ({x: [1.0], y: [1.0], "z": [1.0]}, "not a data symbol"),
        ({x: ["a", "b"], y: [1.0, 2.0]}, "dtype"),
        ({x: np.ones((2, 2)), y: [1.0, 2.0]}, "1-D"),
        ([1.0, 2.0], "dict"),
    ],
)
def test_bad_data_is_refused_before_compiling(data, message):
    model = _model()
    with pytest.raises(sg.InputError, match=message):
        model.fit(data, epochs=1, verbose=0)
    with pytest.raises(sg.InputError, match=message):
        model.prepare(data)
    assert model.pipeline.steps == ("build", "differentiate")  # nothing printed or written


def test_prepared_data_trains_bit_identically_to_the_dict():
    """Shuffled minibatches with validation and metrics, then evaluate, predict and the HVP's
    data: a prepared set gives exactly the numbers the dict does."""
    runs = []
    for prepared in (False, True):
        model = _model()
        train, val = DATA, {x: XS[:20], y: YS[:20]}
        if prepared:
            train, val = model.prepare(train), model.prepare(val)
        hist = model.fit(train, optimizer=optim.Adam(lr=0.05), epochs=6, batch_size=10, seed=3,
                         validation=val, metrics=["r2"], verbose=0)
        runs.append((list(model.params.values()), hist.loss, hist.val_loss,
                     hist.metrics["r2"], model.evaluate(train), model.predict(data=val),
                     model._hvp_data(train)))
    dict_run, prepared_run = runs
    for got, want in zip(prepared_run, dict_run):
        assert np.array_equal(got, want)
    assert len(model.prepare(DATA)) == 64


def test_prepared_data_is_a_copy_and_belongs_to_its_layout():
    xs, ys = XS.copy(), YS.copy()
    model = _model()
    prepared = model.prepare({"x": xs, y: ys})
    xs[:] = np.nan  # the user's arrays change afterwards: the prepared set does not
    ys[0] = 1e9
    assert np.array_equal(model._hvp_data(prepared), np.vstack([XS, YS]))
    assert model.evaluate(prepared) == model.evaluate(DATA)
    assert _model().evaluate(prepared) == model.evaluate(DATA)  # a twin model takes it
    other = sg.Model(loss=(a * x - 1) ** 2, params={a: 0.5}, data=[x])
    with pytest.raises(sg.InputError, match=r"prepared for a model with other data.*"
                       r"model\.prepare\(data\)"):
        other.fit(prepared, verbose=0)
    with pytest.raises(sg.InputError, match="with client= pass a dict of dask arrays"):
        sg.train.data.match_columns(prepared, [x, y])


def test_all_finite_is_the_entrywise_check():
    from symgrad.train.data import all_finite

    big = np.full(4, 3e38, dtype=np.float32)  # finite entries whose sum overflows to inf
    assert all_finite(big) and all_finite(np.arange(5)) and all_finite(np.ones((3, 2)))
    for bad in (np.nan, np.inf, -np.inf):
        for dtype in (np.float32, np.float64):
            a = np.ones((7, 3), dtype=dtype)
            a[5, 1] = bad
            assert not all_finite(a) and not all_finite(a.T)


def test_model_definition_errors():
    with pytest.raises(sg.ExpressionError, match="neither a parameter nor a data column"):
        sg.Model(loss=(PRED - y) ** 2, params={a: 1.0, b: 1.0}, data=[x, y])
    with pytest.raises(sg.ExpressionError, match="both a parameter and a data column"):
        sg.Model(loss=(PRED - y) ** 2, params=dict(INIT), data=[x, y, a])
    with pytest.raises(ValueError, match="lr must be > 0"):
        optim.Adam(lr=0)
    with pytest.raises(ValueError, match="epochs"):
        _model().fit(DATA, epochs=-1)
    with pytest.raises(ValueError, match="unknown metric"):
        _model().fit(DATA, metrics=["auc"], verbose=0)


def test_listing_and_source():
    model = _model()
    assert "grad_loss = 1.0" in model.listing()
    src = model.source
    assert "def train(" in src and "def update(" in src and "loss_and_grad_sum" in src
    assert "Adam" in src


def test_parallel_loop_over_many_samples_matches_numpy():
    """From PARALLEL_FROM samples per batch the sums run in prange; same result to rounding."""
    from symgrad.train.model import PARALLEL_FROM

    rng = np.random.default_rng(3)
    n = PARALLEL_FROM + 1000
    xs = rng.normal(size=n)
    ys = 1.5 * np.tanh(0.8 * xs) - 0.2
    model = _model()
    model.fit({x: xs, y: ys}, optimizer=optim.Adam(lr=0.05), epochs=5, verbose=0)
    assert model.timings["parallel"] is True  # the kernel's prange loop over blocks ran
    want = _numpy_run("Adam", dict(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8), 5, xs, ys)
    assert np.max(np.abs(np.array(list(model.params.values())) - want)) < 1e-10


def test_block_kernel_sums_samples_in_one_vectorized_pass(tmp_path):
    """The block kernel adds each sample's loss and gradient to running sums: its loop over
    samples is packed double arithmetic with plain loads (no gathers), no libm calls, the
    sums reassociable and the model's own arithmetic exact IEEE; its sums over any range of
    samples match sympy's derivatives evaluated by NumPy."""
    import re

    from symgrad.kernels.trainer import BLOCK_SIZE, loss_and_grad_sum

    loss = (a * sp.exp(-b * x) * sp.sin(c * x) - y) ** 2
    params = {a: 1.5, b: 0.2, c: 2.9}
    model = sg.Model(loss=loss, params=params, data=[x, y], cache_dir=tmp_path / "cache")
    m = model.trainer
    rng = np.random.default_rng(5)
    n = 2 * BLOCK_SIZE + 3  # ranges of one, two and three blocks
    data = np.vstack([rng.uniform(0, 10, n), rng.normal(size=n)])
    values = np.array(list(params.values()))
    terms = [loss] + [sp.diff(loss, p) for p in params]
    f = sp.lambdify([x, y], [t.subs(params) for t in terms], "numpy")
    per_sample = np.array(f(data[0], data[1]))
    grad = np.empty(3)
    for lo, hi in ((0, n), (5, 518), (5, BLOCK_SIZE + 9), (n - 6, n), (7, 7)):
        total = loss_and_grad_sum(m.block, m.exact, m.HAS_EXACT, False, values, data, lo, hi,
                                  grad)
        want = per_sample[:, lo:hi].sum(axis=1)
        np.testing.assert_allclose([total, *grad], want, rtol=1e-12, atol=1e-12)
    ir = m.block.inspect_llvm()  # compiled just now (a fresh cache), so Numba keeps the IR
    assert re.search(r"fadd reassoc[\w ]* <\d+ x double>", ir), "the sums did not vectorize"
    assert re.search(r"= fmul <\d+ x double>", ir), "the model's arithmetic is not strict"
    assert "gather" not in ir
    assert not re.search(r"call [^@]*@(exp|sin|cos)\b", ir)


def test_progress_bar_for_runs_longer_than_a_second(capsys):
    import time as _time

    model = _model()
    hist = model.fit(DATA, optimizer=optim.SGD(lr=0.01), epochs=3, verbose=1,
                     callbacks=[lambda epoch, logs: _time.sleep(0.4)])
    err = capsys.readouterr().err
    assert len(hist) == 3 and "3/3" in err and "epoch" in err and "loss=" in err
    model.fit(DATA, optimizer=optim.SGD(lr=0.01), epochs=3, verbose=0,
              callbacks=[lambda epoch, logs: _time.sleep(0.4)])
    assert "3/3" not in capsys.readouterr().err


def test_block_kernels_use_the_cheap_exp_without_a_libm_twin(tmp_path):
    """In loops over samples exp is vecmath.vexp_fast, valid over the whole domain: no libm
    block is generated for it (sin/cos, valid up to 2**40, need one); compiled functions
    keep vexp."""
    w = sp.Symbol("w")
    model = sg.Model(loss=(sp.exp(w * x) - y) ** 2, params={w: 0.5}, data=[x, y],
                     cache_dir=tmp_path)
    src = model.source
    assert "\nexp = vexp_fast\n" in src and "HAS_EXACT = False" in src
    assert "def exact(" not in src
    f = sg.compile(sp.exp(w * x), wrt=[w], fast_math=True, cache_dir=tmp_path)
    assert "\nexp = vexp\n" in f.source


def test_huge_sin_arguments_fall_back_to_libm():
    """Beyond the fast sin/cos range a block is recomputed with libm: same result as NumPy."""
    xs = np.concatenate([np.linspace(0, 1, 600), np.full(100, 1e15) + np.arange(100)])
    ys = np.sin(0.7 * xs)
    w = sp.Symbol("w")
    model = sg.Model(loss=(sp.sin(w * x) - y) ** 2, params={w: 0.5}, data=[x, y])
    assert "def exact(" in model.source  # the block kernel with libm's sin/cos
    model.fit({x: xs, y: ys}, optimizer=optim.SGD(lr=1e-14), epochs=1, verbose=0)
    r = np.sin(0.5 * xs) - ys
    grad = np.mean(2 * r * np.cos(0.5 * xs) * xs)
    assert model.history.loss[0] == pytest.approx(np.mean(r**2), rel=1e-12)
    assert abs(1e-14 * grad) > 1e-2
    assert model.params[w] == pytest.approx(0.5 - 1e-14 * grad, rel=1e-12)
    assert math.isfinite(model.history.loss[0])


@pytest.mark.parametrize("make, message", [
    (lambda: optim.Adam(beta1=2.0), r"Adam.beta1 must be in \[0, 1\), got 2.0"),
    (lambda: optim.AMSGrad(beta2=1.0), r"AMSGrad.beta2 must be in \[0, 1\)"),
    (lambda: optim.SGD(lr=-0.1), r"SGD.lr must be > 0 and finite, got -0.1"),
    (lambda: optim.SGD(lr=math.inf), r"SGD.lr must be > 0 and finite, got inf"),
    (lambda: optim.Momentum(momentum=1.5), r"Momentum.momentum must be in \[0, 1\)"),
    (lambda: optim.Nesterov(weight_decay=math.nan), r"Nesterov.weight_decay must be >= 0"),
    (lambda: optim.Adagrad(eps=0.0), r"Adagrad.eps must be > 0"),
    (lambda: optim.Adagrad(initial_accumulator_value=-1), r"initial_accumulator_value must"),
    (lambda: optim.RMSprop(alpha=-0.5), r"RMSprop.alpha must be in \[0, 1\)"),
    (lambda: optim.Adadelta(rho=1.01), r"Adadelta.rho must be in \[0, 1\]"),
    (lambda: optim.SGD(l1="0.1"), r"SGD.l1 must be a number"),
])
def test_optimizer_hyperparameters_are_checked(make, message):
    """Adam(beta1=2.0) was accepted (issue 14); each field has a range, named in the error."""
    with pytest.raises(sg.InputError, match=message):
        make()


def test_hyperparameters_set_after_construction_are_checked_by_fit():
    """A negative lr set after construction trained uphill and reported "completed"."""
    opt = optim.SGD(lr=0.1)
    opt.lr = -0.1
    model = _model()
    with pytest.raises(sg.InputError, match="SGD.lr must be > 0"):
        model.fit(DATA, optimizer=opt, epochs=5, verbose=0)
    assert model.params == INIT and model.history is None
    model.optimizer.beta1 = 1.0  # the model's default Adam
    with pytest.raises(sg.InputError, match="Adam.beta1 must be in"):
        model.fit(DATA, epochs=5, verbose=0)
    assert optim.Adadelta(rho=1.0).hyper().tolist() == [1.0, 0.0, 0.0, 1.0, 1e-6]  # bounds ok


@pytest.mark.parametrize("loss, marker", [
    # grad_s10 = 2*grad_loss*s10, grad_s7 = grad_s8*a: 2 and 2*a multiply the sums
    ((a * sp.exp(-b * x) * sp.sin(c * x + 0.5) - y) ** 2, "*_sum"),
    # a used three times (grad_a += ...): the factors go back into those lines
    ((a * sp.exp(-b * x) * sp.sin(c * x) - y) ** 2 + 3 * a * b * x**2 - c * sp.cos(a * x),
     "grad_a += _scale"),
])
def test_block_takes_constant_factors_out_of_its_sums(tmp_path, loss, marker):
    """Factors the same for every sample (numbers, parameters) leave the loop and multiply
    the sums once, or go back into lines that add adjoints. The sums (block, exact block,
    hvp block) match sympy's derivatives evaluated by NumPy."""
    from symgrad.kernels.trainer import loss_and_grad_sum

    params = {a: 1.5, b: 0.2, c: 2.9}
    model = sg.Model(loss=loss, params=params, data=[x, y], cache_dir=tmp_path / "cache")
    block = model.generated.source.split("def block(")[1].split("def exact(")[0]
    assert "_scale0 = " in block and marker in block
    m = model.trainer
    rng = np.random.default_rng(8)
    data = np.vstack([rng.uniform(0, 10, 5000), rng.normal(size=5000)])
    values = np.array(list(params.values()))
    terms = [loss] + [sp.diff(loss, p) for p in params]
    f = sp.lambdify([x, y], [t.subs(params) for t in terms], "numpy")
    grad = np.empty(3)
    far = data.copy()
    far[0, 7] = 1e13  # past the fast sin's range: that block is the exact (libm) one
    for cols, rtol in ((data, 1e-12), (far, 1e-9)):
        total = loss_and_grad_sum(m.block, m.exact, m.HAS_EXACT, False, values, cols, 0,
                                  5000, grad)
        want = np.array(f(cols[0], cols[1])).sum(axis=1)
        np.testing.assert_allclose([total, *grad], want, rtol=rtol)
    v = np.array([0.3, -1.0, 2.0])
    hv = sp.lambdify([x, y], list(sp.hessian(loss, list(params)).subs(params) * sp.Matrix(v)),
                     "numpy")
    want = [np.mean(np.broadcast_to(t, data[0].shape)) for t in hv(data[0], data[1])]
    np.testing.assert_allclose(model.hvp(v, {x: data[0], y: data[1]}), want, rtol=1e-10)


def test_block_keeps_a_finite_gradient_where_a_forward_product_overflows(tmp_path):
    """(Why block kernels do not reuse the forward pass's products in adjoints: tried and
    reverted.) A logistic curve written by hand, 1/(1 + a*exp(b*x)): at x = 690 the
    product p = a*exp(b*x) overflows to inf while exp(b*x) (1e299) and the loss (y**2) are
    finite, and grad_p = -0. The gradient with respect to b, (grad_p*a)*exp(b*x) per
    sample, is -0 there, not grad_p*p = -0*inf = nan. Sums against mpmath (each sample's
    terms at 60 digits)."""
    import mpmath

    from symgrad.kernels.trainer import loss_and_grad_sum

    loss = (1 / (1 + a * sp.exp(b * x)) - y) ** 2
    model = sg.Model(loss=loss, params={a: 1e10, b: 1.0}, data=[x, y],
                     cache_dir=tmp_path / "cache")
    m = model.trainer
    cols = np.array([[690.0, 1.0, 2.0, 3.0], [0.5, 0.1, 0.2, 0.3]])
    grad = np.empty(2)
    total = loss_and_grad_sum(m.block, m.exact, m.HAS_EXACT, False, np.array([1e10, 1.0]),
                              cols, 0, 4, grad)
    with mpmath.workdps(60):
        want = [mpmath.mpf(0)] * 3
        for xi, yi in cols.T:
            p = mpmath.mpf(1e10) * mpmath.exp(mpmath.mpf(xi))
            r = 1 / (1 + p) - mpmath.mpf(yi)
            dp = -2 * r / (1 + p) ** 2  # d loss / d p
            want = [want[0] + r ** 2, want[1] + dp * p / mpmath.mpf(1e10), want[2] + dp * p * xi]
    np.testing.assert_allclose([total, *grad], [float(w) for w in want], rtol=1e-12)


@pytest.mark.parametrize("xi, yi", [(370.0, 1e300), (371.0, 1e302), (373.0, 1e308)])
def test_block_keeps_a_precise_gradient_where_a_forward_product_underflows(tmp_path, xi, yi):
    """Review of s10-w4: y*exp(-a*x)*exp(-b*x) (+ sin(x)**2, so a fallback block exists): at
    x = 370..373 each exp is a normal number (~1e-161) but their product p is subnormal (or
    0 at 373) while y*p is not; the plain adjoint (grad_p*exp(-b*x))*exp(-a*x) keeps every
    bit, grad_p*p only p's few (4 % off at 371, 0 at 373), and nothing there is non-finite
    for the fallback to catch. The gradient's sums against mpmath (50 digits)."""
    import mpmath

    from symgrad.kernels.trainer import loss_and_grad_sum

    loss = y * sp.exp(-a * x) * sp.exp(-b * x) + sp.sin(x) ** 2
    model = sg.Model(loss=loss, params={a: 1.0, b: 1.0}, data=[x, y],
                     cache_dir=tmp_path / "cache")
    m = model.trainer
    assert m.HAS_EXACT
    grad = np.empty(2)
    loss_and_grad_sum(m.block, m.exact, m.HAS_EXACT, False, np.array([1.0, 1.0]),
                      np.array([[xi], [yi]]), 0, 1, grad)
    with mpmath.workdps(50):
        want = float(-mpmath.mpf(xi) * mpmath.mpf(yi) * mpmath.exp(-2 * mpmath.mpf(xi)))
    np.testing.assert_allclose(grad, [want, want], rtol=1e-12)


def test_fit_runs_on_one_core_when_all_cores_are_slower(monkeypatch):
    """From PARALLEL_FROM samples fit tries both ways (all cores, one) and keeps the faster;
    both give the same sums, so the parameters are the same bits whichever ran."""
    import time as _time

    import symgrad.kernels.trainer as kt
    import symgrad.train.model as tm

    rng = np.random.default_rng(4)
    n = tm.PARALLEL_FROM + 3 * kt.BLOCK_SIZE + 5
    xs = rng.normal(size=n)
    ys = 1.5 * np.tanh(0.8 * xs) - 0.2
    real = kt.train
    ran = []

    def slow_on_all_cores(block, exact, has_exact, parallel, *rest):
        ran.append((parallel, rest[-10]))  # (all cores?, epochs)
        if parallel and rest[-10]:
            _time.sleep(0.02 * rest[-10])  # as if other processes kept a core busy
        return real(block, exact, has_exact, parallel, *rest)

    monkeypatch.setattr(tm, "PROBE_BUDGET", 0.5)  # try the other way often
    model = _model()
    model.fit({x: xs, y: ys}, optimizer=optim.Adam(lr=0.05), epochs=2, verbose=0)  # compiled
    model = _model()
    monkeypatch.setattr(kt, "train", slow_on_all_cores)
    every = [lambda epoch, logs: None]  # a callback: one epoch per call of the loop
    hist = model.fit({x: xs, y: ys}, optimizer=optim.Adam(lr=0.05), epochs=40, verbose=0,
                     callbacks=every)
    monkeypatch.setattr(kt, "train", real)
    epochs = {p: sum(e for q, e in ran if q == p) for p in (True, False)}
    assert len(hist) == 40 and epochs[False] > epochs[True] > 0
    assert not ran[-1][0]  # the last run of epochs was on one core
    # the model says how its epochs ran (the compile's empty run counts none)
    assert model.timings["epochs_on_cores"] == {"all": epochs[True], "one": epochs[False]}
    monkeypatch.setattr(tm, "PARALLEL_FROM", 10**12)  # one core throughout
    serial = _model()
    serial.fit({x: xs, y: ys}, optimizer=optim.Adam(lr=0.05), epochs=40, verbose=0)
    assert serial.timings["epochs_on_cores"] == {"all": 0, "one": 40}
    assert list(model.params.values()) == list(serial.params.values())
    assert hist.loss == serial.history.loss


def test_block_factors_stay_small_in_a_deep_chain(tmp_path):
    """In a chain h <- tanh(w_k h) every layer's adjoint is the next one's times a weight:
    the factor carried out of the sums stops at FACTOR_PARAMS_UP_TO weights (the line
    after gets it back), instead of the product of all the weights above, one name per
    layer (quadratic code, and a product that can overflow where the per-sample one does
    not). The sums against backpropagation written out in NumPy."""
    import re

    from symgrad.emit.module import FACTOR_PARAMS_UP_TO
    from symgrad.kernels.trainer import loss_and_grad_sum

    depth = 12
    ws = sp.symbols(f"w0:{depth}")
    w0 = np.linspace(0.9, 1.4, depth)
    h = x
    for w in ws:
        h = sp.tanh(w * h)
    model = sg.Model(loss=(h - y) ** 2, params=dict(zip(ws, w0)), data=[x, y],
                     cache_dir=tmp_path / "cache")
    block = model.generated.source.split("def block(")[1].split("def exact(")[0]
    factors = re.findall(r"^ *_scale\d+ = (.*)$", block, re.M)
    assert factors and all(len(re.findall(r"\bw\d+\b", f)) <= FACTOR_PARAMS_UP_TO
                           for f in factors), factors
    rng = np.random.default_rng(5)
    xs, ys = rng.normal(size=3000), rng.normal(size=3000)
    hs = [xs]
    for w in w0:
        hs.append(np.tanh(w * hs[-1]))
    delta = 2 * (hs[-1] - ys)
    want = np.empty(depth)
    for k in reversed(range(depth)):
        delta = delta * (1 - hs[k + 1] ** 2)  # through tanh
        want[k] = np.sum(delta * hs[k])
        delta = delta * w0[k]
    m, grad = model.trainer, np.empty(depth)
    total = loss_and_grad_sum(m.block, m.exact, m.HAS_EXACT, False, w0, np.vstack([xs, ys]), 0,
                              3000, grad)
    assert total == pytest.approx(np.sum((hs[-1] - ys) ** 2), rel=1e-13)
    np.testing.assert_allclose(grad, want, rtol=1e-12)


def test_fit_keeps_what_it_measured_for_the_next_fit(monkeypatch):
    """From PARALLEL_FROM samples the first two epochs run on all cores (the first starts
    the threads, untimed) and the one after them is tried on one core; in a loop of
    fit(epochs=1) calls that try comes in the third call (what was measured stays with the
    model); after it, a call on one core only if one core was faster."""
    import symgrad.kernels.trainer as kt
    import symgrad.train.model as tm

    rng = np.random.default_rng(6)
    xs = rng.normal(size=tm.PARALLEL_FROM + 5)
    ys = 1.5 * np.tanh(0.8 * xs) - 0.2
    real, ran = kt.train, []

    def record(block, exact, has_exact, parallel, *rest):
        ran.append((parallel, rest[-10]))  # (all cores?, epochs)
        return real(block, exact, has_exact, parallel, *rest)

    monkeypatch.setattr(kt, "train", record)
    monkeypatch.setattr(tm, "PROBE_BUDGET", 0.0)  # one try only: the fourth call is not one
    model = _model()
    for _ in range(3):
        model.fit({x: xs, y: ys}, epochs=1, verbose=0)
    per_epoch, spent = next(iter(model._epoch_times.values()))
    faster_on_all_cores = per_epoch[True] <= per_epoch[False]  # as measured so far
    model.fit({x: xs, y: ys}, epochs=1, verbose=0)
    runs = [parallel for parallel, epochs in ran if epochs]
    assert len(runs) == 4 and runs[:3] == [True, True, False]
    assert runs[3] == faster_on_all_cores
    assert spent[0] > 0 and spent[1] > 0
