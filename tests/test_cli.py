"""The command line: every command, its help, and clear errors."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from symgrad.cli import main

ROOT = Path(__file__).resolve().parents[1]

MODELS = '''
import sympy as sp
import symgrad as sg

w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
L = sg.sigmoid(w0*x0 + w1*x1 + w2)
chain = 1 / (1 + sp.exp(-(w0*x0 + w1*x1 + w2)))
compiled = sg.compile(L, wrt=[w0, x0, w1, x1, w2])
w, x, y = sp.symbols("w x y")
model = sg.Model(loss=(w*x - y)**2, params={w: 0.5}, data=[x, y])
number = 3


class wrong_square(sp.Function):
    nargs = 1


@sg.rule(wrong_square, forward=lambda a: a**2)
def _wrong(node, out, grad_out):
    return (grad_out * 3 * node.args[0],)


wrong = wrong_square(w)
'''
POINT = ["w0=2", "x0=-1", "w1=-3", "x1=-2", "w2=-3"]


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "models.py"
    path.write_text(textwrap.dedent(MODELS), encoding="utf-8")
    return str(path)


def test_listing(target, capsys):
    assert main(["listing", f"{target}:L"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# forward\ns0 = w0*x0\n") and "grad_x0 = grad_s0*w0" in out
    assert main(["listing", f"{target}:compiled", "--columns"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("s0 = w0*x0")
    assert main(["listing", f"{target}:L", "--wrt", "w0,w2", "--name", "out"]) == 0
    out = capsys.readouterr().out
    assert "out = sigmoid(s3)" in out and "grad_x0" not in out


def test_trace_prints_the_slides_numbers(target, capsys):
    assert main(["trace", f"{target}:chain", *POINT]) == 0
    out = capsys.readouterr().out
    for number in ("0.7311", "-0.5344", "-0.1966", "0.3932", "-0.5898"):
        assert number in out
    assert main(["trace", f"{target}:model", "x=2", "y=1"]) == 0
    assert "# loss = (w*x - y)**2  at  x=2, y=1, w=0.5" in capsys.readouterr().out


def test_check_exit_status(target, capsys):
    assert main(["check", f"{target}:L", *POINT]) == 0
    assert "passed: 5 of 5" in capsys.readouterr().out
    assert main(["check", f"{target}:wrong", "w=0.7"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_graph_and_export(target, tmp_path, capsys):
    svg = tmp_path / "neuron.svg"
    assert main(["graph", f"{target}:L", *POINT, "-o", str(svg)]) == 0
    assert "0.73" in svg.read_text() and f"wrote {svg}" in capsys.readouterr().out
    module = tmp_path / "neuron_grad.py"
    assert main(["export", f"{target}:compiled", "-o", str(module)]) == 0
    assert "def value_and_grad(" in module.read_text()
    assert main(["export", f"{target}:model"]) == 0
    assert "def train(" in capsys.readouterr().out


def test_cache_info_and_clear(tmp_path, capsys):
    (tmp_path / "sg_0123.py").write_text("")
    assert main(["--cache-dir", str(tmp_path), "cache"]) == 0
    assert "1 generated modules" in capsys.readouterr().out
    # the kernel library stays (clearing it is tested in tests/test_cache_trust.py)
    assert main(["--cache-dir", str(tmp_path), "cache", "clear", "--keep-kernels"]) == 0
    assert "removed 1 files" in capsys.readouterr().out
    assert not list(tmp_path.glob("sg_*.py"))


@pytest.mark.parametrize("argv, message", [
    (["listing", "missing.py:L"], "no such file: missing.py"),
    (["listing", "{target}:nope"], "has no name 'nope'; it defines L, chain, compiled, model"),
    (["listing", "{target}:number"], "is a int; expected a SymPy expression"),
    (["listing", "{target}"], "TARGET must be FILE.py:NAME"),
    (["listing", "no_such_module_xyz:L"], "cannot import module 'no_such_module_xyz'"),
    (["trace", "{target}:L", "w0=2"], "missing value for w1, w2, x0, x1"),
    (["trace", "{target}:L", "w0"], "expected NAME=VALUE, got 'w0'"),
    (["trace", "{target}:L", "w0=two"], "'two', which is not a number"),
    (["listing", "{target}:compiled", "--wrt", "w0"], "--wrt applies to expressions"),
    (["listing", "{target}:L", "--wrt", "q"], "--wrt names 'q'"),
    (["graph", "{target}:L", *POINT, "-o", "x.bmp"], "save as .svg, .png or .dot"),
    (["trace", "{target}:L", *POINT, "w0=5"], "w0 is given twice (w0=2 and w0=5)"),
    (["trace", "{target}:L", *POINT[1:], "w0=1e400"], "w0, 1e400, is too large for a float64"),
    (["check", "{target}:L", *POINT, "--eps", "0"], "eps is the relative step"),
    (["check", "{target}:L", *POINT, "--eps", "1e300"], "must lie in [2.22e-16, 1)"),
    (["check", "{target}:L", *POINT, "--rtol", "-1"], "rtol is a tolerance: it must lie in [0, 1)"),
    (["check", "{target}:L", *POINT, "--rtol", "nan"], "got nan"),
    (["check", "{target}:L", *POINT, "--rtol", "1e9"], "rtol is a tolerance"),
    (["check", "{target}:L", *POINT, "--atol", "1e300"], "atol is a tolerance"),
    (["check", "{target}:L", *POINT, "--atol", "inf"], "atol is a tolerance"),
])
def test_errors_are_one_clear_line(target, capsys, argv, message):
    assert main([a.replace("{target}", target) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("symgrad: error: ") and message in err


def test_an_error_in_the_users_file_shows_its_traceback(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    assert main(["listing", f"{path}:L"]) == 2
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err and "running" in err and "failed" in err


@pytest.mark.parametrize("command", ["listing", "export", "trace", "check", "graph", "cache"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: symgrad {command}" in capsys.readouterr().out


def test_python_dash_m_symgrad():
    done = subprocess.run([sys.executable, "-m", "symgrad", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("listing", "export", "trace", "check", "graph", "cache"):
        assert command in done.stdout


def test_options_may_follow_the_target_and_the_point(target, tmp_path, capsys):
    """The usage line shows options after TARGET; argparse alone refused them there."""
    assert main(["check", f"{target}:L", "--rtol", "1e-4", *POINT]) == 0
    assert main(["check", f"{target}:L", *POINT[:2], "--atol", "1e-8", *POINT[2:]]) == 0
    assert capsys.readouterr().out.count("passed: 5 of 5") == 2
    assert main(["trace", f"{target}:chain", *POINT, "--digits", "2"]) == 0
    assert "0.73" in capsys.readouterr().out
    cache = tmp_path / "cache"
    assert main(["listing", f"{target}:L", "--cache-dir", str(cache)]) == 0
    assert list(cache.glob("sg_*.py"))  # the option after the command was used
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    assert f"{cache}: 1 generated modules" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["trace", "{target}:L", *POINT, "--digits", "-3"], "--digits: -3 is not between 1 and 17"),
    (["trace", "{target}:L", *POINT, "--digits", "x"], "'x' is not a whole number"),
    (["graph", "{target}:L", *POINT, "-o", "g.svg", "--digits", "-1"], "not between 0 and 17"),
])
def test_bad_option_values_are_usage_errors(target, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main([a.replace("{target}", target) for a in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
