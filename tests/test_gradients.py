"""Gradients against independent references: sympy.diff, central differences, PyTorch."""

import math

import numpy as np
import pytest
import sympy as sp
from conftest import requires

import symgrad as sg

x, y, z = sp.symbols("x y z")
xr, yr, zr = sp.symbols("x y z", real=True)

# (expression, point) pairs covering every built-in rule; points keep each function in domain.
CASES = [
    (x + y * z, (0.3, -1.2, 2.0)),
    (x * y * z - 3 * x, (0.3, -1.2, 2.0)),
    (x**3 + x**-2 + sp.sqrt(y) + 1 / z, (0.7, 2.5, -1.5)),
    (x ** sp.Rational(3, 2) + y ** sp.Rational(-1, 3), (0.7, 2.5, 1.0)),
    (x**y + z**x, (1.3, 0.6, 2.2)),
    (sp.exp(x * y) + sp.log(z), (0.4, -0.8, 3.0)),
    (sp.sin(x) * sp.cos(y) + sp.tan(z), (0.4, -0.8, 0.3)),
    (sp.tanh(x) + sp.sinh(y) * sp.cosh(z), (0.4, -0.8, 0.3)),
    (sp.asin(x) + sp.acos(y) + sp.atan(z), (0.4, -0.8, 3.0)),
    (sp.asinh(x) + sp.acosh(y) + sp.atanh(z), (0.4, 1.8, 0.3)),
    (sp.atan2(y, x) + sp.erf(z) + sp.erfc(x), (-0.4, 0.8, 0.3)),
    (sp.Abs(x) * y + sp.sign(z) * x, (-0.4, 0.8, 0.3)),
    (sp.Max(x, y, z) + sp.Min(x * y, z), (-0.4, 0.8, 0.3)),
    (sp.Piecewise((x**2, x > 0), (y * x, y > 1), (z, True)), (0.7, 2.0, 0.3)),
    (sp.Piecewise((x**2, x > 0), (y * x, y > 1), (z, True)), (-0.7, 2.0, 0.3)),
    (sp.Piecewise((x**2, x > 0), (y * x, y > 1), (z, True)), (-0.7, 0.5, 0.3)),
    (sp.Heaviside(x) * y + z, (0.7, 2.0, 0.3)),
    (sg.sigmoid(x * y) + sg.softplus(z), (0.7, 2.0, -0.3)),
    (sg.relu(x) + sg.relu(y) + sg.leaky_relu(z), (0.7, -2.0, -0.3)),
    (sg.leaky_relu(x, y) + sg.elu(z) + sg.elu(x, 0.5), (-0.7, 0.2, -0.3)),
    (sp.exp(-((x - y) ** 2) / (2 * z**2)) / z, (0.2, -0.1, 0.9)),
    (sp.log(1 + sp.exp(x)) - x * y + sp.pi * z + sp.E, (0.2, -0.1, 0.9)),
]


def _real(expr):
    return expr.xreplace({x: xr, y: yr, z: zr})


def _oracle_gradient(expr, point):
    real = _real(expr)
    subs = dict(zip((xr, yr, zr), point))
    return [
        float(sp.diff(real, s).rewrite(sp.Piecewise).subs(subs).evalf(30))
        for s in (xr, yr, zr)
    ]


@pytest.fixture(scope="module")
def compiled():
    cache = {}

    def get(expr):
        if expr not in cache:
            cache[expr] = sg.compile(expr, wrt=[x, y, z], inputs=[x, y, z])
        return cache[expr]

    return get


def _with_all_symbols(expr):
    """Add the symbols a case lacks (with derivative 1), so every case takes (x, y, z)."""
    return expr + sum(s for s in (x, y, z) if s not in expr.free_symbols)


@pytest.mark.parametrize("expr, point", CASES, ids=[str(i) for i in range(len(CASES))])
def test_against_sympy_diff(compiled, expr, point):
    expr = _with_all_symbols(expr)
    f = compiled(expr)
    value, grad = f.value_and_grad(*point)
    want_value = float(_real(expr).subs(dict(zip((xr, yr, zr), point))).evalf(30))
    assert value == pytest.approx(want_value, rel=1e-12, abs=1e-12)
    assert grad == pytest.approx(_oracle_gradient(expr, point), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("expr, point", CASES, ids=[str(i) for i in range(len(CASES))])
def test_against_central_differences(compiled, expr, point):
    expr = _with_all_symbols(expr)
    f = compiled(expr)
    _, grad = f.value_and_grad(*point)
    for k in range(3):
        h = 1e-6 * max(1.0, abs(point[k]))
        hi, lo = list(point), list(point)
        hi[k] += h
        lo[k] -= h
        numeric = (f(*hi) - f(*lo)) / (2 * h)
        assert grad[k] == pytest.approx(numeric, rel=1e-6, abs=1e-6), k


def test_against_pytorch(compiled):
    torch = requires("torch")
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(0)
    for _ in range(20):
        point = rng.uniform(0.2, 0.9, size=3)
        expr = (
            sg.sigmoid(x * y - z) * sp.tanh(x)
            + sp.log(1 + x**2) * sp.exp(-y)
            + sp.sqrt(z) * sp.Max(x, y)
            + sg.softplus(3 * z - x)
        )
        f = compiled(expr)
        value, grad = f.value_and_grad(*point)
        t = torch.tensor(point, requires_grad=True)
        tx, ty, tz = t
        tv = (
            torch.sigmoid(tx * ty - tz) * torch.tanh(tx)
            + torch.log(1 + tx**2) * torch.exp(-ty)
            + torch.sqrt(tz) * torch.maximum(tx, ty)
            + torch.nn.functional.softplus(3 * tz - tx)
        )
        tv.backward()
        assert value == pytest.approx(tv.item(), rel=1e-13)
        assert grad == pytest.approx(t.grad.tolist(), rel=1e-12)


def test_stable_activations_at_extremes():
    f = sg.compile(sg.sigmoid(x) + sg.softplus(y), wrt=[x, y])
    for big in (1e3, -1e3, 745.0, -745.0):
        value, grad = f.value_and_grad(big, big)
        assert math.isfinite(value) and all(math.isfinite(g) for g in grad)
    value, (gx, gy) = f.value_and_grad(-1e3, 1e3)
    assert value == pytest.approx(1e3) and gx == 0.0 and gy == 1.0


def test_batched_value_and_grad_matches_scalar_calls(compiled):
    expr = sg.sigmoid(x * y - z) + sp.sin(x) * z
    f = compiled(expr)
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=50), rng.normal(size=50)
    values, grads = f.value_and_grad_batch(X, Y, 0.3)
    assert values.shape == (50,) and grads.shape == (3, 50)
    for i in range(50):
        v, g = f.value_and_grad(X[i], Y[i], 0.3)
        assert values[i] == v and tuple(grads[:, i]) == g
    assert np.array_equal(f.value_batch(x=X, y=Y, z=0.3), values)
    buffers = (np.empty(50), np.empty((3, 50)))
    again = f.value_and_grad_batch(X, Y, 0.3, out=buffers)
    assert again[0] is buffers[0] and np.array_equal(again[1], grads)


def test_batched_input_errors(compiled):
    f = compiled(x * y + z)
    with pytest.raises(sg.InputError, match="different lengths"):
        f.value_and_grad_batch(np.ones(3), np.ones(4), 1.0)
    with pytest.raises(sg.InputError, match="y is NaN at index 1"):
        f.value_batch(np.ones(3), np.array([1.0, np.nan, 2.0]), 1.0)


def test_array_form_matches_scalar_form(compiled):
    f = compiled(sp.exp(x * y) * z - sp.cos(z))
    point = np.array([0.3, -0.7, 1.1])
    out = np.empty(3)
    value, grad = f.value_and_grad_array(point, out=out)
    assert grad is out
    assert (value, tuple(grad)) == f.value_and_grad(*point)
    with pytest.raises(sg.InputError, match=r"shape \(3,\)"):
        f.value_and_grad_array(np.ones(4))
    with pytest.raises(sg.InputError, match="input y is NaN"):
        f.value_and_grad_array(np.array([0.3, np.nan, 1.0]))


# -- conventions at kinks and edges (issue 14), against torch where installed ----------------

w = sp.Symbol("w")


@pytest.mark.parametrize("op", [sp.Max, sp.Min])
def test_n_way_ties_split_the_gradient_evenly(op):
    """A tie among all n inputs gives each 1/n (it gave 1/4, 1/4, 1/2 for three: nested
    binary nodes); a tie among some gives those an equal share, the rest none."""
    f = sg.compile(op(x, y, z, w), wrt=[x, y, z, w])
    assert f.value_and_grad(2.0, 2.0, 2.0, 2.0) == (2.0, (0.25, 0.25, 0.25, 0.25))
    g = sg.compile(op(x, y, z), wrt=[x, y, z])
    assert g.value_and_grad(1.0, 1.0, 1.0)[1] == pytest.approx((1 / 3, 1 / 3, 1 / 3), rel=1e-15)
    other = 5.0 if op is sp.Min else -5.0  # loses to the tied pair
    assert g.value_and_grad(1.0, other, 1.0)[1] == (0.5, 0.0, 0.5)
    assert g.value_and_grad(1.0, -other, 3.0)[1] == (0.0, 1.0, 0.0)
    assert sum(f.value_and_grad(3.0, 3.0, 1.0, 3.0)[1]) == pytest.approx(1.0, rel=1e-15)


@pytest.mark.parametrize("op, reduce", [(sp.Max, "amax"), (sp.Min, "amin")])
def test_n_way_ties_match_torch(op, reduce):
    torch = requires("torch")
    f = sg.compile(2 * op(x, y, z, w) + op(x, y, 0), wrt=[x, y, z, w])
    for point in [(1.0, 1.0, 1.0, 1.0), (0.0, 0.0, -1.0, 2.0), (0.0, 0.0, 0.0, 0.0),
                  (3.0, -2.0, 3.0, 0.5)]:
        t = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        amax = getattr(torch, reduce)
        (2 * amax(t) + amax(torch.cat([t[:2], torch.zeros(1, dtype=torch.float64)]))).backward()
        value, grad = f.value_and_grad(*point)
        assert grad == pytest.approx(t.grad.tolist(), rel=1e-15, abs=0), point


POW_POINTS = [(0.0, 2.0), (0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.0, -1.0), (2.0, 0.0),
              (1.5, 2.5), (-2.0, 3.0)]


def test_power_gradients_at_zero_are_finite_where_torchs_are():
    """d(x**y)/dy at x = 0, y >= 0 is 0 (it was 0 * log(0) = NaN); d/dx at y = 0 is 0."""
    f = sg.compile(x**y, wrt=[x, y])
    assert f.value_and_grad(0.0, 2.0) == (0.0, (0.0, 0.0))
    assert f.value_and_grad(0.0, 0.0) == (1.0, (0.0, 0.0))
    assert f.value_and_grad(0.0, 1.0) == (0.0, (1.0, 0.0))
    assert f.value_and_grad(2.0, 0.0)[1] == (0.0, pytest.approx(math.log(2.0), rel=1e-15))


def test_power_gradients_match_torch():
    torch = requires("torch")
    f = sg.compile(x**y, wrt=[x, y])
    for px, py in POW_POINTS:
        tx = torch.tensor(px, dtype=torch.float64, requires_grad=True)
        ty = torch.tensor(py, dtype=torch.float64, requires_grad=True)
        torch.pow(tx, ty).backward()
        value, grad = f.value_and_grad(px, py)
        want = [tx.grad.item(), ty.grad.item()]
        np.testing.assert_allclose(grad, want, rtol=1e-14, err_msg=str((px, py)))
