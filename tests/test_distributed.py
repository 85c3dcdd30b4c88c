"""Data-parallel training on a real Dask LocalCluster (2 worker processes, 1 thread each):
the same loss, gradient and trajectory as a local fit, the module imported once per worker,
the local fit's errors, History and stopping rules, and a worker killed during a fit."""

import math
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from conftest import requires

import symgrad as sg
from symgrad.kernels.loops import permute
from symgrad.train import distributed as dist
from symgrad.train import optim

requires("dask")
requires("distributed")
import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

a, b, c, x, y = sp.symbols("a b c x y")
PRED = a * sp.tanh(b * x) + c
INIT = {a: 0.5, b: -0.3, c: 0.1}
RNG = np.random.default_rng(7)
XS = RNG.normal(size=1000)
YS = 1.5 * np.tanh(0.8 * XS) - 0.2 + RNG.normal(scale=0.05, size=1000)
XV, YV = XS[:200] * 1.3, -YS[:200]  # validation that disagrees: its loss turns up


def _model(**kw):
    return sg.Model(loss=(PRED - y) ** 2, params=dict(INIT), data=[x, y], prediction=PRED,
                    target=y, **kw)


def _chunked(*arrays, chunks=300):
    return [da.from_array(v, chunks=chunks) for v in arrays]


def _gap(got, want) -> float:
    """The issue's norm-wise tolerance: max |a - b| / max(1, max |b|)."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return float(np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want))))


def _vector(params) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in params.values()])


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dask's notes about ports and memory limits
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    with Client(cluster) as c:
        yield c
    cluster.close()


def test_dask_is_imported_only_when_a_client_is_given():
    code = ("import sys, numpy as np, sympy as sp, symgrad as sg; x, y, w = sp.symbols('x y w');"
            "m = sg.Model((w * x - y) ** 2, {w: 0.0}, [x, y]);"
            "m.fit({x: np.ones(4), y: np.ones(4)}, epochs=1, verbose=0);"
            "assert not any(k.split('.')[0] in ('dask', 'distributed') for k in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr


# -- the same numbers ------------------------------------------------------------------------

def test_loss_and_gradient_sums_equal_one_process(client):
    model = _model()
    job = dist.Job(model, client)
    X, Y = _chunked(XS, YS, chunks=170)
    shards = job.shards({x: X, y: Y}, "data")
    assert shards.rows == [170] * 5 + [150] and len(shards.groups) == 2
    got = job.sums(shards, model._values, [(0, r, -1) for r in shards.rows])
    grad = np.empty(3)
    loss = model.loss_and_grad_sum(model._values, np.vstack([XS, YS]), grad)
    assert _gap(got, [loss, *grad]) < 1e-12
    t = np.tanh(-0.3 * XS)  # and by hand, independently of the compiled code
    r = 0.5 * t + 0.1 - YS
    assert _gap(got, [np.sum(r**2), np.sum(2 * r * t), np.sum(2 * r * 0.5 * (1 - t**2) * XS),
                      np.sum(2 * r)]) < 1e-12
    assert _gap(model.evaluate({x: X, y: Y}, client=client), np.mean(r**2)) < 1e-12


def test_100_adam_steps_match_the_local_fit_and_compile_once(client):
    local = _model()
    h_local = local.fit({x: XS, y: YS}, optimizer=optim.Adam(lr=0.01), epochs=100, verbose=0)
    model = _model()
    X, Y = _chunked(XS, YS)
    hist = model.fit({x: X, y: Y}, optimizer=optim.Adam(lr=0.01), epochs=100, verbose=0,
                     client=client)
    assert _gap(_vector(model.params), _vector(local.params)) < 1e-10
    assert _gap(hist.loss, h_local.loss) < 1e-12 and len(hist) == 100
    assert hist.engine == ["distributed"] * 100 and hist.stop_reason == "completed"
    assert hist.best_epoch == h_local.best_epoch
    assert _gap(_vector(hist.best_params), _vector(h_local.best_params)) < 1e-10
    # each worker imported the model's module exactly once (also across the two fits' steps)
    digest = dist.Job(model, client).layout.digest
    loads = client.run(dist.loaded_modules)
    assert len(loads) == 2 and all(counts[digest] == 1 for counts in loads.values())
    model.fit({x: X, y: Y}, epochs=3, verbose=0, client=client)
    assert all(counts[digest] == 1 for counts in client.run(dist.loaded_modules).values())


def test_predict_and_evaluate_on_the_cluster(client):
    model = _model()
    model.fit({x: XS, y: YS}, optimizer=optim.Adam(lr=0.05), epochs=20, verbose=0)
    (X,) = _chunked(XS)
    pred = model.predict(data={x: X}, client=client)
    assert isinstance(pred, da.Array) and pred.chunks == X.chunks
    p = model.params
    assert _gap(pred.compute(), p[a] * np.tanh(p[b] * XS) + p[c]) < 1e-14
    # numpy data is split over the workers too
    assert _gap(model.evaluate({x: XS, y: YS}, client=client), model.evaluate({x: XS, y: YS})
                ) < 1e-12


# -- History, stopping, errors as in a local fit ---------------------------------------------

def test_validation_early_stopping_and_best_params_as_local(client):
    kw = dict(epochs=300, early_stopping=5, verbose=0)
    local = _model()
    h_local = local.fit({x: XS, y: YS}, validation={x: XV, y: YV}, optimizer=optim.Adam(lr=0.05),
                        **kw)
    model = _model()
    X, Y = _chunked(XS, YS)
    hist = model.fit({x: X, y: Y}, validation=dict(zip([x, y], _chunked(XV, YV, chunks=70))),
                     optimizer=optim.Adam(lr=0.05), client=client, **kw)
    assert hist.stop_reason == h_local.stop_reason == "early_stopping"
    assert len(hist) == len(h_local) and hist.best_epoch == h_local.best_epoch
    assert _gap(hist.val_loss, h_local.val_loss) < 1e-12
    assert model.params == hist.best_params
    assert _gap(_vector(model.params), _vector(local.params)) < 1e-10


def test_divergence_callbacks_and_interrupt_as_local(client):
    X, Y = _chunked(XS * 1e3, YS)
    model = _model()
    with pytest.warns(sg.DivergenceWarning, match=r"diverged at epoch \d+.*smaller learning"):
        hist = model.fit({x: X, y: Y}, optimizer=optim.SGD(lr=1e6), epochs=50, verbose=0,
                         client=client)
    assert hist.stop_reason == "diverged" and not math.isfinite(hist.loss[-1])
    assert model.params == hist.best_params

    X, Y = _chunked(XS, YS)
    model = _model()
    hist = model.fit({x: X, y: Y}, optimizer=optim.SGD(lr=0.1), epochs=10, verbose=0,
                     client=client, callbacks=[lambda e, logs: e == 3])
    assert hist.stop_reason == "callback" and len(hist) == 4

    start = model.epochs_trained  # this fit numbers its epochs on from the last one's

    def ctrl_c(epoch, logs):
        if epoch == start + 2:
            raise KeyboardInterrupt

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = model.fit({x: X, y: Y}, optimizer=optim.SGD(lr=0.1), epochs=10, verbose=0,
                         client=client, callbacks=[ctrl_c])
    assert hist.stop_reason == "interrupted" and len(hist) == 3 and hist.best_params
    assert any("interrupted" in str(w.message) for w in caught)


@pytest.mark.parametrize("column, value", [("x", np.nan), ("y", np.inf)])
def test_bad_data_gives_the_local_error(client, column, value):
    xs, ys = XS.copy(), YS.copy()
    (xs if column == "x" else ys)[[650, 651, 990]] = value  # in the third and last chunks
    with pytest.raises(sg.InputError) as local:
        _model().fit({x: xs, y: ys}, epochs=1, verbose=0)
    X, Y = _chunked(xs, ys)
    model = _model()
    with pytest.raises(sg.InputError) as remote:
        model.fit({x: X, y: Y}, epochs=1, verbose=0, client=client)
    assert str(remote.value) == str(local.value)
    assert "index 650 (3 non-finite values)" in str(remote.value)
    with pytest.raises(sg.InputError, match="lacks the column"):
        model.fit({x: X}, epochs=1, verbose=0, client=client)
    with pytest.raises(sg.InputError, match="different lengths"):
        model.fit({x: X, y: Y[:10]}, epochs=1, verbose=0, client=client)
    with pytest.raises(TypeError, match="dask.distributed.Client"):
        model.fit({x: X, y: Y}, epochs=1, verbose=0, client="tcp://localhost:8786")
    with pytest.raises(sg.InputError, match="prepared data .* pass a dict of dask arrays"):
        model.fit(model.prepare({x: XS, y: YS}), epochs=1, verbose=0, client=client)
    with pytest.raises(ValueError, match="metrics"):
        model.fit({x: X, y: Y}, epochs=1, verbose=0, client=client, metrics=["r2"])


def test_an_error_raised_on_a_worker_is_the_same_symgrad_error(client):
    model = _model()
    job = dist.Job(model, client)
    forged = dist.Layout(**{**job.layout.__dict__, "digest": "0" * 64})
    with pytest.raises(sg.CompileError, match="does not match its SHA-256"):
        client.submit(dist._load, forged, job.source, pure=False).result()


# -- minibatches: the documented chunk-local scheme ------------------------------------------

def _grad_np(p, xs, ys):
    pa, pb, pc = p
    t = np.tanh(pb * xs)
    r = 2 * (pa * t + pc - ys)
    return np.array([np.sum(r * t), np.sum(r * pa * (1 - t**2) * xs), np.sum(r)])


def test_minibatches_follow_the_documented_scheme(client):
    chunks, batch, epochs, seed, lr = 300, 128, 2, 3, 0.05
    model = _model()
    X, Y = _chunked(XS, YS, chunks=chunks)
    model.fit({x: X, y: Y}, optimizer=optim.SGD(lr=lr), epochs=epochs, batch_size=batch,
              seed=seed, verbose=0, client=client)
    # the scheme transcribed: S = ceil(N / m) steps; step b takes rows
    # floor(b n_c / S) .. floor((b + 1) n_c / S) of every chunk's own shuffled order
    starts = range(0, XS.size, chunks)
    steps = -(-XS.size // batch)
    p = np.array(list(INIT.values()))
    for epoch in range(epochs):
        orders = []
        for k, s in enumerate(starts):
            rows = min(chunks, XS.size - s)
            order = np.empty(rows, dtype=np.int64)
            permute(order, (seed * 1000003 + epoch) * 1009 + k)
            orders.append(s + order)
        for step in range(steps):
            pick = np.concatenate([o[step * o.size // steps:(step + 1) * o.size // steps]
                                   for o in orders])
            p = p - lr * _grad_np(p, XS[pick], YS[pick]) / pick.size
    assert _gap(_vector(model.params), p) < 1e-12
    with pytest.raises(ValueError, match="drop_last"):
        model.fit({x: X, y: Y}, epochs=1, batch_size=batch, drop_last=True, verbose=0,
                  client=client)


# -- matrix models ---------------------------------------------------------------------------

n = sp.Symbol("n", integer=True, positive=True)
XM, YM = sp.MatrixSymbol("X", n, 2), sp.MatrixSymbol("Y", n, 2)
W1, b1 = sp.MatrixSymbol("W1", 2, 5), sp.MatrixSymbol("b1", 1, 5)
W2, b2 = sp.MatrixSymbol("W2", 5, 2), sp.MatrixSymbol("b2", 1, 2)
SCORES = sg.tanh(XM * W1 + b1) * W2 + b2
MLP = sg.softmax_cross_entropy(SCORES, YM) + 0.5 * 1e-3 * (sg.l2(W1) + sg.l2(W2))
XD = RNG.normal(size=(600, 2))
LABELS = (XD[:, 0] * XD[:, 1] > 0).astype(int)


def _mlp(loss=MLP):
    init = {W1: sg.init.xavier(2, 5, seed=1), b1: np.zeros((1, 5)),
            W2: sg.init.xavier(5, 2, seed=2), b2: np.zeros((1, 2))}
    return sg.Model(loss, params=init, data=[XM, YM], prediction=sg.softmax(SCORES), target=YM)


@pytest.mark.slow
def test_matrix_model_fit_evaluate_predict_match_local(client):
    onehot = sg.one_hot(LABELS)
    data = {XM: da.from_array(XD, chunks=(250, 2)), YM: da.from_array(onehot, chunks=(250, 2))}
    local, model = _mlp(), _mlp()
    loss, grad = local.value_and_grad({XM: XD, YM: onehot})
    assert _gap(model.evaluate(data, client=client), loss) < 1e-12
    job = dist.Job(model, client)
    shards = job.shards(data, "data")
    sums = job.sums(shards, model._values, [(0, r, -1) for r in shards.rows]) / 600
    assert _gap(sums, [loss, *_vector(grad)]) < 1e-12
    local.fit({XM: XD, YM: onehot}, optimizer=optim.Adam(lr=0.02), epochs=100, verbose=0)
    hist = model.fit(data, optimizer=optim.Adam(lr=0.02), epochs=100, verbose=0, client=client)
    assert hist.loss[-1] < hist.loss[0]
    assert _gap(_vector(model.params), _vector(local.params)) < 1e-10
    pred = model.predict(data={XM: data[XM]}, client=client)
    assert pred.shape == (600, 2) and _gap(pred.compute(), local.predict(data={XM: XD})) < 1e-12
    digest = job.layout.digest
    assert all(counts[digest] == 1 for counts in client.run(dist.loaded_modules).values())
    # one epoch of shuffled minibatches: each step is the loss of the union of its pieces
    # (a mean over rows splits over chunks), here evaluated by the local model
    start, epoch = model._values.copy(), model.epochs_trained  # epochs go on: 100
    model.fit(data, optimizer=optim.SGD(lr=0.5), epochs=1, batch_size=100, seed=5, verbose=0,
              client=client)
    orders = []
    for k, (s, rows) in enumerate([(0, 250), (250, 250), (500, 100)]):
        order = np.empty(rows, dtype=np.int64)
        permute(order, (5 * 1000003 + epoch) * 1009 + k)
        orders.append(s + order)
    local._values[:] = start
    for step in range(6):
        pick = np.concatenate([o[step * o.size // 6:(step + 1) * o.size // 6] for o in orders])
        _, g = local.value_and_grad({XM: XD[pick], YM: onehot[pick]})
        local._values[:] -= 0.5 * _vector(g)
    assert _gap(model._values, local._values) < 1e-12
    bad = onehot.copy()
    bad[400] = [0.5, 0.2]
    with pytest.raises(sg.InputError) as local_error:
        local.fit({XM: XD, YM: bad}, epochs=1, verbose=0)
    with pytest.raises(sg.InputError) as remote:
        model.fit({XM: data[XM], YM: da.from_array(bad, chunks=(250, 2))}, epochs=1,
                  verbose=0, client=client)
    assert str(remote.value) == str(local_error.value) and "row 400" in str(remote.value)


@pytest.mark.slow
def test_float32_matrix_model_trains_like_the_local_fit(client):
    """float32 sums round differently: agreement to float32 rounding, and the loss still
    passes the check that it splits over chunks."""
    def model():
        init = {W1: sg.init.xavier(2, 5, seed=1), b1: np.zeros((1, 5)),
                W2: sg.init.xavier(5, 2, seed=2), b2: np.zeros((1, 2))}
        return sg.Model(sg.softmax_cross_entropy(SCORES, YM), params=init, data=[XM, YM],
                        dtype="float32")

    onehot = sg.one_hot(LABELS)
    local, remote = model(), model()
    local.fit({XM: XD, YM: onehot}, optimizer=optim.Adam(lr=0.02), epochs=30, verbose=0)
    remote.fit({XM: da.from_array(XD, chunks=(200, 2)), YM: da.from_array(onehot, chunks=(200, 2))},
               optimizer=optim.Adam(lr=0.02), epochs=30, verbose=0, client=client)
    assert remote._values.dtype == np.float32
    assert _gap(remote._values, local._values) < 1e-5


@pytest.mark.slow
def test_a_loss_that_does_not_split_over_rows_is_refused(client):
    model = _mlp(sg.sum(sg.elementwise(lambda s, t: s * t, SCORES, YM)))  # a sum, not a mean
    with pytest.raises(sg.ExpressionError, match="not a mean over the rows"):
        model.evaluate({XM: da.from_array(XD, chunks=(250, 2)), YM: sg.one_hot(LABELS)},
                       client=client)


def test_dropout_models_train_on_one_process_only(client):
    scores = sg.dropout(sg.tanh(XM * W1 + b1), 0.2) * W2 + b2
    model = _mlp(sg.softmax_cross_entropy(scores, YM))
    with pytest.raises(sg.ExpressionError, match="dropout"):
        model.fit({XM: da.from_array(XD, chunks=(250, 2)), YM: sg.one_hot(LABELS)}, epochs=1,
                  verbose=0, client=client)


@pytest.mark.slow
def test_a_worker_with_two_threads_runs_two_tasks_per_step():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                               dashboard_address=None)
    with cluster, Client(cluster) as client:
        local, model = _model(), _model()
        X, Y = _chunked(XS, YS)
        shards = dist.Job(model, client).shards({x: X, y: Y}, "data")
        assert [chunks for _, chunks in shards.groups] == [[0, 2], [1, 3]]
        local.fit({x: XS, y: YS}, optimizer=optim.Adam(lr=0.01), epochs=30, verbose=0)
        model.fit({x: X, y: Y}, optimizer=optim.Adam(lr=0.01), epochs=30, verbose=0,
                  client=client)
        assert _gap(_vector(model.params), _vector(local.params)) < 1e-10
        assert list(client.run(dist.loaded_modules).values())[0] == {
            dist.Job(model, client).layout.digest: 1}


# -- faults ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_worker_killed_during_a_fit_does_not_change_the_result(client):
    local = _model()
    local.fit({x: XS, y: YS}, optimizer=optim.Adam(lr=0.01), epochs=40, verbose=0)
    X, Y = _chunked(XS, YS)
    calm = _model()
    calm.fit({x: X, y: Y}, client=client, optimizer=optim.Adam(lr=0.01), epochs=40, verbose=0)
    victim = next(iter(client.run(os.getpid).values()))

    def kill(epoch, logs):
        if epoch == 15:
            os.kill(victim, signal.SIGKILL)

    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = model.fit({x: X, y: Y}, client=client, callbacks=[kill],
                         optimizer=optim.Adam(lr=0.01), epochs=40, verbose=0)
    assert len(hist) == 40 and hist.stop_reason == "completed"
    assert victim not in client.run(os.getpid).values()  # the worker did die
    assert model.params == calm.params  # chunk-ordered sums: bit for bit the undisturbed run
    assert _gap(_vector(model.params), _vector(local.params)) < 1e-10


@pytest.mark.parametrize("bad, message", [
    (["1.5"] * 4, "data column x holds text"),
    ([1.0, None, 2.0, 3.0], "data column x at index 1 must be a real number, got None"),
])
def test_data_that_is_not_numbers_is_named(client, bad, message):
    """The one rule for numbers (issue 14) holds for a distributed fit of local data too."""
    ys = [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(sg.InputError, match=message):
        _model().fit({x: bad, y: ys}, epochs=1, verbose=0, client=client)
