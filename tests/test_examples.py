"""Run each example in examples/ as a script and check the numbers it prints."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, tmp_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_gate_patterns(tmp_path):
    out = run("gate_patterns.py", tmp_path)
    assert "(x+y)*z at (-2, 5, -4): value -12, grads -4, -4, 3" in out
    assert "tie at x=y=2: grads 0.5, 0.5" in out
    assert "de/da = 2, de/db = 5" in out


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
