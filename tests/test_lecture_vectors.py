"""Every worked example of the lecture (tests/data/lecture_examples.json)."""

import math

import pytest
import sympy as sp
from conftest import run_listing

import symgrad as sg


def _compile_case(case):
    names = list(case["point"])
    syms = sp.symbols(names)
    env = dict(zip(names, syms))
    env["exp"] = sp.exp
    expr = _parse(case["expr"], env)
    return sg.compile(expr, wrt=syms), syms


def _parse(text, env):
    """The vectors file holds tiny formulas; build them with Python's operators on symbols.

    This is test-side only and runs on the trusted reference file, never on user input.
    """
    return eval(text, {"__builtins__": {}}, env)


@pytest.mark.parametrize(
    "key", ["add_mul_gate", "sigmoid_neuron", "fanout_sum", "sigmoid_neuron_3in_bias"]
)
def test_value_and_gradient(vectors, key):
    case = vectors[key]
    f, syms = _compile_case(case)
    value, grad = f.value_and_grad(**case["point"])
    assert value == pytest.approx(case["value"], rel=1e-12)
    for s, g in zip(syms, grad):
        assert g == pytest.approx(case["grad"][s.name], rel=1e-12, abs=1e-15), s


def test_sigmoid_neuron_intermediates(vectors):
    case = vectors["sigmoid_neuron"]
    w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
    f = sg.compile(sg.sigmoid(w0 * x0 + w1 * x1 + w2), wrt=[w0, x0, w1, x1, w2])
    got = run_listing(f, **case["point"])
    want = case["intermediates"]
    assert got["s0"] == want["s0 (w0*x0)"]
    assert got["s1"] == want["s1 (w1*x1)"]
    assert got["s2"] == want["s2"]
    assert got["s3"] == want["s3"]
    assert got["L"] == pytest.approx(want["L"], rel=1e-15)
    assert got["grad_s3"] == pytest.approx(want["grad_s3"], rel=1e-15)


def test_sigmoid_gate_chain(vectors):
    """Written with exp, the sigmoid becomes the slide's chain negate -> exp -> +1 -> 1/x."""
    case = vectors["sigmoid_gate_chain"]
    s = sp.Symbol("s")
    f = sg.compile(1 / (1 + sp.exp(-s)), wrt=[s])
    assert f.generated.forward == ["s0 = -s", "s1 = exp(s0)", "s2 = 1 + s1", "L = 1/s2"]
    got = run_listing(f, s=1.0)
    fwd, bwd = case["forward"], case["backward"]
    assert [got["s0"], got["s1"], got["s2"], got["L"]] == pytest.approx(
        [fwd["a"], fwd["b"], fwd["c"], fwd["f"]], rel=1e-15
    )
    assert [got["grad_s2"], got["grad_s1"], got["grad_s0"], got["grad_s"]] == pytest.approx(
        [bwd["grad_c"], bwd["grad_b"], bwd["grad_a"], bwd["grad_s"]], rel=1e-14
    )


def test_two_input_mlp_mse(vectors):
    case = vectors["two_input_mlp_mse"]
    p = case["point"]
    w1, w2, w3, w4, w5, w6, b1, b2, b3, x1, x2, y = sp.symbols(
        "w1 w2 w3 w4 w5 w6 b1 b2 b3 x1 x2 y"
    )
    y1 = w1 * x1 + w2 * x2 + b1
    y2 = w3 * x1 + w4 * x2 + b2
    yhat = w5 * y1 + w6 * y2 + b3
    wrt = [w1, w2, w3, w4, w5, w6, b1, b2, b3]
    f = sg.compile((yhat - y) ** 2 / 2, wrt=wrt)
    value, grad = f.value_and_grad(p)
    assert value == pytest.approx(case["value"], rel=1e-12)
    assert grad == pytest.approx([case["grad"][s.name] for s in wrt], rel=1e-12, abs=1e-12)


def test_cross_entropy(vectors):
    case = vectors["cross_entropy"]
    p = sp.symbols("p0:4")
    t = case["target"]
    f = sg.compile(-sum(ti * sp.log(pi) for ti, pi in zip(t, p) if ti), wrt=[p[3]], inputs=[p[3]])
    for which in ("good", "poor"):
        value, (g,) = f.value_and_grad(case[which][3])
        assert value == pytest.approx(case[f"ce_{which}"], rel=1e-12)
        assert g == pytest.approx(-1 / case[which][3], rel=1e-12)


def test_l2_regularization(vectors):
    case = vectors["l2_regularization"]
    w = sp.symbols("w0:4")
    f = sg.compile(sum(wi**2 for wi in w), wrt=list(w))
    for key, want in (("w1", "R_w1"), ("w2", "R_w2")):
        value, grad = f.value_and_grad(*case[key])
        assert value == pytest.approx(case[want], rel=1e-15)
        assert grad == pytest.approx([2 * v for v in case[key]], rel=1e-15)
    assert sum(a * b for a, b in zip(case["w1"], case["x"])) == sum(
        a * b for a, b in zip(case["w2"], case["x"])
    )


def test_max_gate_router_and_tie_rule():
    """The larger input gets the gradient, the other none; a tie splits it in half."""
    x1, x2 = sp.symbols("x1 x2")
    f = sg.compile(3 * sp.Max(x1, x2), wrt=[x1, x2])
    assert f.value_and_grad(2.0, 1.0) == (6.0, (3.0, 0.0))
    assert f.value_and_grad(-1.0, 4.0) == (12.0, (0.0, 3.0))
    assert f.value_and_grad(1.5, 1.5) == (4.5, (1.5, 1.5))
    g = sg.compile(sp.Min(x1, x2), wrt=[x1, x2])
    assert g.value_and_grad(2.0, 1.0) == (1.0, (0.0, 1.0))
    assert g.value_and_grad(1.0, 1.0) == (1.0, (0.5, 0.5))


def _softmax_ce_scores():
    s = sp.symbols("s0:3")
    return s, -sp.log(sp.exp(s[0]) / sum(sp.exp(si) for si in s))


def test_softmax_ce(vectors):
    case = vectors["softmax_ce"]
    assert case["label"] == 0
    s, loss = _softmax_ce_scores()
    f = sg.compile(loss, wrt=list(s))
    value, grad = f.value_and_grad(*case["scores"])
    assert value == pytest.approx(case["loss"], rel=1e-12)
    assert grad == pytest.approx(case["grad_scores"], rel=1e-10, abs=1e-14)


def test_multiclass_hinge(vectors):
    case = vectors["multiclass_hinge"]
    y = case["label"]
    s = sp.symbols("s0:3")
    loss = sum(sp.Max(0, s[j] - s[y] + 1) for j in range(3) if j != y)
    f = sg.compile(loss, wrt=list(s))
    value, grad = f.value_and_grad(*case["scores"])
    assert value == pytest.approx(case["loss"], rel=1e-12)
    margins = [case["scores"][j] - case["scores"][y] + 1 for j in range(3)]
    want = [0.0, 0.0, 0.0]
    for j in range(3):
        if j != y and margins[j] > 0:
            want[j] += 1.0
            want[y] -= 1.0
    assert grad == pytest.approx(want)
    assert math.isclose(sum(max(0.0, m) for j, m in enumerate(margins) if j != y), value)



@pytest.mark.parametrize("case_name", ["softmax_ce", "multiclass_hinge"])
def test_matrix_losses_reproduce_the_lecture(vectors, case_name):
    """The same worked examples through the matrix API: scores a 1x3 parameter row."""
    import numpy as np

    case = vectors[case_name]
    S, Y = sp.MatrixSymbol("S", 1, 3), sp.MatrixSymbol("Y", 1, 3)
    loss = (sg.softmax_cross_entropy(S, Y) if case_name == "softmax_ce" else sg.hinge(S, Y))
    model = sg.Model(loss, params={S: np.array([case["scores"]])}, data=[Y])
    value, grads = model.value_and_grad({Y: np.eye(3)[[case["label"]]]})
    assert value == pytest.approx(case["loss"], rel=1e-12)
    if "grad_scores" in case:
        assert grads[S][0] == pytest.approx(case["grad_scores"], rel=1e-10, abs=1e-14)
    else:  # hinge: +1 per violating class, -1 per violation for the true class
        assert grads[S][0].tolist() == [-1.0, 1.0, 0.0]
