"""symgrad's kernel library: compiled once per machine, imported by generated modules,
copied into saved ones; and the cache around generated modules (lazy, capped)."""

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from symgrad.compile import cache_info, prune_cache
from symgrad.graph.names import GENERATED_CODE_NAMES
from symgrad.kernels import (
    MODULES,
    arrays,
    blas,
    copy_functions,
    loops,
    optim,
    standalone,
    trainer,
    vecmath,
)

ROOT = Path(__file__).resolve().parents[1]
a, b, x, y = sp.symbols("a b x y")


def test_optimizer_numbering_is_the_same_in_train_and_kernels():
    assert sg.optim.KINDS == optim.KINDS
    for cls in (sg.optim.SGD, sg.optim.Momentum, sg.optim.Nesterov, sg.optim.Adagrad,
                sg.optim.RMSprop, sg.optim.Adadelta, sg.optim.Adam, sg.optim.AMSGrad):
        assert optim.KINDS[cls().kind] == cls.template


@pytest.mark.parametrize("penalties", [(0.01, 0.002), (0.0, 0.0)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", [6, 7])
def test_adam_update_is_torchs_formula_entry_by_entry(kind, dtype, penalties):
    """Adam's and AMSGrad's own (vectorized) loops against the formula written out one
    scalar at a time, over a length that is no multiple of the vector width, non-finite
    parameters and both penalties included: the same numbers up to the last bits (the bias
    correction: Numba's beta**t multiplies, NumPy's calls pow; the kernel multiplies sqrt(v)
    by 1 / sqrt(1 - beta2**t) where torch divides)."""
    rng = np.random.default_rng(kind)
    hyper = np.array([0.05, *penalties, 0.9, 0.99, 1e-6])
    T = np.dtype(dtype).type
    p = rng.normal(size=203).astype(dtype)
    p[:4] = [0.0, np.inf, -np.inf, np.nan]
    ref, state, ref_state = p.copy(), np.zeros((3, p.size), dtype), np.zeros((3, p.size), dtype)
    lr, wd, l1, b1, b2, eps = (T(h) for h in hyper)
    for t in range(1, 6):
        g = rng.normal(size=p.size).astype(dtype)
        optim.update(kind, p, g, state, t, hyper)
        step = T(hyper[0] / (1.0 - hyper[3] ** t))
        root2 = T(np.sqrt(1.0 - hyper[4] ** t))
        m, v, v_max = ref_state
        with np.errstate(all="ignore"):
            for k in range(p.size):
                x = ref[k]
                gk = g[k] + wd * x + l1 * ((x > 0) * T(1) - (x < 0) * T(1)) if wd or l1 else g[k]
                m[k] = b1 * m[k] + T(1.0 - hyper[3]) * gk
                v[k] = b2 * v[k] + T(1.0 - hyper[4]) * gk * gk
                v_max[k] = max(v_max[k], v[k])
                denom = np.sqrt(v_max[k] if kind == 7 else v[k]) / root2 + eps  # torch's
                ref[k] = x - step * m[k] / denom
    rows, tol = 3 if kind == 7 else 2, 8 * np.finfo(dtype).eps
    np.testing.assert_allclose(p, ref, rtol=tol, atol=tol)  # parameters are O(1)
    np.testing.assert_allclose(state[:rows], ref_state[:rows], rtol=tol, atol=tol)
    assert np.isfinite(p[4:]).all() and p.dtype == dtype
    if not any(penalties):  # torch's rule: no penalty, the gradient as it is (not inf * 0)
        np.testing.assert_array_equal(p[1:4], [np.inf, -np.inf, np.nan])


def test_accumulate_adds_in_float32_to_a_float32_total_only():
    """A float32 running total is added to in float32 (the value rounded to float32 first);
    any other total in float64, as before."""

    @numba.njit
    def add(total, value):
        return loops.accumulate(total, value)

    assert add(np.float32(1.0), 1e-8) == 1.0  # 1e-8 is below float32's half ulp at 1
    assert add(1.0, np.float32(0.5)) == 1.5 and add(1.0, 1e-8) == 1.0 + 1e-8
    assert add(np.float32(1.0), np.float32(2.0 ** -20)) == np.float32(1.0 + 2.0 ** -20)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, 3])
def test_relayout_transposes_the_blocks_as_numpy_does_and_back(dtype, rows):
    """relayout against NumPy by hand: the listed matrices transposed in every row, the
    entries between, before and after them copied; odd sizes (strips of 8 and the rest); the
    way back gives the rows again, bit for bit."""
    blocks = np.array([[3, 13, 5], [68, 1, 4], [72, 9, 8], [144, 2, 1]], dtype=np.int64)
    n = 150
    rng = np.random.default_rng(7)
    src = rng.standard_normal((rows, n)).astype(dtype)
    want = src.copy()
    for lo, r, c in blocks:
        want[:, lo:lo + r * c] = src[:, lo:lo + r * c].reshape(rows, r, c).transpose(
            0, 2, 1).reshape(rows, r * c)
    got = np.full_like(src, np.nan)
    loops.relayout(src, got, blocks, True)
    np.testing.assert_array_equal(got, want)
    back = np.full_like(src, np.nan)
    loops.relayout(got, back, blocks, False)
    np.testing.assert_array_equal(back, src)
    none = np.full_like(src, np.nan)
    loops.relayout(src, none, blocks[:0], True)  # no matrices: a copy
    np.testing.assert_array_equal(none, src)


@pytest.mark.parametrize("module", [vecmath, loops, optim, blas, trainer])
def test_public_kernel_names_are_reserved_from_user_symbols(module):
    """A saved module carries the kernels' source: no user symbol may take their names."""
    public = {n for n in vars(module) if not n.startswith("_")
              and getattr(vars(module)[n], "__module__", module.__name__) == module.__name__
              and not isinstance(vars(module)[n], type(sys))}
    assert public - GENERATED_CODE_NAMES == set()
    s = sp.Symbol(sorted(public)[0])
    f = sg.compile(s * x, wrt=[s])
    assert f.generated.params[0] != s.name  # renamed


@pytest.mark.parametrize("module", [vecmath, loops, optim, blas, trainer])
def test_kernel_modules_bind_no_public_name_a_user_helper_could_take(module):
    """A saved module carries the kernels' source, then the helpers of the user's own
    functions (``def <name>(...)`` at module level, any name not reserved): every public
    module-level name of the kernels, imported modules included, must be reserved, or a
    user function named like it replaces it (``from llvmlite import ir`` broke a saved
    Model using exp whose user function was named ``ir``)."""
    public = {n for n in vars(module) if not n.startswith("_")}
    assert public - GENERATED_CODE_NAMES == set()


def test_standalone_kernels_drop_their_package_imports():
    text = standalone(("trainer",))
    imports = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in imports if n.level or (n.module or "").startswith("symgrad")]
    assert [m for m in MODULES if f"symgrad.kernels.{m} (copied)" in text] == [
        "loops", "optim", "trainer"]


# -- symgrad.kernels.arrays against NumPy: the loop kernels of matrix models --------------
# Generated modules compile a copy of these with the model's loops; here each runs as plain
# Python (``py_func``: the same source, milliseconds instead of a Numba compile per kernel).

_RNG = np.random.default_rng(7)


def _np_lse(s):
    """Log-sum-exp of each column of s (classes, samples)."""
    m = s.max(axis=0)
    return m + np.log(np.exp(s - m).sum(axis=0))


def _layouts(m):
    """``m`` C-contiguous and as a transposed view (as the generated code passes both)."""
    return [np.ascontiguousarray(m), np.ascontiguousarray(m.T).T]


def test_array_sum_kernels_match_numpy():
    m = _RNG.standard_normal((5, 9))
    for v in _layouts(m):
        assert arrays.sum2d.py_func(v, 5, 9) == pytest.approx(m.sum(), rel=1e-13)
        assert arrays.sum2d.py_func(v, 3, 4) == pytest.approx(m[:3, :4].sum(), rel=1e-13)
        assert arrays.sumsq2d.py_func(v, 5, 9) == pytest.approx((m ** 2).sum(), rel=1e-13)
        assert arrays.sum1d.py_func(v[0], 6) == pytest.approx(m[0, :6].sum(), rel=1e-13)
        out = np.zeros((5, 2))
        arrays.rowsums.py_func(v, 5, 9, out[:, 1], False)  # a strided output, as grad_b[:, 0]
        np.testing.assert_allclose(out[:, 1], m.sum(axis=1), rtol=1e-13)
        arrays.rowsums.py_func(v, 5, 9, out[:, 1], True)
        np.testing.assert_allclose(out[:, 1], 2 * m.sum(axis=1), rtol=1e-13)
        assert not out[:, 0].any()


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("acc", [False, True])
def test_mm_dot_matches_numpy(flip, acc):
    p, q = _RNG.standard_normal((4, 6)), _RNG.standard_normal((3, 6))
    start = _RNG.standard_normal((3, 4) if flip else (4, 3))
    want = (p @ q.T).T if flip else p @ q.T
    for pv in _layouts(p):
        for qv in _layouts(q):
            c = start.copy()
            arrays.mm_dot.py_func(pv, qv, c, 4, 3, 6, flip, acc)
            np.testing.assert_allclose(c, want + start if acc else want, rtol=1e-13, atol=1e-14)


def test_row_wise_softmax_kernels_match_numpy():
    """Stored (classes, samples): softmax, log-softmax and cross-entropy per sample (column),
    with scores near 800 (the log-sum-exp must not overflow)."""
    s = 30.0 * _RNG.standard_normal((4, 11))
    s[:, 0] += 800.0
    y1 = np.eye(4)[_RNG.integers(0, 4, 11)].T.copy()
    lse = _np_lse(s)
    want_log = s - lse
    wm, wz, wl = np.zeros(11), np.zeros(11), np.zeros(11)
    for sv in _layouts(s):
        arrays.row_lse.py_func(sv, wm, wz)
        np.testing.assert_allclose(wz, lse, rtol=1e-14)
        np.testing.assert_array_equal(wm, s.max(axis=0))
        out = np.ones((4, 11))
        arrays.log_softmax_t.py_func(sv, out, wm, wz, False)
        np.testing.assert_allclose(out, want_log, rtol=1e-13, atol=1e-13)
        arrays.softmax_t.py_func(sv, out, wm, wz, False)
        np.testing.assert_allclose(out, np.exp(want_log), rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(out.sum(axis=0), 1.0, rtol=1e-12)
        arrays.softmax_from_lse.py_func(sv, out, wz, True)  # adds a second softmax
        np.testing.assert_allclose(out, 2 * np.exp(want_log), rtol=1e-13, atol=1e-300)
        loss = arrays.sce_t.py_func(sv, np.asfortranarray(y1), wm, wz, wl, 11.0)
        assert loss == pytest.approx(-np.mean(np.sum(y1 * want_log, axis=0)), rel=1e-13)
        # a chunk of a larger batch: its samples' sum over the batch size
        assert arrays.sce_t.py_func(sv, np.asfortranarray(y1), wm, wz, wl, 44.0) == \
            pytest.approx(-np.sum(y1 * want_log) / 44, rel=1e-13)
        np.testing.assert_allclose(wz, lse, rtol=1e-14)  # left for the backward softmax
        probs = np.full((4, 11), np.nan)
        wm2, wz2, wl2 = np.zeros(11), np.zeros(11), np.zeros(11)
        assert arrays.sce_probs_t.py_func(sv, np.asfortranarray(y1), wm2, wz2, wl2, 11.0,
                                          probs) == loss  # the same arithmetic
        np.testing.assert_array_equal(wz2, wz)
        np.testing.assert_allclose(probs, np.exp(want_log), rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("name, ref", [("exp", np.exp), ("log", np.log), ("tanh", np.tanh),
                                       ("sin", np.sin), ("cos", np.cos)])
def test_map_kernels_match_numpy(name, ref):
    m = _RNG.uniform(0.01, 30.0, (3, 20))
    kernel = getattr(arrays, f"map_{name}")
    for v in _layouts(m):  # 1-D: a matrix flat, or row by row (a strided row too)
        out = np.empty((3, 20))
        if v.flags.c_contiguous:
            kernel.py_func(v.reshape(v.size), out.reshape(out.size))
        else:
            for r in range(3):
                kernel.py_func(v[r], out[r])
        np.testing.assert_allclose(out, ref(m), rtol=1e-15, atol=1e-300)
        compiled = np.empty(20)
        kernel(v[1], compiled)  # compiled, on a strided row where v is a transposed view
        np.testing.assert_allclose(compiled, ref(m[1]), rtol=1e-15, atol=1e-300)


def test_copied_kernels_are_renamed_with_their_callees():
    """A generated module carries ``_sce_t`` and what it calls (``_row_lse``, which calls
    ``_col_max``, and ``_sum1d``), every call renamed, and binds the names they read."""
    text, reads = copy_functions("arrays", ["sce_t"])
    defs = [n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)]
    assert defs == ["_col_max", "_row_lse", "_sce_t", "_sum1d"]
    called = {n.func.id for n in ast.walk(ast.parse(text))
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert called == {"_col_max", "_row_lse", "_sum1d", "njit", "range", "max", "exp", "log"}
    assert reads == {"njit", "exp", "log", "SUMS"}
    n = sp.Symbol("n", integer=True, positive=True)
    X, W = sp.MatrixSymbol("X", n, 3), sp.MatrixSymbol("W", 3, 2)
    model = sg.Model(sg.softmax_cross_entropy(X * W, sp.MatrixSymbol("Y", n, 2)),
                     params={W: np.zeros((3, 2))}, data=[X, sp.MatrixSymbol("Y", n, 2)])
    # its backward softmax comes from the cross-entropy: it carries sce_probs_t instead
    text, _ = copy_functions("arrays", ["sce_probs_t"])
    for block in text.split("\n\n\n"):  # each function, verbatim
        assert block.startswith("@njit") and block in model.source
    assert "sce_probs_t(" not in model.source.replace("_sce_probs_t(", "")
    assert "_sce_t(" not in model.source and "_softmax_from_lse(" not in model.source


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
    X, W = sp.MatrixSymbol("X", 4, 2), sp.MatrixSymbol("W", 2, 1)  # a matrix model too
    matrix = sg.Model(sg.mean(sg.tanh(X * W)), {W: [[0.1], [0.2]]}, [X])
    assert f"kernels {kernels.fingerprint()}" in matrix.generated.source.splitlines()[0]


def test_claim_hands_out_every_number_once_across_threads():
    import numba

    claim = loops.claim

    @numba.njit(parallel=True)
    def take(n, owner, handed):
        for t in numba.prange(64):
            c = claim(handed)
            while c < n:
                owner[c] += t + 1
                c = claim(handed)
        return handed[0]

    n = 200_000
    owner = np.zeros(n, dtype=np.int64)
    handed = take(n, owner, np.zeros(1, dtype=np.int64))
    assert handed == n + 64  # n numbers taken, then one refusal per iteration
    assert np.all((owner >= 1) & (owner <= 64))  # each taken once (a second taker adds)


def test_parallel_sums_do_not_depend_on_the_threads():
    """Chunks go to whichever thread claims them; each chunk's sums are added in chunk
    order, so the sums are the same bits with one thread or two, or without prange (the
    serial loop sums the same chunks), and match NumPy."""
    import numba

    loss = (a * sp.exp(-b * x) - y) ** 2
    model = sg.Model(loss=loss, params={a: 1.5, b: 0.2}, data=[x, y])
    m = model.trainer
    rng = np.random.default_rng(11)
    n = 150 * trainer.BLOCK_SIZE + 77  # more blocks than CHUNKS: chunks of 2 and 3 blocks
    data = np.vstack([rng.uniform(0, 10, n), rng.normal(size=n)])
    values = np.array([1.5, 0.2])
    results = []
    threads = numba.get_num_threads()
    try:
        for t, parallel in [(t, True) for t in sorted({1, threads})] + [(threads, False)]:
            numba.set_num_threads(t)
            grad = np.empty(2)
            total = trainer.loss_and_grad_sum(m.block, m.exact, m.HAS_EXACT, parallel, values,
                                              data, 3, n, grad)
            results.append(np.array([total, *grad]))
    finally:
        numba.set_num_threads(threads)
    assert all(r.tobytes() == results[0].tobytes() for r in results)
    xs, ys = data[:, 3:]
    r = 1.5 * np.exp(-0.2 * xs) - ys
    want = [np.sum(r * r), np.sum(2 * r * np.exp(-0.2 * xs)),
            np.sum(-2 * r * 1.5 * xs * np.exp(-0.2 * xs))]
    np.testing.assert_allclose(results[0], want, rtol=1e-12)


# -- symgrad.kernels.blas: large products as two single-threaded BLAS calls ----------------

def _operand(m, how):
    """``m`` C-contiguous, as a transposed view (F), or as a strided view (no unit stride)."""
    if how == "C":
        return np.ascontiguousarray(m)
    if how == "F":
        return np.ascontiguousarray(m.T).T
    wide = np.zeros((m.shape[0] * 2, m.shape[1] * 2), m.dtype)
    wide[::2, ::2] = m
    return wide[::2, ::2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lay", ["CCC", "FCC", "CFC", "FFC", "CCF", "SCS"])
def test_gemm_matches_numpy_by_hand(dtype, lay):
    """gemm(a, b, out) against the float64 product written out with einsum, for operands C
    rows, transposed views and strided views (copied), out in rows or columns, shapes whose
    product is split in two (above SPLIT_FROM: along the rows or columns of out, or along
    the inner dimension, halves not multiples of 16) or not, with dimensions 1 and 0."""
    rng = np.random.default_rng(11)
    tol = 2e-6 if dtype == np.float32 else 1e-14
    for m, k, n in [(128, 784, 128), (784, 128, 128), (130, 200, 77), (10, 128, 128),
                    (100, 333, 90), (40, 701, 40), (1, 5, 7), (7, 1, 3), (300, 300, 1),
                    (3, 0, 4), (0, 5, 2)]:
        a64, b64 = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        a, b = _operand(a64.astype(dtype), lay[0]), _operand(b64.astype(dtype), lay[1])
        out = _operand(np.full((m, n), np.nan, dtype), lay[2])
        assert blas.gemm(a, b, out) is out
        ref = np.einsum("ik,kj->ij", a.astype(np.float64), b.astype(np.float64))
        scale = np.sqrt(k) if k else 1.0
        assert np.abs(out - ref).max(initial=0.0) <= tol * scale * 4, (m, k, n)


@pytest.mark.parametrize("m, k, n", [(128, 784, 128), (784, 128, 128), (40, 701, 40)])
def test_gemm_has_the_same_bits_on_one_thread_and_two(m, k, n):
    """The halves of a split product are the same BLAS calls on one thread or two, and a cut
    along the inner dimension adds its two partial products in the same order either way:
    W3's forward product (cut along the inner 784), its backward one (along the rows of
    out) and an odd inner dimension, out in rows and in columns."""
    rng = np.random.default_rng(12)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.random((n, k), dtype=np.float32).T  # a transposed view, as W3's forward
    outs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, before):
            numba.set_num_threads(threads)
            outs.append([blas.gemm(a, b, np.empty((m, n), np.float32)).copy(),
                         blas.gemm(a, b, np.empty((n, m), np.float32).T).copy()])
    finally:
        numba.set_num_threads(before)
    assert all(np.array_equal(x, y) for x, y in zip(*outs))
    assert m * k * n >= blas.SPLIT_FROM
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert np.abs(outs[0][0] - ref).max() <= 2e-6 * np.sqrt(k) * 4


def test_gemm_cuts_where_the_fewest_entries_are_copied():
    """_split_axis, for BLAS's column-major (m x n) = (m x k)(k x n): W3's forward product
    (out.T = X W1: m the batch, n the hidden units, k = 784 inputs) is cut along k, its
    backward one (grad_W1.T = X.T grad_s0.T: m = 784) along m; a wide out along its longer
    side; a small out with a long inner dimension along it; small products not at all."""
    assert blas._split_axis(128, 128, 784) == 3
    assert blas._split_axis(784, 128, 128) == 1
    assert blas._split_axis(128, 784, 128) == 2
    assert blas._split_axis(2000, 16, 64) == 1
    assert blas._split_axis(64, 64, 64) == 0  # under SPLIT_FROM
    assert blas._split_axis(8, 8, 1 << 15) == 3


def test_gemm_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes do not match"):
        blas.gemm(np.ones((3, 4)), np.ones((5, 2)), np.empty((3, 2)))


@pytest.mark.parametrize("kind", [6, 7, 0])
def test_update_halves_is_update(kind):
    """update_halves (two halves of a long vector at once) gives update's numbers to the
    bit, on one thread and two, for Adam, AMSGrad and (passed on) SGD; the cut-off is the
    one the generator uses."""
    from symgrad.emit.arrays import HALVES_FROM

    assert HALVES_FROM == optim.HALVES_FROM
    rng = np.random.default_rng(13)
    n = optim.HALVES_FROM + 37
    hyper = np.array([0.01, 0.001, 0.0, 0.9, 0.999, 1e-8])
    p = rng.standard_normal(n).astype(np.float32)
    ref, state, ref_state = p.copy(), np.zeros((3, n), np.float32), np.zeros((3, n), np.float32)
    before = numba.get_num_threads()
    try:
        for t in range(1, 4):
            numba.set_num_threads(1 if t == 2 else before)
            g = rng.standard_normal(n).astype(np.float32)
            optim.update_halves(kind, p, g, state, t, hyper)
            optim.update(kind, ref, g, ref_state, t, hyper)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(p, ref) and np.array_equal(state, ref_state)
    assert not np.array_equal(p, rng.standard_normal(n).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fit_uses_the_relayout_that_warm_compiled(dtype):
    """A review found that ``warm`` compiled ``relayout`` for writable blocks while fit
    passes them read-only (``train.arrays._blocks``, another Numba type), so the first fit
    compiled it again (~2 s a dtype; in every process where the library's cache cannot be
    written)."""
    from symgrad import kernels
    from symgrad.kernels import loops
    from symgrad.train import arrays as A

    kernels.warm()
    before = list(loops.relayout.signatures)

    class Module:  # a generated module's WORKING: (offset, rows, columns)
        WORKING = ((0, 2, 3),)

    params = np.arange(8, dtype=dtype)
    state = np.arange(16, dtype=dtype).reshape(2, 8)
    w = A.to_working(Module, params)
    A.to_model(Module, w, np.empty_like(params))
    A.to_working(Module, state)
    added = [s for s in loops.relayout.signatures if s not in before]
    assert not added, f"fit compiled relayout for signatures warm did not: {added}"
