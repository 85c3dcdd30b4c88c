"""Content-addressed, atomic cache; saved modules run on their own."""

import os
import subprocess
import sys

import pytest
import sympy as sp

import symgrad as sg
from symgrad.compile import cache


def test_same_model_same_file_and_cache_hit(tmp_path):
    x, y = sp.symbols("x y")
    f1 = sg.compile(sp.sin(x) * y, wrt=[x, y], cache_dir=tmp_path)
    f2 = sg.compile(sp.sin(x) * y, wrt=[x, y], cache_dir=tmp_path)
    assert f1.path == f2.path and f1.path.parent == tmp_path
    assert f1.timings["cache_hit"] is False and f2.timings["cache_hit"] is True
    assert f1.path.name == f"sg_{__import__('hashlib').sha256(f1.source.encode()).hexdigest()}.py"
    assert set(f1.timings) >= {"codegen_s", "cache_hit"}
    assert f1.pipeline.steps == ("build", "differentiate", "render", "write")  # not imported
    f1.value_and_grad(1.0, 2.0)  # Numba compiles (or loads) on the first call, not before
    assert set(f1.timings) >= {"codegen_s", "compile_s", "cache_hit"}
    assert f1.pipeline.steps[-1] == "import"


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((src, dst))
        return real_replace(src, dst)

    monkeypatch.setattr(cache.os, "replace", spy)
    path, existed = cache.write_module("X = 1\n", tmp_path)
    assert not existed and path.read_text() == "X = 1\n"
    assert len(calls) == 1 and os.path.dirname(calls[0][0]) == str(tmp_path)
    assert cache.write_module("X = 1\n", tmp_path) == (path, True)
    assert len(calls) == 1
    # the module and the (private, empty) folder for Numba's files: no temp file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["__pycache__", path.name]


def test_numba_cache_files_are_written(tmp_path):
    x = sp.Symbol("x")
    f = sg.compile(sp.cos(x) ** 2, wrt=[x], cache_dir=tmp_path)
    f.value_and_grad(0.3)
    assert any(p.suffix in {".nbi", ".nbc"} for p in (tmp_path / "__pycache__").iterdir())
    assert sg.clear_cache(tmp_path, kernels=False) >= 3
    assert not list(tmp_path.glob("sg_*.py"))


def test_saved_module_runs_standalone(tmp_path):
    w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
    f = sg.compile(sg.sigmoid(w0 * x0 + w1 * x1 + w2), wrt=[w0, x0, w1, x1, w2])
    path = f.save(tmp_path / "neuron_grad.py")
    code = (
        "import sys; sys.modules['symgrad'] = None; sys.modules['sympy'] = None\n"
        "sys.argv = sys.argv[1:]; import runpy; runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(path), "2", "-1", "-3", "-2", "-3"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(" = ") for line in run.stdout.strip().splitlines())
    assert float(lines["L"]) == pytest.approx(0.7310585786300049, rel=1e-15)
    assert float(lines["dL/dw0"]) == pytest.approx(-0.19661193324148185, rel=1e-15)
    assert float(lines["dL/dx1"]) == pytest.approx(-0.5898357997244456, rel=1e-15)
