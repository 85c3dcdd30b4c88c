"""Metrics from the lectures, reported (not differentiated): NumPy functions of
``(y_true, y_pred)``. Classification metrics threshold scores at ``threshold``."""

from __future__ import annotations

import numpy as np

__all__ = ["METRICS", "accuracy", "mae", "mse", "precision", "r2", "recall", "rmse"]


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean((y_pred - y_true) ** 2))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y_pred - y_true)))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.sqrt(mse(y_true, y_pred)))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot."""
    ss_tot = float(np.sum((y_true - np.mean(y_true)) ** 2))
    return 1.0 - float(np.sum((y_true - y_pred) ** 2)) / ss_tot if ss_tot else float("nan")


def _counts(y_true, y_pred, threshold):
    t = np.asarray(y_true) > 0.5
    p = np.asarray(y_pred) > threshold
    return np.sum(t & p), np.sum(~t & ~p), np.sum(~t & p), np.sum(t & ~p)


def accuracy(y_true, y_pred, threshold: float = 0.5) -> float:
    """(TP + TN) / all, predictions thresholded at ``threshold``."""
    tp, tn, fp, fn = _counts(y_true, y_pred, threshold)
    return float((tp + tn) / (tp + tn + fp + fn))


def precision(y_true, y_pred, threshold: float = 0.5) -> float:
    """TP / (TP + FP); NaN when nothing is predicted positive."""
    tp, _, fp, _ = _counts(y_true, y_pred, threshold)
    return float(tp / (tp + fp)) if tp + fp else float("nan")


def recall(y_true, y_pred, threshold: float = 0.5) -> float:
    """TP / (TP + FN); NaN when there are no positives."""
    tp, _, _, fn = _counts(y_true, y_pred, threshold)
    return float(tp / (tp + fn)) if tp + fn else float("nan")


METRICS = {f.__name__: f for f in (mse, mae, rmse, r2, accuracy, precision, recall)}
