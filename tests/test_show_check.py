"""check_gradients: analytic vs central differences, pass, fail, kinks, models."""

import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from symgrad.show import TOLERANCES, check_gradients

w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
x = sp.Symbol("x")


class wrong_square(sp.Function):
    """x**2 with a deliberately wrong derivative rule (3x instead of 2x)."""

    nargs = 1


@sg.rule(wrong_square, forward=lambda a: a**2)
def _wrong_square(node, out, grad_out):
    (a,) = node.args
    return (grad_out * 3 * a,)


def test_neuron_passes_and_the_result_can_be_asserted_on(vectors, capsys):
    case = vectors["sigmoid_neuron"]
    f = sg.compile(sg.sigmoid(w0 * x0 + w1 * x1 + w2), wrt=[w0, x0, w1, x1, w2])
    result = check_gradients(f, **case["point"])
    assert result and result.passed and not result.failures
    assert [row.name for row in result.rows] == ["w0", "x0", "w1", "x1", "w2"]
    assert result["w0"].analytic == pytest.approx(case["grad"]["w0"], rel=1e-14)
    assert result[x1].numerical == pytest.approx(case["grad"]["x1"], rel=1e-8)
    assert result.max_rel_error < 1e-8
    printed = capsys.readouterr().out
    assert printed == str(result)
    assert "analytic" in printed and "numerical" in printed and "rel error" in printed
    assert printed.count(" ok") == 5 and "passed: 5 of 5" in printed
    result.assert_ok()


def test_a_wrong_user_rule_fails_the_check(capsys):
    f = sg.compile(wrong_square(x) + sp.sin(x), wrt=[x])
    result = check_gradients(f, 0.7)
    assert not result and result.failures == [result["x"]]
    assert result["x"].analytic == pytest.approx(3 * 0.7 + np.cos(0.7))
    assert result["x"].numerical == pytest.approx(2 * 0.7 + np.cos(0.7), rel=1e-8)
    assert "FAIL" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="gradient check failed"):
        result.assert_ok()


def test_a_kink_is_reported_but_not_failed():
    f = sg.compile(sg.relu(x) + 2 * x, wrt=[x])
    result = check_gradients(f, 0.0, verbose=False)
    assert result["x"].status == "kink" and result.passed
    assert check_gradients(f, 0.5, verbose=False)["x"].status == "ok"


def test_large_values_small_gradients_pass():
    """The rounding error of the difference grows with |f|; the tolerance allows for it."""
    f = sg.compile(1e9 + 1e-3 * sp.sin(x), wrt=[x])
    assert check_gradients(f, 0.3, verbose=False).passed


def test_tolerances_follow_the_dtype():
    f64, f32 = TOLERANCES["float64"], TOLERANCES["float32"]
    assert f64.eps == pytest.approx(np.finfo(np.float64).eps ** (1 / 3))
    assert f32.rtol > f64.rtol and f32.eps > f64.eps
    f = sg.compile(sp.exp(x), wrt=[x])
    loose = check_gradients(f, 1.0, eps=1e-2, verbose=False)  # big step: truncation error
    assert not loose.passed
    assert check_gradients(f, 1.0, eps=1e-2, rtol=1e-3, verbose=False).passed


def test_model_checks_a_few_samples_with_the_trainer_code():
    w, b, xs, y = sp.symbols("w b x y")
    model = sg.Model(loss=(w * xs + b - y) ** 2 + wrong_square(b) * 0, params={w: 0.5, b: -0.1},
                     data=[xs, y])
    data = {xs: np.linspace(-1, 1, 7), y: np.ones(7)}
    result = check_gradients(model, data, samples=3, verbose=False)
    assert result.passed and len(result.rows) == 6
    samples = sorted({row.sample for row in result.rows})
    assert len(samples) == 3
    i = samples[0]
    residual = 0.5 * data[xs][i] - 0.1 - 1.0
    assert result.rows[0].analytic == pytest.approx(2 * residual * data[xs][i], rel=1e-12)
    one = check_gradients(model, x=0.25, y=2.0, verbose=False)
    assert one.passed and {row.sample for row in one.rows} == {0}
    assert "sample" in str(one)

    bad = sg.Model(loss=wrong_square(w * xs - y), params={w: 0.5}, data=[xs, y])
    assert not check_gradients(bad, data, verbose=False).passed


def test_model_data_errors():
    w, xs = sp.symbols("w x")
    model = sg.Model(loss=(w * xs) ** 2, params={w: 0.5}, data=[xs])
    with pytest.raises(sg.InputError, match="not a data column"):
        check_gradients(model, z=1.0, verbose=False)
    with pytest.raises(sg.InputError, match="lacks the column"):
        check_gradients(model, {}, verbose=False)
