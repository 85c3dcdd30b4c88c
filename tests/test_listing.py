"""The listing is the lecture's flat code."""

import re

import pytest
import sympy as sp

import symgrad as sg

LECTURE_FORWARD = """
s0 = w0*x0
s1 = w1*x1
s2 = s0 + s1
s3 = s2 + w2
L = sigmoid(s3)
"""
LECTURE_BACKWARD = """
grad_L = 1.0
grad_s3 = grad_L*(1 - L)*L
grad_w2 = grad_s3
grad_s2 = grad_s3
grad_s0 = grad_s2
grad_s1 = grad_s2
grad_w1 = grad_s1*x1
grad_x1 = grad_s1*w1
grad_w0 = grad_s0*x0
grad_x0 = grad_s0*w0
"""


def _lines(text):
    return [line.strip() for line in text.strip().splitlines()]


def _assert_valid_order(lines, inputs):
    """Every name is assigned before it is read (so a reordering of independent lines is ok)."""
    defined = set(inputs)
    for line in lines:
        target, expr = (part.strip() for part in re.split(r"\+?=", line, maxsplit=1))
        for name in re.findall(r"[A-Za-z_]\w*", expr):
            if name in {"sigmoid", "exp"}:
                continue
            assert name in defined, f"{name} used before it is assigned in {line!r}"
        defined.add(target)


def test_neuron_listing_is_the_lecture_listing():
    w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
    f = sg.compile(sg.sigmoid(w0 * x0 + w1 * x1 + w2), wrt=[w0, x0, w1, x1, w2])
    assert f.generated.forward == _lines(LECTURE_FORWARD)
    assert sorted(f.generated.backward) == sorted(_lines(LECTURE_BACKWARD))
    assert f.generated.backward[:2] == ["grad_L = 1.0", "grad_s3 = grad_L*(1 - L)*L"]
    _assert_valid_order(f.generated.forward + f.generated.backward, ["w0", "x0", "w1", "x1", "w2"])
    text = f.listing()
    assert text.index("L = sigmoid(s3)") < text.index("grad_L = 1.0")
    side = f.listing(columns=True).splitlines()
    assert side[1].startswith("s0 = w0*x0") and side[1].endswith("grad_L = 1.0")


def test_listing_has_no_trivial_factors():
    a, b, c = sp.symbols("a b c")
    f = sg.compile(sp.exp(a * b) + 2 * c - 1, wrt=[a, b, c])
    for line in f.generated.backward[1:]:
        assert not re.search(r"\*1\b|\b1\*|\+ 0\b|\b0 \+", line), line


def test_fan_out_accumulates():
    """The lecture's copy gate: a value used twice gets the sum of its adjoints."""
    a, b = sp.symbols("a b")
    f = sg.compile((a + b) * (b + 1), wrt=[a, b])
    assert sum(line.startswith("grad_b +=") for line in f.generated.backward) == 1
    assert f.value_and_grad(2, 1) == (6.0, (2.0, 5.0))


def test_each_backward_line_knows_its_consumer_and_input():
    """``Program.edges``: the lecture's graph read back from the backward lines."""
    w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
    p = sg.compile(sg.sigmoid(w0 * x0 + w1 * x1 + w2), wrt=[w0, x0, w1, x1, w2]).program
    assert len(p.edges) == len(p.backward)
    found = {(str(line.lhs), consumer and consumer.name, node.name)
             for line, (consumer, node) in zip(p.backward, p.edges)}
    assert found == {("grad_L", None, "L"), ("grad_s3", "L", "s3"), ("grad_w2", "s3", "w2"),
                     ("grad_s2", "s3", "s2"), ("grad_s0", "s2", "s0"), ("grad_s1", "s2", "s1"),
                     ("grad_w1", "s1", "w1"), ("grad_x1", "s1", "x1"), ("grad_w0", "s0", "w0"),
                     ("grad_x0", "s0", "x0")}
    assert all(consumer is None or node in consumer.inputs for consumer, node in p.edges)
    a, b = sp.symbols("a b")  # fan-out: one line per consumer of b
    q = sg.compile((a + b) * (b + 1), wrt=[a, b]).program
    into_b = [(str(line.lhs), c.name) for line, (c, n) in zip(q.backward, q.edges) if n.name == "b"]
    assert len(into_b) == 2 and len({c for _, c in into_b}) == 2
    assert all(lhs == "grad_b" for lhs, _ in into_b)


def test_pipeline_runs_each_step_once_and_only_when_asked(tmp_path):
    from symgrad.compile import Pipeline

    x, y = sp.symbols("x y")
    p = Pipeline(sp.sin(x) * y, [x, y], [x], cache_dir=tmp_path)
    assert p.steps == ("build", "differentiate") and not any(tmp_path.iterdir())
    assert [n.name for n in p.param_nodes] == ["x", "y"]
    assert p.program.grads == [sp.Symbol("grad_x")]
    g = p.generated
    assert p.generated is g and p.steps[-1] == "render" and "grad_x" in g.source
    assert p.path.parent == tmp_path and p.path.read_text() == g.source
    assert p.steps[-1] == "write" and p.timings["cache_hit"] is False
    with pytest.raises(sg.ExpressionError, match="z does not occur in the expression"):
        Pipeline(sp.sin(x), [x, sp.Symbol("z")])
    with pytest.raises(ValueError, match="kind must be one of"):
        Pipeline(x, [x], kind="other")


def test_shared_subexpression_is_computed_once():
    x, y = sp.symbols("x y")
    u = sp.sin(x * y)
    f = sg.compile(u**2 + sp.exp(u) + u, wrt=[x, y])
    assert sum("sin(" in line for line in f.generated.forward) == 1
    assert sum("*" in line and "x" in line and "y" in line for line in f.generated.forward) == 1


def test_wrt_subset_prunes_gradients():
    w, x = sp.symbols("w x")
    f = sg.compile(sp.tanh(w * x), wrt=[w])
    assert not any(line.startswith("grad_x") for line in f.generated.backward)
    value, (gw,) = f.value_and_grad(0.5, 2.0)
    assert gw == 2.0 * (1 - value**2)


def test_source_is_a_standalone_module(tmp_path):
    x = sp.Symbol("x")
    f = sg.compile(sg.softplus(x) * x, wrt=[x])
    assert "import symgrad" not in f.source and "from symgrad" not in f.source
    path = f.save(tmp_path / "model_grad.py")
    assert path.read_text() == f.source
