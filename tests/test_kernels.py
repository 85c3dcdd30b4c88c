"""symgrad's kernel library: compiled once per machine, imported by generated modules,
copied into saved ones; and the cache around generated modules (lazy, capped)."""

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from symgrad.compile import cache_info, prune_cache
from symgrad.graph.names import GENERATED_CODE_NAMES
from symgrad.kernels import MODULES, arrays, loops, optim, standalone, trainer, vecmath

ROOT = Path(__file__).resolve().parents[1]
a, b, x, y = sp.symbols("a b x y")


def test_optimizer_numbering_is_the_same_in_train_and_kernels():
    assert sg.optim.KINDS == optim.KINDS
    for cls in (sg.optim.SGD, sg.optim.Momentum, sg.optim.Nesterov, sg.optim.Adagrad,
                sg.optim.RMSprop, sg.optim.Adadelta, sg.optim.Adam, sg.optim.AMSGrad):
        assert optim.KINDS[cls().kind] == cls.template


@pytest.mark.parametrize("module", [vecmath, loops, arrays, optim, trainer])
def test_public_kernel_names_are_reserved_from_user_symbols(module):
    """A saved module carries the kernels' source: no user symbol may take their names."""
    public = {n for n in vars(module) if not n.startswith("_")
              and getattr(vars(module)[n], "__module__", module.__name__) == module.__name__
              and not isinstance(vars(module)[n], type(sys))}
    assert public - GENERATED_CODE_NAMES == set()
    s = sp.Symbol(sorted(public)[0])
    f = sg.compile(s * x, wrt=[s])
    assert f.generated.params[0] != s.name  # renamed


def test_standalone_kernels_drop_their_package_imports():
    text = standalone(("trainer",))
    imports = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in imports if n.level or (n.module or "").startswith("symgrad")]
    assert [m for m in MODULES if f"symgrad.kernels.{m} (copied)" in text] == [
        "loops", "optim", "trainer"]


# -- symgrad.kernels.arrays against NumPy: the kernels of matrix models ----------------------

_RNG = np.random.default_rng(7)


def _np_lse(a):
    """Log-sum-exp of each column of a (classes, samples)."""
    m = a.max(axis=0)
    return m + np.log(np.exp(a - m).sum(axis=0))


def _layouts(a):
    """``a`` as a C-contiguous array and as a transposed view of one (Fortran order), as the
    generated code passes them."""
    return [np.ascontiguousarray(a), np.ascontiguousarray(a.T).T]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_array_sums_match_numpy(dtype):
    a = _RNG.standard_normal((5, 9)).astype(dtype)
    tol = dict(rel=1e-12) if dtype == np.float64 else dict(rel=1e-5)
    for v in _layouts(a):
        assert arrays.sum2d(v, 5, 9) == pytest.approx(float(a.astype(float).sum()), **tol)
        assert arrays.sum2d(v, 3, 4) == pytest.approx(float(a[:3, :4].astype(float).sum()), **tol)
        assert arrays.sumsq2d(v, 5, 9) == pytest.approx(float((a.astype(float) ** 2).sum()), **tol)
        assert arrays.sum1d(v[0], 6) == pytest.approx(float(a[0, :6].astype(float).sum()), **tol)
        out = np.full(5, 2.0, dtype=dtype)
        arrays.rowsums(v, 5, 9, out, False)
        np.testing.assert_allclose(out, a.sum(axis=1), rtol=tol["rel"])
        arrays.rowsums(v, 5, 9, out, True)
        np.testing.assert_allclose(out, 2 * a.sum(axis=1), rtol=tol["rel"])
        col = np.zeros((5, 2), dtype=dtype)
        arrays.rowsums(v, 5, 9, col[:, 1], False)  # a strided output, as grad_b[:, 0]
        np.testing.assert_allclose(col[:, 1], a.sum(axis=1), rtol=tol["rel"])
        assert not col[:, 0].any()


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("acc", [False, True])
def test_mm_dot_matches_numpy(flip, acc):
    a, b = _RNG.standard_normal((4, 6)), _RNG.standard_normal((3, 6))
    start = _RNG.standard_normal((3, 4) if flip else (4, 3))
    want = (a @ b.T).T if flip else a @ b.T
    for av in _layouts(a):
        for bv in _layouts(b):
            c = start.copy()
            arrays.mm_dot(av, bv, c, 4, 3, 6, flip, acc)
            np.testing.assert_allclose(c, want + start if acc else want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("a_t, b_t, c_t", [(x, y, z) for x in (False, True)
                                             for y in (False, True) for z in (False, True)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matmul_matches_numpy_in_every_storage(a_t, b_t, c_t, dtype):
    """c (+)= A @ B with each of A, B, C stored as itself or its transpose (every loop
    order the kernel picks), overwriting and accumulating."""
    A, B = _RNG.standard_normal((5, 3)), _RNG.standard_normal((3, 4))
    start = _RNG.standard_normal((5, 4))
    tol = 1e-13 if dtype == np.float64 else 1e-5

    def stored(m, t):
        return np.ascontiguousarray(m.T if t else m).astype(dtype)

    for acc in (False, True):
        c = stored(start, c_t)
        arrays.matmul(stored(A, a_t), stored(B, b_t), c, a_t, b_t, c_t, acc)
        got = c.T if c_t else c
        np.testing.assert_allclose(got, A @ B + (start if acc else 0), rtol=tol, atol=tol)


@pytest.mark.parametrize("fast", [False, True])
def test_row_wise_softmax_kernels_match_numpy(fast):
    """Stored (classes, samples): softmax, log-softmax and cross-entropy per sample (column),
    with large scores (the log-sum-exp must not overflow)."""
    s = 30.0 * _RNG.standard_normal((4, 11))
    s[:, 0] += 800.0
    y = sg.one_hot(_RNG.integers(0, 4, 11), 4).T.copy()
    lse = _np_lse(s)
    want_log = s - lse
    wm, wz, wl = np.zeros(11), np.zeros(11), np.zeros(11)
    for sv in _layouts(s):
        arrays.row_lse(sv, wm, wz, fast)
        np.testing.assert_allclose(wz, lse, rtol=1e-14)
        np.testing.assert_array_equal(wm, s.max(axis=0))
        out = np.ones((4, 11))
        arrays.log_softmax_t(sv, out, wm, wz, False, fast)
        np.testing.assert_allclose(out, want_log, rtol=1e-13, atol=1e-13)
        arrays.softmax_t(sv, out, wm, wz, False, fast)
        np.testing.assert_allclose(out, np.exp(want_log), rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(out.sum(axis=0), 1.0, rtol=1e-12)  # scores ~800: lse to ~1e-13
        arrays.softmax_from_lse(sv, out, wz, True, fast)  # adds a second softmax
        np.testing.assert_allclose(out, 2 * np.exp(want_log), rtol=1e-13, atol=1e-300)
        loss = arrays.sce_t(sv, np.asfortranarray(y), wm, wz, wl, fast)
        assert loss == pytest.approx(-np.mean(np.sum(y * want_log, axis=0)), rel=1e-13)
        np.testing.assert_allclose(wz, lse, rtol=1e-14)  # left for the backward softmax


@pytest.mark.parametrize("name, ref, lo, hi", [
    ("exp", np.exp, -700, 700), ("log", np.log, 1e-300, 1e300), ("tanh", np.tanh, -30, 30),
    ("sin", np.sin, -100, 100), ("cos", np.cos, -100, 100)])
def test_map_kernels_match_numpy(name, ref, lo, hi):
    a = _RNG.uniform(lo, hi, (3, 50))
    if name == "log":
        a = np.exp(_RNG.uniform(np.log(lo), np.log(hi), (3, 50)))
    for v in _layouts(a):
        out = np.empty((3, 50))
        getattr(arrays, f"map_{name}")(v, out)
        np.testing.assert_allclose(out, ref(a), rtol=4e-16 * 4, atol=1e-300)


def test_saved_trainer_module_trains_without_symgrad(tmp_path):
    """Model.save writes the block kernel and a copy of the kernels: it trains on its own."""
    model = sg.Model(loss=(a * sp.exp(-b * x) - y) ** 2, params={a: 1.0, b: 0.1}, data=[x, y])
    xs = np.linspace(0, 3, 200)
    ys = 2.0 * np.exp(-0.5 * xs)
    hist = model.fit({x: xs, y: ys}, optimizer=sg.optim.Adam(lr=0.05), epochs=30, verbose=0)
    path = model.save(tmp_path / "trainer.py")
    assert "import symgrad" not in path.read_text() and "from symgrad" not in path.read_text()
    code = f"""
import sys; sys.modules['symgrad'] = None; sys.modules['sympy'] = None
import json, runpy, numpy as np
m = runpy.run_path({str(path)!r})
p = np.array([1.0, 0.1]); state = np.zeros((2, 2)); step = np.zeros(1, dtype=np.int64)
xs = np.linspace(0, 3, 200); data = np.ascontiguousarray(np.vstack([xs, 2.0*np.exp(-0.5*xs)]))
losses = np.zeros(30); best = np.array([np.inf, -1.0, 0.0])
hyper = np.array([0.05, 0.0, 0.0, 0.9, 0.999, 1e-8])
m['train'](m['block'], m['exact'], m['HAS_EXACT'], False, m['KINDS'].index('adam'), p, state,
           step, hyper, data, np.empty((2, 0)), 0, 30, 0, False, False, 0, 0, losses,
           np.zeros(30), best, p.copy())
print(json.dumps([p.tolist(), float(losses[-1])]))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    params, last = json.loads(run.stdout)
    assert np.allclose(params, list(model.params.values()), rtol=0, atol=1e-13)
    assert last == pytest.approx(hist.loss[-1], rel=1e-13)


def test_listing_and_source_never_wait_for_numba(tmp_path):
    """sg.compile renders and writes the module; Numba is imported at the first call only."""
    code = f"""
import sys, sympy as sp, symgrad as sg
x, y = sp.symbols('x y')
f = sg.compile(sp.sin(x) * y, wrt=[x], cache_dir={str(tmp_path)!r})
f.listing(); f.source
assert 'numba' not in sys.modules, 'numba imported before the first call'
assert f.value_and_grad(0.0, 2.0) == (0.0, (2.0,))
assert 'numba' in sys.modules and 'compile_s' in f.timings
print('ok')
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_value_and_grad_converts_numbers_and_refuses_the_rest():
    f = sg.compile(a * x**2, wrt=[a, x])
    assert f.value_and_grad(2, 3) == (18.0, (9.0, 12.0))  # ints convert, no new compile
    assert len(f.kernel.signatures) == 1
    with pytest.raises(sg.InputError, match="must be a real number"):
        f.value_and_grad("2", 3)


def _fake_module(root: Path, name: str, size: int, age: float) -> Path:
    py = root / f"sg_{name}.py"
    py.write_text("x" * size)
    (root / "__pycache__").mkdir(exist_ok=True)
    nbi = root / "__pycache__" / f"sg_{name}.value-18.py311.nbi"
    nbi.write_bytes(b"\0" * size)
    t = time.time() - age
    os.utime(py, (t, t))
    return py


def test_cache_is_capped_least_recently_used_first(tmp_path):
    old = _fake_module(tmp_path, "old", 1000, 300)
    mid = _fake_module(tmp_path, "mid", 1000, 200)
    new = _fake_module(tmp_path, "new", 1000, 100)
    info = cache_info(tmp_path)
    assert (info["modules"], info["bytes"]) == (3, 6000)
    assert prune_cache(tmp_path, max_bytes=4500) == 1
    assert not old.exists() and mid.exists() and new.exists()
    assert not list((tmp_path / "__pycache__").glob("sg_old*"))
    assert prune_cache(tmp_path, max_bytes=0) == 1  # the newest module always stays
    assert new.exists() and not mid.exists()


def test_loading_a_module_marks_it_used(tmp_path):
    f = sg.compile(a * x, wrt=[a], cache_dir=tmp_path)
    t = time.time() - 1000
    os.utime(f.path, (t, t))
    sys.modules.pop(f.path.stem, None)  # as in a new process
    g = sg.compile(a * x, wrt=[a], cache_dir=tmp_path)
    g.value_and_grad(1.0, 2.0)
    assert f.path.stat().st_mtime > t + 500


def test_kernel_cache_is_emptied_when_any_kernel_source_changed(tmp_path):
    """Numba keys a cached kernel on its own file only: a stamp of every kernel's source
    empties the kernels' files when any kernel changed (stale machine code of a kernel that
    calls another could crash), and keeps them when nothing did."""
    from symgrad import kernels

    stale = [tmp_path / "trainer.train-10.py310.nbi", tmp_path / "trainer.train-10.py310.1.nbc"]
    for f in stale:
        f.write_bytes(b"old machine code")
    (tmp_path / "symgrad-kernels.stamp").write_text("0" * 16)
    kernels._restamp(tmp_path, stale)
    assert not any(f.exists() for f in stale)
    assert (tmp_path / "symgrad-kernels.stamp").read_text() == kernels.fingerprint()

    kept = tmp_path / "loops.permute-20.py310.nbi"
    kept.write_bytes(b"current machine code")
    kernels._restamp(tmp_path, [kept])
    assert kept.read_bytes() == b"current machine code"


def test_generated_modules_name_the_kernels_they_were_made_with():
    """A generated module's content hash (its cache key) changes with the kernels it
    imports, because its first line names their fingerprint."""
    import sympy as sp

    import symgrad as sg
    from symgrad import kernels

    x, w = sp.symbols("x w")
    f = sg.compile(sg.sigmoid(w * x), wrt=[w])
    first = f.source.splitlines()[0]
    assert f"kernels {kernels.fingerprint()}" in first
    model = sg.Model((w * x - 1) ** 2, {w: 0.5}, [x])
    assert f"kernels {kernels.fingerprint()}" in model.generated.source.splitlines()[0]
