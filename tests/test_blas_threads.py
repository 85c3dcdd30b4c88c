"""Matrix models with large products (symgrad.kernels.blas.gemm) and long parameter
vectors (kernels.optim.update_halves): the same numbers on one thread and two, BLAS's own
threads off while the compiled loop runs, against the NumPy tier."""

import numba
import numpy as np
import sympy as sp
from threadpoolctl import threadpool_info

import symgrad as sg
from symgrad.kernels import blas  # loads SciPy's BLAS, which gemm calls

n = sp.Symbol("n", integer=True, positive=True)
X, Y = sp.MatrixSymbol("X", n, 300), sp.MatrixSymbol("Y", n, 4)
W1, W2 = sp.MatrixSymbol("W1", 300, 160), sp.MatrixSymbol("W2", 160, 4)


def _model(rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    params = {W1: (rng.standard_normal((300, 160)) * 0.08).astype(np.float32),
              W2: (rng.standard_normal((160, 4)) * 0.1).astype(np.float32)}
    return sg.Model(sg.softmax_cross_entropy(sg.relu(X * W1) * W2, Y), params=params,
                    data=[X, Y], optimizer=sg.optim.Adam(lr=1e-3), dtype="float32")


def _data():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 512)
    return {X: rng.random((512, 300), dtype=np.float32),
            Y: np.eye(4, dtype=np.float32)[labels]}


def test_large_products_and_updates_give_the_same_bits_on_one_thread_and_two():
    """128 x 300 x 160 products (above SPLIT_FROM: two BLAS calls each) and 48,640
    parameters (above HALVES_FROM): fitted on one of Numba's threads and on all, the same
    parameters to the bit; within float32 rounding of the NumPy tier (NumPy's matmul and
    Adam); BLAS's own threads are one inside the loop and restored after."""
    model = _model()
    source = model.generated.source
    assert "gemm(W1, X.T, s0)" in source and "update_halves(" in source
    assert 128 * 300 * 160 >= blas.SPLIT_FROM
    data = _data()
    fits = []
    before = numba.get_num_threads()
    blas_before = sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    try:
        for threads in (1, before):
            numba.set_num_threads(threads)
            m = _model()
            module = m.pipeline.module
            seen = []
            loop = module.train

            def spy(*args, loop=loop, seen=seen):
                seen.extend(i["num_threads"] for i in threadpool_info()
                            if i["user_api"] == "blas")
                return loop(*args)

            module.train = spy
            try:
                m.fit(data, epochs=2, batch_size=128, shuffle=True, engine="compiled",
                      verbose=0)
            finally:
                module.train = loop
            assert seen and set(seen) == {1}
            assert sum(m.timings["epochs_on_cores"].values()) == 2
            fits.append([m.params[W1].copy(), m.params[W2].copy()])
    finally:
        numba.set_num_threads(before)
    assert sorted(i["num_threads"] for i in threadpool_info()
                  if i["user_api"] == "blas") == blas_before
    assert all(np.array_equal(a, b) for a, b in zip(*fits))
    tier = _model()
    tier.fit(data, epochs=2, batch_size=128, shuffle=True, engine="numpy", verbose=0)
    start = _model()
    for got, ref, init in zip(fits[0], (tier.params[W1], tier.params[W2]),
                              (start.params[W1], start.params[W2])):
        assert np.abs(got - ref).max() <= 1e-5
        assert np.abs(got - init).max() > 1e-3  # it trained


def test_small_models_keep_update_and_a_single_way():
    """Below both cut-offs the loop calls update, no gemm, and runs one way only."""
    a = sp.MatrixSymbol("a", 3, 2)
    Xs, Ys = sp.MatrixSymbol("X", n, 3), sp.MatrixSymbol("Y", n, 2)
    m = sg.Model(sg.losses.mse(Xs * a, Ys), params={a: np.full((3, 2), 0.1)}, data=[Xs, Ys])
    assert "update_halves(" not in m.generated.source and "gemm(" not in m.generated.source
    rng = np.random.default_rng(2)
    m.fit({Xs: rng.random((40, 3)), Ys: rng.random((40, 2))}, epochs=3, batch_size=8,
          engine="compiled", verbose=0)
    assert m.timings["epochs_on_cores"] == {"all": 0, "one": 3}  # one thread: no BLAS, no threads


def test_a_saved_module_with_gemm_runs_without_symgrad(tmp_path):
    """Review of s10-w3: Model.save copies kernels.blas into the module beside the
    template's own helpers: no name is defined twice (blas's _layout was replaced by the
    template's working-layout _layout, and gemm failed to compile in the saved module), and
    its gemm, in a process without symgrad, matches NumPy's product in float64."""
    import ast
    import json
    import subprocess
    import sys

    path = _model().save(tmp_path / "w3.py")
    tree = ast.parse(path.read_text())
    names = [s.name for s in tree.body if isinstance(s, ast.FunctionDef)]
    assert sorted({k for k in names if names.count(k) > 1}) == []
    code = f"""
import sys; sys.modules['symgrad'] = None; sys.modules['sympy'] = None
import json, runpy, numpy as np
m = runpy.run_path({str(path)!r})
rng = np.random.default_rng(3)
a, b = rng.random((128, 300), dtype=np.float32), rng.random((160, 300), dtype=np.float32).T
out = np.empty((128, 160), np.float32)
m['gemm'](a, b, out)
print(json.dumps(float(np.abs(out - a.astype(float) @ b.astype(float)).max())))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) <= 1e-4
