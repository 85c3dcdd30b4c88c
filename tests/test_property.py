"""Random expression trees: symgrad's gradient equals sympy.diff's, evaluated independently."""

import math

import pytest
import sympy as sp
from conftest import expression_trees
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import symgrad as sg

X, Y, Z = sp.symbols("x y z", real=True)

UNARY = [
    sp.sin, sp.cos, sp.tanh, sp.atan, sg.sigmoid, sg.softplus, sp.Abs,
    lambda e: sp.exp(sp.tanh(e)),
    lambda e: sp.log(1 + e**2),
    lambda e: sp.sqrt(1 + e**2),
    lambda e: -e,
    lambda e: e**2,
    lambda e: e**3,
]
BINARY = [
    lambda a, b: a + b,
    lambda a, b: a - b,
    lambda a, b: a * b,
    lambda a, b: a / (1 + b**2),
    lambda a, b: sp.Max(a, b),
]

leaves = st.sampled_from([X, Y, Z, sp.Integer(2), sp.Rational(1, 3), sp.Float(0.75)])
trees = expression_trees(leaves, UNARY, BINARY)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expr=trees,
    point=st.tuples(*[st.floats(-1.5, 1.5, allow_nan=False) for _ in range(3)]),
)
def test_random_trees_match_sympy_diff(expr, point):
    syms = [s for s in (X, Y, Z) if s in expr.free_symbols]
    assume(syms)
    f = sg.compile(expr, wrt=syms)
    subs = dict(zip((X, Y, Z), point))
    want_value = float(expr.evalf(30, subs=subs))
    want_grad = []
    for s in syms:
        d = sp.diff(expr, s)
        assume(not d.has(sp.Derivative, sp.Subs))
        want_grad.append(float(d.rewrite(sp.Piecewise).evalf(30, subs=subs)))
    assume(not _near_kink(expr, subs))
    value, grad = f.value_and_grad(*[subs[s] for s in syms])
    assert value == pytest.approx(want_value, rel=1e-10, abs=1e-10)
    assert grad == pytest.approx(want_grad, rel=1e-8, abs=1e-8)


def _near_kink(expr, subs):
    """Abs and Max are not differentiable at their kinks; skip points within 1e-6 of one."""
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Abs):
            if abs(float(node.args[0].evalf(30, subs=subs))) < 1e-6:
                return True
        elif isinstance(node, sp.Max):
            vals = sorted(float(a.evalf(30, subs=subs)) for a in node.args)
            if any(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(vals, vals[1:])):
                return True
    return False
