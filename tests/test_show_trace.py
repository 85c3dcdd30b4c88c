"""The annotated listing: every line's value at a point, the slide's numbers."""

import math

import numpy as np
import pytest
import sympy as sp
from conftest import run_listing

import symgrad as sg
from symgrad.show import trace
from symgrad.show.trace import format_number

w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
A, B, C, D = sp.symbols("a b c d")
NEURON = sg.sigmoid(w0 * x0 + w1 * x1 + w2)


@pytest.fixture(scope="module")
def neuron():
    return sg.compile(NEURON, wrt=[w0, x0, w1, x1, w2])


def test_neuron_trace_has_the_slides_numbers(neuron, vectors):
    case = vectors["sigmoid_neuron"]
    t = trace(neuron, **case["point"])
    want = case["intermediates"]
    assert [t["s0"], t["s1"], t["s2"], t["s3"]] == [
        want["s0 (w0*x0)"], want["s1 (w1*x1)"], want["s2"], want["s3"]]
    assert t.value == pytest.approx(case["value"], rel=1e-15)
    assert t["grad_s3"] == pytest.approx(want["grad_s3"], rel=1e-15)
    for s, g in t.gradient.items():
        assert g == pytest.approx(case["grad"][s.name], rel=1e-14)

    text = str(t)
    for line in [*neuron.generated.forward, *neuron.generated.backward]:
        assert line in text
    for number in (case["value"], *case["grad"].values()):
        assert format_number(number) in text  # 0.7311, -0.1966, 0.3932, -0.3932, -0.5898
    assert "L = sigmoid(s3)" in text.splitlines()[6]
    assert text.splitlines()[6].endswith("0.7311")


def test_values_are_aligned_on_the_decimal_point(neuron):
    text = trace(neuron, 2, -1, -3, -2, -3).format()
    rows = [r for r in text.splitlines()[1:] if r and not r.startswith("#")]
    points = {r.index(".") for r in rows if "." in r.split("   ")[-1]}
    assert len(points) == 1


def test_gate_chain_trace(vectors):
    """With exp, the sigmoid is the slide's chain: -0.53, -0.53, -0.20, 0.20."""
    case = vectors["sigmoid_gate_chain"]
    s = sp.Symbol("s")
    t = trace(sg.compile(1 / (1 + sp.exp(-s)), wrt=[s]), s=1.0)
    fwd, bwd = case["forward"], case["backward"]
    assert [t["s0"], t["s1"], t["s2"], t["L"]] == pytest.approx(
        [fwd["a"], fwd["b"], fwd["c"], fwd["f"]], rel=1e-15)
    got = [t["grad_s2"], t["grad_s1"], t["grad_s0"], t["grad_s"]]
    assert got == pytest.approx(
        [bwd["grad_c"], bwd["grad_b"], bwd["grad_a"], bwd["grad_s"]], rel=1e-14)
    text = t.format(digits=2)
    for number in ("-0.53", "-0.2", "0.2", "0.73", "0.37", "1.4"):
        assert f" {number}" in text


def test_fan_out_shows_each_term_and_the_sum(vectors):
    a, b = sp.symbols("a b")
    t = trace(sg.compile((a + b) * (b + 1), wrt=[a, b]), a=2, b=1)
    assert t["grad_b"] == vectors["fanout_sum"]["grad"]["b"]
    line = next(li for li in t.backward if li.code.startswith("grad_b +="))
    assert (line.value, line.term) == (5.0, 3.0)
    assert "(+= 3)" in str(t)
    assert t.contributions() == {("L", "s0"): 3.0, ("L", "s1"): 2.0, ("s1", "b"): 2.0,
                                 ("s1", "a"): 2.0, ("s0", "b"): 3.0}


@pytest.mark.parametrize("expr, point", [
    (A * B / (C * D) - sp.Rational(3, 2) * A * B / C, dict(a=0.3, b=0.7, c=1.3, d=-0.9)),
    (A**2 * B**-3 * C ** sp.Rational(-1, 2) + sp.sqrt(D**2 + 1) / 3,
     dict(a=0.3, b=0.7, c=1.1, d=2)),
    ((A + B) / (A - B) + sp.Max(C, D) * sp.Min(A, B), dict(a=0.3, b=0.5, c=-1.7, d=-1.7)),
    (sp.Piecewise((A / 3, A > B), (B**3, sp.And(B > 0, C < 1)), (C, True)) + sg.relu(D) * A,
     dict(a=0.2, b=0.7, c=0.4, d=1.5)),
])
def test_every_value_is_the_one_its_printed_line_computes(expr, point):
    """The trace runs the program as data; executing the printed lines gives the same bits."""
    f = sg.compile(expr)
    want = run_listing(f, **point)
    t = trace(f, **point)
    assert {name: t[name] for name in want} == want


def test_columns_put_forward_and_backward_side_by_side(neuron):
    rows = trace(neuron, 2, -1, -3, -2, -3).format(columns=True).splitlines()
    assert rows[1].startswith("# forward") and "# backward" in rows[1]
    assert rows[2].startswith("s0 = w0*x0") and "grad_L = 1.0" in rows[2]


def test_first_non_finite_line_is_marked_not_raised():
    x = sp.Symbol("x")
    t = trace(sg.compile(x * sp.log(x) + 1 / x, wrt=[x]), 0.0)
    assert t.first_nonfinite.code == "s0 = 1/x"
    assert math.isinf(t["s0"]) and math.isnan(t.value)
    assert "<- first non-finite value" in str(t).splitlines()[2]


def test_model_trace_at_one_sample_uses_the_current_parameters():
    w, b, x, y = sp.symbols("w b x y")
    model = sg.Model(loss=(w * x + b - y) ** 2, params={w: 0.5, b: -0.1}, data=[x, y])
    model.params = {w: 1.5}  # as after training
    t = trace(model, x=2.0, y=1.0)
    residual = 1.5 * 2.0 - 0.1 - 1.0
    assert t.value == pytest.approx(residual**2)
    assert t.gradient == pytest.approx({w: 2 * residual * 2.0, b: 2 * residual})
    assert t.point == {"x": 2.0, "y": 1.0, "w": 1.5, "b": -0.1}
    picked = trace(model, {x: np.array([0.0, 2.0]), y: np.array([0.0, 1.0])}, sample=1)
    assert picked.value == t.value
    assert trace(model, 2.0, 1.0, w=0.0)["grad_b"] == pytest.approx(2 * (-0.1 - 1.0))


def test_trace_errors_name_the_problem(neuron):
    with pytest.raises(sg.InputError, match="missing value for x1"):
        trace(neuron, w0=2, x0=-1, w1=-3, w2=-3)
    with pytest.raises(sg.InputError, match="unexpected argument 'z'"):
        trace(neuron, 2, -1, -3, -2, -3, z=1)
    with pytest.raises(sg.InputError, match="NaN"):
        trace(neuron, 2, -1, -3, -2, float("nan"))
    with pytest.raises(sg.InputError, match="array of shape"):
        trace(neuron, 2, -1, -3, -2, np.zeros(3))
    with pytest.raises(TypeError, match="CompiledFunction or Model"):
        trace(NEURON, 1, 2, 3, 4, 5)
