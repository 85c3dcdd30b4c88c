"""Run each example in examples/ as a script and check the numbers it prints."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import requires

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, tmp_path: Path, timeout: float = 120) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_gate_patterns(tmp_path):
    out = run("gate_patterns.py", tmp_path)
    assert "(x+y)*z at (-2, 5, -4): value -12, grads -4, -4, 3" in out
    assert "tie at x=y=2: grads 0.5, 0.5" in out
    assert "de/da = 2, de/db = 5" in out


@pytest.mark.slow
def test_optimizers_2d(tmp_path):
    out = run("optimizers_2d.py", tmp_path)
    for name in ("SGD", "Momentum", "Nesterov", "Adagrad", "RMSprop", "Adam"):
        loss = float(re.search(rf"^{name} .* loss=(\S+)", out, re.M).group(1))
        assert loss < 0.01, (name, loss)
    assert "optimizers_2d.png" in out or "skipped the plot" in out


def test_learning_rate(tmp_path):
    out = run("learning_rate.py", tmp_path)
    assert "stop_reason=diverged" in out
    assert "caught DivergenceWarning" in out
    assert out.count("stop_reason=completed") == 2


def test_early_stopping(tmp_path):
    out = run("early_stopping.py", tmp_path)
    assert "(early_stopping), best parameters restored" in out
    best = float(re.search(r"best epoch \d+: val loss (\S+);", out).group(1))
    restored = float(re.search(r"restored model: train \S+\s+val (\S+)", out).group(1))
    assert restored == pytest.approx(best, abs=1e-4)
    overfit = float(re.search(r"\(overfit: val is (\S+)x", out).group(1))
    assert overfit > 2


def test_l1_vs_l2(tmp_path):
    out = run("l1_vs_l2.py", tmp_path)
    near = {label: int(n) for label, n in
            re.findall(r"^(none|L2|L1) .*?(\d+)/27 near zero", out, re.M)}
    assert near["L1"] >= 15 and near["L1"] > near["L2"] and near["L1"] > near["none"]


def test_cutin_detector(tmp_path):
    out = run("cutin_detector.py", tmp_path)
    m = re.search(r"threshold 0.5: accuracy (\S+)%  precision (\S+)%  recall (\S+)%", out)
    acc, pre, rec = map(float, m.groups())
    assert acc > 85 and rec < pre and rec < 50


@pytest.mark.slow
def test_digits_mlp(tmp_path):
    requires("sklearn")
    out = run("digits_mlp.py", tmp_path, timeout=300)
    assert "tanh(" in out and "softmax_cross_entropy(" in out and "grad_W1" in out  # listing
    epochs = re.findall(r"^epoch +(\d+) +loss (\S+) +val loss (\S+) +accuracy (\S+)", out, re.M)
    assert [int(e[0]) for e in epochs] == list(range(1, 31))
    assert float(epochs[-1][1]) < 0.3 * float(epochs[0][1])
    assert float(epochs[-1][3]) > 0.95
    test_accuracy = float(re.search(r"^test accuracy: (\S+)", out, re.M).group(1))
    assert test_accuracy > 0.9
    assert re.search(r"^compile time: [\d.]+ s", out, re.M)
    assert "wrote digits_loss.png" in out or "skipped the plot" in out


@pytest.mark.slow
def test_initialization(tmp_path):
    out = run("initialization.py", tmp_path, timeout=300)
    assert "7 SymmetryWarnings (W1, W2, W3, W4, W5, W6, W7)" in out
    table = out.split("gradient norm ||dL/dW_k||")[1].split("standard deviation")[0]
    norms = {name: [float(v) for v in values.split()[:7]] for name, values in
             re.findall(r"^(zeros|constant 0\.1|normal \S+|xavier) +(\d.*)$", table, re.M)}
    assert set(norms) == {"zeros", "constant 0.1", "normal 0.01", "xavier", "normal 1.0",
                          "normal 2.0"}
    xavier = norms["xavier"]
    assert norms["zeros"] == [0.0] * 7
    assert max(norms["constant 0.1"][:6]) < 1e-10 < 0.1 < norms["constant 0.1"][6]
    assert all(0.1 < v < 10 for v in xavier) and max(xavier) < 3 * min(xavier)
    assert all(s < 1e-4 * x for s, x in zip(norms["normal 0.01"], xavier))  # vanishing
    assert norms["normal 1.0"][0] > 3 * norms["normal 1.0"][6]  # exploding towards the input
    assert norms["normal 2.0"][0] > 10 * norms["normal 2.0"][6]
    trained = {name: (float(first), float(last), float(acc)) for name, first, last, acc in
               re.findall(r"^(\S+(?: \S+)?) +loss (\S+) -> (\S+) +val loss \S+ +val accuracy (\S+)",
                          out, re.M)}
    assert trained["zeros"][1] > 1.38 and trained["normal 0.01"][1] > 1.38  # ln 4: stuck
    assert trained["xavier"][1] < 0.1 and trained["xavier"][2] > 0.75
    assert trained["xavier"][2] > max(acc for name, (_, _, acc) in trained.items()
                                      if name != "xavier")
    symmetry = dict(re.findall(r"^(zeros|constant 0\.1|xavier) +max \|W\[:, j\] - W\[:, 0\]\| "
                               r"over hidden W1\.\.W6: (\S+)", out, re.M))
    assert float(symmetry["zeros"]) == 0 and float(symmetry["constant 0.1"]) == 0
    assert float(symmetry["xavier"]) > 0.1
    assert "rank of the hidden activations [1, 1, 1, 1, 1, 1]" in out
    assert "wrote initialization.png" in out or "skipped the plot" in out


@pytest.mark.slow
def test_second_order(tmp_path):
    """The issue's target: L-BFGS and Newton-CG reach scipy BFGS's optimum to 1e-8 relative
    in at most 1/5 of the gradient evaluations the best Adam needs to get within 1e-4."""
    requires("sklearn")
    out = run("second_order.py", tmp_path, timeout=600)
    best = float(re.search(r"^optimum \(scipy BFGS, gtol 1e-10\): loss (\S+)", out, re.M).group(1))
    rows = {name: (int(evals), float(final), stop) for name, evals, final, stop in re.findall(
        r"^(Adam lr=\S+|L-BFGS|Newton-CG) +\S+ +\S+ +(\d+) +\d+ +\d+ +\S+ +(\S+) +\S+  (\w+)$",
        out, re.M)}
    assert set(rows) == {"Adam lr=0.001", "Adam lr=0.01", "Adam lr=0.1", "L-BFGS", "Newton-CG"}
    adam = min(evals for name, (evals, _, _) in rows.items() if name.startswith("Adam"))
    for name in ("L-BFGS", "Newton-CG"):
        evals, final, stop = rows[name]
        assert abs(final - best) <= 1e-8 * best and stop == "converged"
        assert evals <= adam / 5, (name, evals, adam)
    assert out.count("meets the 1/5 target") == 2
    assert "wrote second_order.png" in out or "skipped the plot" in out
