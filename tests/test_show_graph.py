"""Pictures of the graph: the slide's labels, escaping, collapsing, DOT, the layout."""

import re
import xml.etree.ElementTree as ET

import pytest
import sympy as sp
from conftest import requires

import symgrad as sg
from symgrad.graph import Graph, Node, build
from symgrad.show import graph
from symgrad.show.labels import gate_label, picture_number
from symgrad.show.layout import crossings, layered
from symgrad.show.picture import _nearest

w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
POINT = dict(w0=2, x0=-1, w1=-3, x1=-2, w2=-3)


def _texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # well-formed XML
    return [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")
            if t.text and t.get("class") != "halo"]


@pytest.fixture(scope="module")
def neuron():
    return sg.compile(sg.sigmoid(w0 * x0 + w1 * x1 + w2), wrt=[w0, x0, w1, x1, w2])


def test_neuron_picture_has_the_slides_labels(neuron, tmp_path):
    picture = graph(neuron, **POINT)
    texts = _texts(picture.svg)
    for label in ("0.73", "-0.20", "0.39", "-0.39", "-0.59", "0.20", "1.00", "-2.00", "6.00",
                  "4.00", "σ", "+", "*", "w0", "x0", "w1", "x1", "w2", "L", "s3"):
        assert label in texts, label
    assert texts.count("*") == 2 and texts.count("+") == 2
    path = picture.save(tmp_path / "neuron.svg")
    assert path.read_text(encoding="utf-8") == picture.svg
    assert picture.shown == picture.total == 10


def test_gate_chain_picture(vectors):
    s = sp.Symbol("s")
    texts = _texts(graph(sg.compile(1 / (1 + sp.exp(-s)), wrt=[s]), s=1).svg)
    for label in ("*-1", "exp", "+1", "1/x", "-1.00", "0.37", "1.37", "0.73", "-0.53", "-0.20",
                  "0.20"):
        assert label in texts, label
    assert texts.count("-0.53") == 2  # grad_c and grad_b on the slide


def test_fan_out_wires_carry_their_terms_and_the_sum():
    a, b = sp.symbols("a b")
    texts = _texts(graph(sg.compile((a + b) * (b + 1), wrt=[a, b]), 2, 1).svg)
    assert "Σ 5.00" in texts and "3.00" in texts and "2.00" in texts


def test_user_names_are_escaped():
    evil, y = sp.Symbol('<b a="1">&'), sp.Symbol("y")
    f = sg.compile(sp.exp(evil) * y, wrt=[evil, y])
    picture = graph(f, {evil: 0.5, y: 2.0})
    assert '<b a="1">&' in _texts(picture.svg)
    assert '<b a="1">' not in picture.svg
    assert "&lt;b a=&quot;1&quot;&gt;&amp;" in picture.dot()


def test_large_graph_is_collapsed_and_dot_has_everything():
    x, a = sp.symbols("x a")
    e = x
    for _ in range(12):
        e = sp.sin(e) * a + e
    f = sg.compile(e, wrt=[x, a])
    picture = graph(f, x=0.3, a=0.9, max_nodes=20)
    assert picture.shown <= 20 < picture.total
    texts = _texts(picture.svg)
    assert any(t.startswith("20 of") or "nodes, those nearest" in t for t in texts)
    assert "<rect" in picture.svg and "stroke-dasharray" in picture.svg
    dot = picture.dot()
    assert len(re.findall(r"^  n\d+ \[", dot, flags=re.M)) == picture.total
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert graph(f, x=0.3, a=0.9, max_nodes=None).shown == picture.total


def test_nearest_nodes_walk_is_iterative():
    x = Node(0, sp.Symbol, (), name="x", symbol=sp.Symbol("x"))
    nodes = [x]
    for k in range(1, 5000):
        nodes.append(Node(k, sp.Add, (nodes[-1], x), name=f"s{k}"))
    taken, frontier = _nearest(Graph(nodes, nodes[-1], [x]), 60)
    assert len(taken) + len(frontier) <= 60
    assert nodes[-1].id in taken and x.id in frontier | taken


def test_save_formats(neuron, tmp_path):
    picture = graph(neuron, **POINT)
    assert picture.save(tmp_path / "n.dot").read_text().startswith("digraph")
    with pytest.raises(ValueError, match=r"\.svg, \.png or \.dot"):
        picture.save(tmp_path / "n.jpeg")
    requires("matplotlib")
    png = picture.save(tmp_path / "n.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_model_picture_marks_data_columns():
    w, b, x, y = sp.symbols("w b x y")
    model = sg.Model(loss=(w * x + b - y) ** 2, params={w: 0.5, b: -0.1}, data=[x, y])
    texts = _texts(graph(model, x=2.0, y=1.0).svg)
    assert texts.count("data") == 2 and "loss" in texts and "**2" in texts


def test_gate_labels():
    x, y = sp.symbols("x y")
    labels = {}
    for expr in (x * y, x + y, 2 * x, x - 3, -x, x**2, 1 / x, sp.sqrt(x), 2**x, x**y,
                 sp.Max(x, y), sg.sigmoid(x), sg.leaky_relu(x, 0.1), sp.exp(x)):
        labels[str(expr)] = gate_label(next(n for n in build(expr).nodes if not n.is_input))
    assert labels == {
        "x*y": "*", "x + y": "+", "2*x": "*2", "x - 3": "-3", "-x": "*-1", "x**2": "**2",
        "1/x": "1/x", "sqrt(x)": "sqrt", "2**x": "2**", "x**y": "**", "Max(x, y)": "max",
        "sigmoid(x)": "σ", "leaky_relu(x, 0.1)": "leaky_relu(·, 0.1)", "exp(x)": "exp",
    }


def test_picture_numbers():
    assert [picture_number(v) for v in (0.7310585, -0.1966, 0.0, 6.0, 1.5e-7, -2.5e6)] == [
        "0.73", "-0.20", "0.00", "6.00", "1.50e-07", "-2.50e+06"]
    assert picture_number(None) == "" and picture_number(True) == "True"


def test_layout_layers_dummies_and_gaps():
    # 0 -> 2 -> 3 and 1 -> 3 skipping a layer: one dummy on 1 -> 3 once 1 is pulled late
    lay = layered(4, [(0, 2), (2, 3), (1, 3)])
    assert lay.layer[:4] == [0, 0, 1, 2]
    assert lay.routes[2] == [1, 4, 3] and lay.layer[4] == 1
    late = layered(4, [(0, 2), (2, 3), (1, 3)], late=[1])
    assert late.layer[1] == 1 and late.routes[2] == [1, 3]
    for layer in lay.layers:
        rows = sorted(lay.row[v] for v in layer)
        assert all(b - a >= 1 - 1e-9 for a, b in zip(rows, rows[1:]))
    with pytest.raises(ValueError, match="topological"):
        layered(2, [(1, 0)])


def test_layout_removes_avoidable_crossings():
    # two inputs wired crosswise to two gates: the sweeps untangle them
    lay = layered(4, [(0, 3), (1, 2)])
    pos = {v: k for layer in lay.layers for k, v in enumerate(layer)}
    assert (pos[0] < pos[1]) == (pos[3] < pos[2])


def test_crossing_count():
    assert crossings([(0, 1), (1, 0)]) == 1
    assert crossings([(0, 0), (1, 1), (2, 2)]) == 0
    assert crossings([(0, 2), (1, 1), (2, 0)]) == 3
    assert crossings([]) == 0


def test_layout_of_a_long_chain_is_iterative():
    n = 5000
    lay = layered(n, [(k, k + 1) for k in range(n - 1)])
    assert lay.layer[-1] == n - 1
