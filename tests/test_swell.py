"""W5: a deep composition whose tree doubles per level stays linear as a DAG."""

import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from symgrad.expression import as_expression
from symgrad.graph import build
from symgrad.rules import differentiate


def _w5(depth):
    ws = sp.symbols(f"w0:{depth}")
    x = sp.Float(0.5)
    for w in ws:
        x = x + w * sp.sin(x)
    return (x - 2) ** 2, ws


def _reference(w):
    """Hand-written reverse mode in NumPy float64."""
    xs = [0.5]
    for wk in w:
        xs.append(xs[-1] + wk * np.sin(xs[-1]))
    loss = (xs[-1] - 2.0) ** 2
    grad = np.empty(len(w))
    gx = 2.0 * (xs[-1] - 2.0)
    for k in range(len(w) - 1, -1, -1):
        grad[k] = gx * np.sin(xs[k])
        gx = gx * (1.0 + w[k] * np.cos(xs[k]))
    return loss, grad


def test_depth_30_matches_reference():
    loss, ws = _w5(30)
    f = sg.compile(loss, wrt=list(ws))
    w = np.random.default_rng(0).uniform(0, 0.2, size=30)
    value, grad = f.value_and_grad(*w)
    want_value, want_grad = _reference(w)
    assert abs(value - want_value) < 1e-12
    assert np.max(np.abs(np.array(grad) - want_grad)) < 1e-12


@pytest.mark.parametrize("depth", [30, 300])
def test_code_is_linear_in_depth(depth):
    loss, ws = _w5(depth)
    graph = build(as_expression(loss))
    node_of = graph.input_nodes()
    program = differentiate(graph, [node_of[w] for w in ws])
    assert len(program.forward) == 3 * depth + 1
    assert len(program.backward) <= 5 * depth + 2
