"""A user registers a derivative rule for their own SymPy function in a few lines."""

import math

import pytest
import sympy as sp

import symgrad as sg


class swish(sp.Function):
    nargs = 1


@sg.rule(swish, forward=lambda x: x * sg.sigmoid(x))
def _swish(node, out, grad_out):
    (x,) = node.args
    s = sg.sigmoid(x)
    return (grad_out * (s + out * (1 - s)),)


class scaled_square(sp.Function):
    nargs = 2


@sg.rule(scaled_square, forward=lambda x, a: a * x**2)
def _scaled_square(node, out, grad_out):
    x, a = node.args
    return (2 * grad_out * a * x, grad_out * x**2)


def test_user_function_value_and_gradient():
    w, x = sp.symbols("w x")
    f = sg.compile(swish(w * x), wrt=[w, x])
    assert "L = swish(s0)" in f.generated.forward
    assert "def swish(a0):" in f.source
    value, (gw, gx) = f.value_and_grad(0.7, -1.3)
    t = 0.7 * -1.3
    sig = 1 / (1 + math.exp(-t))
    assert value == pytest.approx(t * sig, rel=1e-14)
    assert gw == pytest.approx((sig + t * sig * (1 - sig)) * -1.3, rel=1e-13)


def test_user_function_with_two_arguments():
    x, a = sp.symbols("x a")
    f = sg.compile(scaled_square(sp.sin(x), a), wrt=[x, a])
    value, (gx, ga) = f.value_and_grad(0.4, 3.0)
    assert value == pytest.approx(3.0 * math.sin(0.4) ** 2)
    assert gx == pytest.approx(2 * 3.0 * math.sin(0.4) * math.cos(0.4))
    assert ga == pytest.approx(math.sin(0.4) ** 2)


def test_rule_requires_a_sympy_class():
    with pytest.raises(TypeError, match="SymPy class"):
        sg.rule("sin")


def test_rule_without_forward_for_unknown_function_explains():
    class mystery(sp.Function):
        nargs = 1

    @sg.rule(mystery)
    def _mystery(node, out, grad_out):
        return (grad_out,)

    x = sp.Symbol("x")
    with pytest.raises(NotImplementedError, match="forward="):
        sg.compile(mystery(x), wrt=[x])
