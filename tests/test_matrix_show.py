"""Trace, picture, gradient check and notebook display of a matrix model."""

import numpy as np
import pytest
import sympy as sp

import symgrad as sg

n = sp.Symbol("n", integer=True, positive=True)
X, Y = sp.MatrixSymbol("X", n, 2), sp.MatrixSymbol("Y", n, 2)
W1, b1 = sp.MatrixSymbol("W1", 2, 3), sp.MatrixSymbol("b1", 1, 3)
W2 = sp.MatrixSymbol("W2", 3, 2)
DATA = {X: np.array([[1.0, 2.0], [0.5, -1.0], [0.3, 0.2]]), Y: np.eye(2)[[0, 1, 1]]}
INIT = {W1: np.array([[0.3, -0.2, 0.5], [0.1, 0.4, -0.3]]), b1: np.array([[0.1, -0.1, 0.2]]),
        W2: np.array([[0.2, -0.5], [0.7, 0.1], [-0.3, 0.4]])}


@pytest.fixture(scope="module")
def model():
    loss = sg.softmax_cross_entropy(sg.tanh(X * W1 + b1) * W2, Y) + 0.01 * sg.l2(W1)
    return sg.Model(loss, params=INIT, data=[X, Y])


def numpy_forward():
    a1 = np.tanh(DATA[X] @ INIT[W1] + INIT[b1])
    s = a1 @ INIT[W2]
    lse = np.log(np.exp(s).sum(axis=1, keepdims=True))
    return a1, -np.mean(np.sum(DATA[Y] * (s - lse), axis=1)) + 0.01 * np.sum(INIT[W1] ** 2)


def test_trace_shows_each_line_with_its_shape_and_values(model):
    t = model.trace(DATA)
    a1, loss = numpy_forward()
    assert t.value == pytest.approx(loss, rel=1e-12)
    tanh_line = next(line for line in t.forward if line.code.endswith("tanh(s3)"))
    np.testing.assert_allclose(tanh_line.value.array, a1, rtol=1e-12)
    text = str(t)
    assert "3x3 [" in text and "X @ W1" in text and "grad_W1 = X.T @" in text
    # the trace's gradient (NumPy, line by line) equals the compiled one
    _, grads = model.value_and_grad(DATA)
    np.testing.assert_allclose(t["grad_W2"].array, grads[W2], rtol=1e-10)
    assert str(model.trace(model.prepare(DATA))) == text  # prepared data traces the same


def test_picture_draws_matmul_gates_with_shapes_and_gradient_norms(model):
    svg = model.graph(DATA).svg
    assert "matmul" in svg and "softmax_cross_entropy" in svg
    assert "3x2" in svg and "|g|=" in svg


def test_gradient_check_passes_and_names_entries(model):
    result = sg.check_gradients(model, DATA, samples=2, verbose=False)
    assert result.passed
    assert {row.name.split("[")[0] for row in result.rows} == {"W1", "b1", "W2"}


def test_notebook_display(model):
    html = model._repr_html_()
    assert "loss of a batch" in html and "W1" in html and "2x3" in html
    markdown = model._repr_markdown_()
    assert "X @ W1" in markdown and r"\left\|W_{1}\right\|_F^2" in markdown


def test_setting_constant_weights_warns_about_symmetry(model):
    saved = model.params
    try:
        with pytest.warns(sg.SymmetryWarning, match="W1 starts with all entries equal"):
            model.params = {W1: np.zeros((2, 3))}
    finally:
        model.params = saved


def test_predict_evaluates_the_prediction_with_numpy(model):
    a1, _ = numpy_forward()
    p = model.predict(sg.softmax(sg.tanh(X * W1 + b1) * W2), {X: DATA[X]})
    s = a1 @ INIT[W2]
    np.testing.assert_allclose(p, np.exp(s) / np.exp(s).sum(axis=1, keepdims=True), rtol=1e-12)


def test_saved_module_trains_on_its_own(model, tmp_path):
    """The saved module imports only NumPy and Numba and its value_and_grad runs standalone."""
    import importlib.util

    path = model.save(tmp_path / "mlp.py")
    text = path.read_text()
    assert "import symgrad" not in text and "from symgrad" not in text
    spec = importlib.util.spec_from_file_location("saved_mlp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    p = np.concatenate([INIT[W1].ravel(), INIT[b1].ravel(), INIT[W2].ravel()])
    g = np.empty_like(p)
    x, y = np.ascontiguousarray(DATA[X].T), np.ascontiguousarray(DATA[Y].T)
    loss = module.value_and_grad(p, g, x, y, 3, module.alloc(3), module.DIMS)
    value, grads = model.value_and_grad(DATA)
    assert loss == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(g[-6:].reshape(3, 2), grads[W2], rtol=1e-12)
