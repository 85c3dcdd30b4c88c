"""Losses (SymPy helpers) and metrics (reported)."""

import math

import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from symgrad import losses, metrics

z, t, p = sp.symbols("z t p")


def test_bce_with_logits_is_finite_and_right_at_extremes():
    f = sg.compile(losses.bce_with_logits(z, t), wrt=[z], inputs=[z, t])
    for logit in (-1e3, -30.0, -1.0, 0.0, 2.0, 40.0, 1e3):
        for label in (0.0, 1.0):
            value, (grad,) = f.value_and_grad(logit, label)
            prob = 1 / (1 + math.exp(-logit)) if logit > -700 else 0.0
            if label:
                want = math.log1p(math.exp(-logit)) if logit > -700 else -logit
            else:
                want = math.log1p(math.exp(logit)) if logit < 700 else logit
            assert math.isfinite(value) and math.isfinite(grad)
            assert value == pytest.approx(want, rel=1e-12, abs=1e-15)
            assert grad == pytest.approx(prob - label, rel=1e-12, abs=1e-15)


def test_softplus_and_sigmoid_gradients_at_1e3():
    f = sg.compile(sg.softplus(z) + sg.sigmoid(z) * t, wrt=[z, t])
    for v in (1e3, -1e3):
        value, grad = f.value_and_grad(v, 1.0)
        assert all(map(math.isfinite, (value, *grad)))


@pytest.mark.parametrize("pred, target", [(0.3, 1.0), (2.5, 1.0), (-4.0, 1.0)])
def test_regression_losses(pred, target):
    for fn, want in (
        (losses.mse, (pred - target) ** 2),
        (losses.squared_error, (pred - target) ** 2 / 2),
        (losses.mae, abs(pred - target)),
        (losses.huber, 0.5 * (pred - target) ** 2 if abs(pred - target) <= 1
         else abs(pred - target) - 0.5),
    ):
        f = sg.compile(fn(p, t), wrt=[p], inputs=[p, t])
        value, (grad,) = f.value_and_grad(pred, target)
        assert value == pytest.approx(want, rel=1e-14)
        h = 1e-6
        assert grad == pytest.approx((f(pred + h, target) - f(pred - h, target)) / (2 * h),
                                     rel=1e-6)


def test_bce_on_probabilities(vectors):
    f = sg.compile(losses.bce(p, t), wrt=[p], inputs=[p, t])
    ce = vectors["cross_entropy"]
    assert f(ce["good"][3], 1.0) == pytest.approx(ce["ce_good"], rel=1e-12)


def test_metrics_on_the_lecture_confusion_counts(vectors):
    m = vectors["metrics"]
    y_true = np.array([1] * m["TP"] + [0] * m["TN"] + [0] * m["FP"] + [1] * m["FN"], float)
    y_pred = np.array([0.9] * m["TP"] + [0.1] * m["TN"] + [0.8] * m["FP"] + [0.2] * m["FN"])
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(m["accuracy"])
    assert metrics.precision(y_true, y_pred) == pytest.approx(m["precision"])
    assert metrics.recall(y_true, y_pred) == pytest.approx(m["recall"])


def test_regression_metrics():
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([1.1, 1.9, 3.2, 3.6])
    assert metrics.mse(y_true, y_pred) == pytest.approx(np.mean((y_pred - y_true) ** 2))
    assert metrics.rmse(y_true, y_pred) == pytest.approx(math.sqrt(metrics.mse(y_true, y_pred)))
    assert metrics.mae(y_true, y_pred) == pytest.approx(0.2)
    assert metrics.r2(y_true, y_pred) == pytest.approx(1 - 0.22 / 5.0)
