"""Saved models (symgrad.save_model / load_model), resumed fits, checkpoints and pickling.

The checks: a saved model comes back equal (expressions, parameters bit for bit, optimizer
state, history, settings) and continues training exactly as the original would; a run
killed mid-training and resumed from its checkpoint ends bit-identical to an uninterrupted
one; loading executes nothing (an audit hook in a subprocess) and compiles nothing; every
damaged or edited file gives one ModelFileError.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from conftest import expression_trees
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from saved_models import BUILD, flat, join, mutants, paths, replaced, split

import symgrad as sg
from symgrad.train import persist

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)])
    return env


def _same_history(h1, h2):
    assert (h1.epoch, h1.loss, h1.val_loss, h1.metrics, h1.engine, h1.best_epoch, h1.best_loss,
            h1.stop_reason) == (h2.epoch, h2.loss, h2.val_loss, h2.metrics, h2.engine,
                                h2.best_epoch, h2.best_loss, h2.stop_reason)
    assert h1.best_params.keys() == h2.best_params.keys()
    for k in h1.best_params:
        assert np.array_equal(h1.best_params[k], h2.best_params[k])


# -- round trips ------------------------------------------------------------------------------

def test_scalar_model_round_trip_keeps_everything(tmp_path):
    a, b, x, y = sp.symbols("a b x y")
    p = sp.Symbol("p", positive=True)
    loss = ((a * sg.sigmoid(b * x) + sp.Rational(1, 3) + sp.Float("0.1", 40) - y) ** 2
            + sp.Piecewise((sg.relu(a * x), x > 0), (sp.Max(a, b, p) * 0.5, True))
            + sp.exp(-sp.Abs(b)) / 7 + sp.log(1 + b ** 2) + sp.atan2(a, 2 + p) * sp.pi)
    model = sg.Model(loss, {a: 0.25, b: -1.0 / 3, p: 2.0}, [x, y],
                     prediction=a * sg.sigmoid(b * x), target=y,
                     optimizer=sg.optim.RMSprop(lr=0.01, alpha=0.9, weight_decay=1e-3),
                     name="L", fast_math=False)
    data = {x: np.linspace(-1, 1, 40), y: np.linspace(0, 1, 40) ** 2}
    model.fit(data, epochs=4, batch_size=8, seed=9, metrics=["mse"], verbose=0)
    path = sg.save_model(model, tmp_path / "m.sgm")
    loaded = sg.load_model(path)
    assert type(loaded) is sg.Model
    assert loaded.loss == model.loss and sp.srepr(loaded.loss) == sp.srepr(model.loss)
    assert loaded.prediction == model.prediction and loaded.target == model.target
    assert list(loaded.params) == list(model.params)
    assert [s.assumptions0 for s in loaded.params] == [s.assumptions0 for s in model.params]
    assert np.array_equal(flat(loaded), flat(model))
    assert (loaded.name, loaded.fast_math, loaded.seed, loaded.epochs_trained) == ("L", False,
                                                                                    9, 4)
    assert loaded.optimizer == model.optimizer  # the dataclass fields
    assert loaded.optimizer.step[0] == model.optimizer.step[0] == 20
    assert np.array_equal(loaded.optimizer.state, model.optimizer.state)
    _same_history(loaded.history, model.history)
    assert loaded.listing() == model.listing()
    assert loaded.evaluate(data) == model.evaluate(data)
    assert np.array_equal(loaded.predict(data=data), model.predict(data=data))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matrix_model_round_trip(tmp_path, dtype):
    model, data, fit = BUILD["matrix"](dtype)
    model.fit(data, epochs=3, verbose=0, **fit)
    loaded = sg.load_model(sg.save_model(model, tmp_path / "m.sgm"))
    assert type(loaded) is sg.ArrayModel and loaded.dtype == dtype
    for (p, v), (q, w) in zip(model.params.items(), loaded.params.items()):
        assert p == q and v.dtype == w.dtype and np.array_equal(v, w)
    # the Elementwise tanh holds a Lambda over fresh Dummy symbols, so compare what it makes
    assert loaded.generated.source == model.generated.source
    assert loaded.listing() == model.listing()
    assert np.array_equal(loaded.optimizer.state, model.optimizer.state)
    assert loaded.evaluate(data) == model.evaluate(data)
    assert np.array_equal(loaded.predict(data=data), model.predict(data=data))
    _same_history(loaded.history, model.history)


@pytest.mark.parametrize("kind", ["scalar", "matrix", "dropout"])
def test_a_loaded_model_trains_on_exactly_as_the_original(tmp_path, kind):
    model, data, fit = BUILD[kind]()
    model.fit(data, epochs=3, verbose=0, **fit)
    loaded = sg.load_model(sg.save_model(model, tmp_path / "m.sgm"))
    fit.pop("seed")  # the next fit takes the model's seed
    model.fit(data, epochs=4, verbose=0, **fit)
    history = loaded.fit(data, epochs=4, verbose=0, **fit)
    assert np.array_equal(flat(loaded), flat(model))
    assert history.epoch == [3, 4, 5, 6] == model.history.epoch
    assert history.loss == model.history.loss


def test_consecutive_fits_continue_one_run():
    """3 + 4 epochs in two fits are the 7 epochs of one fit, bit for bit (shuffle, Adam's
    moments and step); initial_epoch=0 starts the shuffle sequence again."""
    one, data, fit = BUILD["scalar"]()
    one.fit(data, epochs=7, verbose=0, **fit)
    two, _, _ = BUILD["scalar"]()
    two.fit(data, epochs=3, verbose=0, **fit)
    assert two.epochs_trained == 3 and two.optimizer.step[0] == 3 * 6
    two.fit(data, epochs=4, verbose=0, batch_size=16)
    assert np.array_equal(flat(one), flat(two)) and two.epochs_trained == 7
    assert two.history.epoch == [3, 4, 5, 6] and two.history.loss == one.history.loss[3:]
    again, _, _ = BUILD["scalar"]()
    again.fit(data, epochs=3, verbose=0, **fit)
    again.fit(data, epochs=4, verbose=0, initial_epoch=0, **fit)
    assert not np.array_equal(flat(one), flat(again))  # epochs 0..3 shuffled again
    # a new optimizer object starts with a fresh state (as in torch)
    three, _, _ = BUILD["scalar"]()
    three.fit(data, epochs=3, verbose=0, **fit)
    three.fit(data, epochs=4, verbose=0, optimizer=sg.optim.Adam(lr=0.03), **fit)
    assert three.optimizer.step[0] == 4 * 6 and not np.array_equal(flat(one), flat(three))


def test_pickle_goes_through_the_saved_format():
    model, data, fit = BUILD["matrix"]()
    model.fit(data, epochs=2, verbose=0, **fit)
    blob = pickle.dumps(model)
    assert persist.MAGIC in blob  # the state is the saved-model file, not pickled internals
    copy = pickle.loads(blob)
    assert type(copy) is sg.ArrayModel and np.array_equal(flat(copy), flat(model))
    assert copy.epochs_trained == 2 and copy.optimizer.step[0] == model.optimizer.step[0]


_A, _X, _Y, _Z = sp.symbols("a x y z", real=True)
_TREES = expression_trees(
    st.sampled_from([_X, _Y, _Z, _A, sp.Integer(-3), sp.Rational(2, 7), sp.Float(0.1),
                     sp.Float("1e-300"), sp.pi, sp.Integer(10) ** 40]),
    [sp.sin, sp.tanh, sp.atan, sg.sigmoid, sg.softplus, sg.relu, sg.elu, sp.Abs, sp.erf,
     sp.floor, lambda e: sp.exp(sp.tanh(e)), lambda e: sp.log(1 + e**2), sp.sign,
     lambda e: sp.sqrt(1 + e**2), lambda e: -e, lambda e: e**3, lambda e: sg.leaky_relu(e)],
    [lambda p, q: p + q, lambda p, q: p * q, lambda p, q: p / (1 + q**2), sp.Max, sp.Min,
     sp.atan2, lambda p, q: sp.Piecewise((p, q > 0), (p * q, True))], max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TREES)
def test_random_expressions_come_back_equal(expr):
    loss = expr + _A**2  # the parameter occurs in every loss
    data = [s for s in (_X, _Y, _Z) if s in loss.free_symbols]
    try:
        model = sg.Model(loss, {_A: 0.5}, data, prediction=expr)
    except (sg.UnsupportedFunctionError, sg.ExpressionError):  # SymPy folded the tree
        assume(False)  # into an ITE condition or nan, which no Model takes
    loaded = persist.model_from_bytes(persist.model_bytes(model))
    assert sp.srepr(loaded.loss) == sp.srepr(model.loss)
    assert sp.srepr(loaded.prediction) == sp.srepr(model.prediction)
    assert loaded.listing() == model.listing()


def test_the_allow_list_covers_every_function_symgrad_differentiates():
    from symgrad.graph import Identity  # the graph's own copy node, never in an expression
    from symgrad.rules import registered

    builtin = [op for op in registered()  # other tests register functions of their own
               if op.__module__.split(".")[0] in ("sympy", "symgrad") and op is not Identity]
    assert len(builtin) > 40
    missing = [op.__name__ for op in builtin if op not in persist.NODE_TYPES.values()]
    assert missing == []


# -- checkpoints -----------------------------------------------------------------------------

def test_checkpoints_are_written_at_multiples_of_k_and_at_the_end(tmp_path, monkeypatch):
    saved = []
    real = persist.Checkpoints.save

    def spy(self, model, consistent=True):
        saved.append(model.epochs_trained)
        real(self, model, consistent)

    monkeypatch.setattr(persist.Checkpoints, "save", spy)
    model, data, fit = BUILD["scalar"]()
    path = tmp_path / "ckpt.sgm"
    model.fit(data, epochs=20, verbose=0, checkpoint=path, checkpoint_every=7, **fit)
    assert saved == [7, 14, 20]
    assert sg.load_model(path).epochs_trained == 20
    saved.clear()
    model.fit(data, epochs=6, verbose=0, checkpoint=path, checkpoint_every=7, **fit)
    assert saved == [21, 26]  # counted in epochs trained, so a resumed run keeps the schedule
    with pytest.raises(ValueError, match="checkpoint_every"):
        model.fit(data, epochs=1, verbose=0, checkpoint=path, checkpoint_every=0)


@pytest.mark.filterwarnings("ignore:training interrupted")
def test_a_checkpoint_never_holds_a_state_its_epoch_count_does_not_describe(tmp_path,
                                                                              monkeypatch):
    """Ctrl-C arrives while a compiled chunk runs, so Python sees it only when the chunk has
    returned: those epochs ran but were not counted. The checkpoint keeps the last complete
    state, and resuming from it is still bit-identical; a callback that raises leaves a
    consistent state, which is saved."""
    model, data, fit = BUILD["scalar"]()
    real = model._train_function
    calls = []

    def interrupted_after_four_chunks(*args, **kwargs):
        train = real(*args, **kwargs)

        def run(*a):
            out = train(*a)
            calls.append(a[5])  # the epoch count of this call (0: the compile-only call)
            if len(calls) == 5:
                raise KeyboardInterrupt
            return out

        return run

    monkeypatch.setattr(model, "_train_function", interrupted_after_four_chunks)
    path = tmp_path / "ckpt.sgm"
    with pytest.warns(RuntimeWarning, match="was not updated: the run stopped inside a chunk"):
        model.fit(data, epochs=10, verbose=0, checkpoint=path, checkpoint_every=3,
                  callbacks=[lambda epoch, logs: None], **fit)
    assert calls == [0, 1, 1, 1, 1] and model.history.stop_reason == "interrupted"
    resumed = sg.load_model(path)
    assert resumed.epochs_trained == 3
    reference, _, _ = BUILD["scalar"]()
    reference.fit(data, epochs=10, verbose=0, **fit)
    resumed.fit(data, epochs=7, verbose=0, batch_size=fit["batch_size"])
    assert np.array_equal(flat(resumed), flat(reference))

    def fails(epoch, logs):
        if epoch == 4:
            raise RuntimeError("a callback failed")

    model, data, fit = BUILD["scalar"]()
    with pytest.raises(RuntimeError, match="a callback failed"):
        model.fit(data, epochs=10, verbose=0, checkpoint=path, checkpoint_every=3,
                  callbacks=[fails], **fit)
    saved = sg.load_model(path)
    assert saved.epochs_trained == model.epochs_trained == 5
    assert np.array_equal(flat(saved), flat(model))


_KILLED = """
import os, sys
from saved_models import BUILD
model, data, fit = BUILD[sys.argv[1]]()

def die(epoch, logs):
    if epoch == int(sys.argv[3]):
        os._exit(17)  # killed: no finally, no last checkpoint

model.fit(data, epochs=int(sys.argv[4]), verbose=0, callbacks=[die], checkpoint=sys.argv[2],
          checkpoint_every=int(sys.argv[5]), **fit)
sys.exit(1)
"""


@pytest.mark.parametrize("kind", ["scalar", "matrix"])
def test_a_killed_run_resumed_from_its_checkpoint_is_bit_identical(tmp_path, kind):
    total, kill_at, every = 23, 12, 5
    path = tmp_path / "ckpt.sgm"
    run = subprocess.run([sys.executable, "-c", _KILLED, kind, str(path), str(kill_at),
                          str(total), str(every)], env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 17, run.stderr
    resumed = sg.load_model(path)
    assert resumed.epochs_trained == 10  # the last multiple of 5 before the kill at epoch 12
    model, data, fit = BUILD[kind]()
    fit.pop("seed")  # the checkpoint carries it
    resumed.fit(data, epochs=total - resumed.epochs_trained, verbose=0, **fit)
    model.fit(data, epochs=total, verbose=0, seed=BUILD[kind]()[2]["seed"], **fit)
    assert np.array_equal(flat(resumed), flat(model))
    assert resumed.optimizer.step[0] == model.optimizer.step[0]
    assert np.array_equal(resumed.optimizer.state, model.optimizer.state)
    assert resumed.history.loss == model.history.loss[10:]


def test_saving_is_atomic(tmp_path, monkeypatch):
    """A save that fails (disk full, killed) leaves the previous file whole and no temporary
    file behind."""
    model, data, fit = BUILD["scalar"]()
    path = sg.save_model(model, tmp_path / "m.sgm")
    before = path.read_bytes()
    model.fit(data, epochs=1, verbose=0, **fit)

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persist.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        sg.save_model(model, path)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


# -- safety: nothing executed, nothing compiled ---------------------------------------------------

def test_loading_executes_nothing_and_compiles_nothing(tmp_path):
    """An audit hook installed after importing symgrad (in a subprocess: hooks cannot be
    removed) sees no code run from outside installed libraries, no unpickling and no process
    while symgrad.load_model reads valid, damaged, edited and hostile files; loaded models
    have generated nothing and Numba is not even imported."""
    files = tmp_path / "files"
    files.mkdir()
    for kind in BUILD:
        model, data, fit = BUILD[kind]()
        model.fit(data, epochs=2, verbose=0, **fit)
        good = persist.model_bytes(model)
        (files / f"{kind}.sgm").write_bytes(good)
        for k, (_, bad) in enumerate(mutants(good, seed=1, count=60)):
            (files / f"{kind}-{k}.sgm").write_bytes(bad)
        header, arrays = split(good)
        evil = "__import__('os').system('touch " + str(tmp_path / "pwned") + "')"
        named = header["expression"]["nodes"].index(next(
            n for n in header["expression"]["nodes"] if n[0] in ("Symbol", "Str")))
        node = header["expression"]["nodes"][named]
        (files / f"{kind}-evil-name.sgm").write_bytes(join(replaced(
            header, ("expression", "nodes", named, 1), evil + node[1]), arrays))
        (files / f"{kind}-evil-type.sgm").write_bytes(join(replaced(
            header, ("expression", "nodes", named, 0), "os.system"), arrays))
        (files / f"{kind}-evil-optimizer.sgm").write_bytes(join(replaced(
            header, ("optimizer", "class"), "subprocess.Popen"), arrays))
    (files / "pickle.sgm").write_bytes(pickle.dumps(os.system))
    run = subprocess.run([sys.executable, str(TESTS / "audit_load.py"), str(files)],
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    counts = json.loads(run.stdout)
    assert counts["files"] == len(BUILD) * 64 + 1
    assert counts["hook_works"]  # it records an exec from a non-library file, and unpickling
    assert counts["code_executed"] == []
    assert counts["crashes"] == []
    assert counts["clear_errors"] + counts["loaded"] == counts["files"]
    assert counts["loaded"] >= 4  # the valid files and the hostile symbol names (just names)
    assert counts["lazy"] and not counts["numba_imported"]
    assert not (tmp_path / "pwned").exists()


def test_loading_generates_nothing_until_first_use(tmp_path):
    model, data, fit = BUILD["scalar"]()
    path = sg.save_model(model, tmp_path / "m.sgm")
    cache = tmp_path / "cache"
    loaded = sg.load_model(path, cache_dir=cache)
    assert not cache.exists() and loaded.timings == {}
    loaded.evaluate(data)
    assert any(cache.glob("sg_*.py"))


# -- clear errors -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved():
    model, data, fit = BUILD["scalar"]()
    model.fit(data, epochs=2, verbose=0, **fit)
    return persist.model_bytes(model)


def _load(data: bytes, tmp_path, name="m.sgm"):
    path = tmp_path / name
    path.write_bytes(data)
    return sg.load_model(path)


def test_a_newer_format_version_is_refused_clearly(tmp_path, saved):
    header, arrays = split(saved)
    with pytest.raises(sg.ModelFileError, match="newer symgrad.*Upgrade"):
        _load(join(replaced(header, ("version",), persist.FORMAT_VERSION + 1), arrays), tmp_path)


def test_damaged_or_foreign_files_are_refused_clearly(tmp_path, saved):
    with pytest.raises(sg.ModelFileError, match="damaged or truncated"):
        _load(saved[:-1], tmp_path)
    with pytest.raises(sg.ModelFileError, match="not a symgrad model file"):
        _load(b"PK\x03\x04 a zip file", tmp_path)
    with pytest.raises(sg.ModelFileError, match="cannot read"):
        sg.load_model(tmp_path / "missing.sgm")
    header, arrays = split(saved)
    entry = header["arrays"]["params.0"]
    with pytest.raises(sg.ModelFileError, match="params.0.*invalid shape"):
        _load(join(replaced(header, ("arrays", "params.0", "shape"), [2**40]), arrays), tmp_path)
    with pytest.raises(sg.ModelFileError, match="params.0.*do not fit"):
        _load(join(replaced(header, ("arrays", "params.0", "shape"), [3]), arrays), tmp_path)
    with pytest.raises(sg.ModelFileError, match="dtype '\\|O'"):
        _load(join(replaced(header, ("arrays", "params.0", "dtype"), "|O"), arrays), tmp_path)
    assert entry["dtype"] == "<f8"
    with pytest.raises(sg.ModelFileError, match="allow-list"):
        _load(join(replaced(header, ("expression", "nodes", 0, 0), "Function"), arrays),
              tmp_path)


def test_user_rules_are_saved_by_name_and_needed_to_load(tmp_path):
    class swish_saved(sp.Function):
        nargs = 1

    @sg.rule(swish_saved, forward=lambda x: x * sg.sigmoid(x))
    def _swish(node, out, grad_out):
        (x,) = node.args
        s = sg.sigmoid(x)
        return (grad_out * (s + out * (1 - s)),)

    w, x, y = sp.symbols("w x y")
    model = sg.Model((swish_saved(w * x) - y) ** 2, {w: 0.3}, [x, y])
    data = persist.model_bytes(model)
    header, arrays = split(data)
    assert header["expression"]["rules"] == [{"name": swish_saved.__qualname__,
                                              "module": __name__}]
    loaded = _load(data, tmp_path)
    assert loaded.loss == model.loss
    xy = {x: np.linspace(-1, 1, 9), y: np.linspace(0, 1, 9)}
    assert loaded.evaluate(xy) == model.evaluate(xy)
    header["expression"]["rules"][0]["name"] = "unregistered_swish"
    with pytest.raises(sg.ModelFileError, match="unregistered_swish.*@symgrad.rule"):
        _load(join(header, arrays), tmp_path)


def test_what_cannot_be_saved_is_named():
    a, x = sp.symbols("a x")

    class opaque(sp.Function):  # no rule: the Model itself refuses it
        nargs = 1

    model = sg.Model((a * x) ** 2, {a: 1.0}, [x], prediction=opaque(a * x))
    with pytest.raises(sg.ExpressionError, match="cannot save the opaque"):
        persist.model_bytes(model)
    model = sg.Model((a * x) ** 2, {a: 1.0}, [x])
    model.params = {a: 1.0}
    model._values[0] = np.nan  # as after a divergence at the first epoch
    with pytest.raises(sg.InputError, match="NaN or inf"):
        persist.model_bytes(model)


# -- fuzz: every damaged or edited file gives one ModelFileError ---------------------------------

def _outcome(data: bytes, tmp_path) -> str:
    try:
        _load(data, tmp_path, "fuzz.sgm")
    except sg.ModelFileError:
        return "clear error"
    return "loaded"  # any other exception fails the test


_FUZZ = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(st.data())
def test_fuzz_byte_flips_and_truncations(tmp_path, saved, data):
    b = bytearray(saved)
    if data.draw(st.booleans()):
        for pos in data.draw(st.lists(st.integers(0, len(b) - 1), min_size=1, max_size=4,
                                              unique=True)):
            b[pos] ^= data.draw(st.integers(1, 255))
        b = bytes(b)
    else:
        b = bytes(b[:data.draw(st.integers(0, len(b) - 1))])
    assert _outcome(b, tmp_path) == "clear error"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=20) | st.sampled_from(["<f8", "<f4", "|O", ">f8", "Symbol", "Integer",
                                              "Float", "Add", "os.system", "Adam"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)


@_FUZZ
@given(st.data())
def test_fuzz_header_edits_with_valid_checksums(tmp_path, saved, data):
    """A deliberate editor recomputes the checksum: each edited value, deleted key, wrong
    shape, dtype, offset or node type is caught by the checks (or is harmless)."""
    header, arrays = split(saved)
    path = data.draw(st.sampled_from(list(paths(header))))
    if path and data.draw(st.booleans()):
        edited = replaced(header, path, None, delete=True)
    else:
        edited = replaced(header, path, data.draw(_JSON))
    assert _outcome(join(edited, arrays), tmp_path) in ("clear error", "loaded")


@pytest.mark.parametrize("kind", ["scalar", "matrix"])
def test_fuzz_campaign_of_mutants(tmp_path, kind):
    """The same mutants the audit-hook test loads, here counted in-process."""
    model, data, fit = BUILD[kind]()
    model.fit(data, epochs=2, verbose=0, **fit)
    good = persist.model_bytes(model)
    outcomes = {}
    for how, bad in mutants(good, seed=2, count=150):
        key = (how, _outcome(bad, tmp_path))
        outcomes[key] = outcomes.get(key, 0) + 1
    assert sum(outcomes.values()) == 150
    for how in ("flip", "truncate", "append"):
        assert (how, "loaded") not in outcomes
