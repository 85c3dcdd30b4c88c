"""Bad input gets an error that names the problem and the fix, never a Numba traceback."""

import math
import re

import numpy as np
import pytest
import sympy as sp

import symgrad as sg

w, x = sp.symbols("w x")


@pytest.fixture(scope="module")
def f():
    return sg.compile(sp.log(w) * x, wrt=[w])


def test_missing_value(f):
    with pytest.raises(sg.InputError, match=r"missing value for x"):
        f.value_and_grad(w=1.0)


def test_extra_value(f):
    with pytest.raises(sg.InputError, match=r"unexpected argument 'q'.*takes w, x"):
        f.value_and_grad(w=1.0, x=2.0, q=3.0)
    with pytest.raises(sg.InputError, match="takes 2 values, got 3"):
        f.value_and_grad(1.0, 2.0, 3.0)


def test_value_given_twice(f):
    with pytest.raises(sg.InputError, match="given twice"):
        f.value_and_grad(1.0, w=2.0, x=1.0)


@pytest.mark.parametrize("bad", ["abc", None, [1.0], 1 + 2j])
def test_non_numeric_value(f, bad):
    with pytest.raises(sg.InputError, match="w"):
        f.value_and_grad(bad, 1.0)


def test_array_value(f):
    with pytest.raises(sg.InputError, match=r"array of shape \(3,\)"):
        f.value_and_grad(np.ones(3), 1.0)


def test_numpy_scalars_and_ints_are_fine(f):
    assert f.value_and_grad(np.float32(1.0), np.int64(2))[0] == 0.0
    assert f.value_and_grad(np.array(math.e), 2)[0] == pytest.approx(2.0)


def test_nan_input(f):
    with pytest.raises(sg.InputError, match="input w is NaN"):
        f.value_and_grad(float("nan"), 1.0)
    with pytest.raises(sg.InputError, match="input x is NaN"):
        f(w=1.0, x=float("nan"))


def test_nan_from_math_warns(f):
    with pytest.warns(RuntimeWarning, match="NaN at this point"):
        value, _ = f.value_and_grad(-1.0, 1.0)
    assert math.isnan(value)


def test_matrix_expression_is_refused():
    with pytest.raises(sg.ExpressionError, match=r"scalar.*shape \(2, 1\)"):
        sg.compile(sp.Matrix([w, x]), wrt=[w])
    with pytest.raises(sg.ExpressionError, match="matrix"):
        sg.compile(sp.MatrixSymbol("A", 2, 2), wrt=[w])


def test_wrt_symbol_absent():
    with pytest.raises(sg.ExpressionError, match="'q' does not occur"):
        sg.compile(w * x, wrt=[w, sp.Symbol("q")])
    with pytest.raises(sg.ExpressionError, match="different symbol named 'w'"):
        sg.compile(w * x, wrt=[sp.Symbol("w", positive=True)])


def test_wrt_must_be_symbols():
    with pytest.raises(sg.ExpressionError, match="wrt must list SymPy symbols"):
        sg.compile(w * x, wrt=[w * x])


def test_strings_are_never_parsed():
    with pytest.raises(sg.ExpressionError, match="not strings"):
        sg.compile("__import__('os').system('echo pwned')")


def test_condition_is_not_a_value():
    with pytest.raises(sg.ExpressionError, match="Piecewise"):
        sg.compile(w > x)


def test_unevaluated_derivative():
    with pytest.raises(sg.ExpressionError, match=r"\.doit\(\)"):
        sg.compile(sp.Derivative(w**2, w) + x)


def test_complex_numbers():
    with pytest.raises(sg.ExpressionError, match="real numbers"):
        sg.compile(sp.I * w)


def test_unsupported_function_names_it_and_shows_registration():
    g = sp.Function("g")
    with pytest.raises(sg.UnsupportedFunctionError) as info:
        sg.compile(g(w) * x, wrt=[w])
    message = str(info.value)
    assert "'g'" in message and "@symgrad.rule(g" in message and "grad_out" in message


def test_constant_expression():
    with pytest.raises(sg.ExpressionError, match="no symbols"):
        sg.compile(sp.Integer(3))


def test_a_bare_symbol_is_a_valid_expression():
    f = sg.compile(w, wrt=[w])
    assert f.value_and_grad(3.0) == (3.0, (1.0,))


@pytest.mark.parametrize("expr, shown", [
    (sp.exp(-sp.oo * x), "-oo (in -oo*x)"),
    (x + sp.oo, "oo (in x + oo)"),
    (sp.Piecewise((x, x < sp.oo), (0, True)), "oo (in x < oo)"),
])
def test_infinite_constants_are_refused(expr, shown):
    """exp(-oo*x) was accepted and computed NaN (issue 14)."""
    with pytest.raises(sg.ExpressionError, match=re.escape(f"infinite constant {shown}")):
        sg.compile(expr, wrt=[x])


def test_infinite_constants_in_a_matrix_loss_are_refused():
    n = sp.Symbol("n", integer=True, positive=True)
    X, W = sp.MatrixSymbol("X", n, 2), sp.MatrixSymbol("W", 2, 1)
    with pytest.raises(sg.ExpressionError, match="infinite constant -oo"):
        sg.Model(sg.sum(sg.exp(-sp.oo * X * W)), params={W: np.ones((2, 1))}, data=[X])
