"""The losses of sg.losses applied to matrices: the mean over entries (Dice: its own form)."""

import numpy as np
import pytest
import sympy as sp

import symgrad as sg

n = sp.Symbol("n", integer=True, positive=True)
X, T = sp.MatrixSymbol("X", n, 3), sp.MatrixSymbol("T", n, 2)
W = sp.MatrixSymbol("W", 3, 2)
RNG = np.random.default_rng(5)
XD = RNG.standard_normal((6, 3))
TD = RNG.uniform(0.05, 0.95, (6, 2))
W0 = RNG.standard_normal((3, 2)) * 0.5


def numpy_loss(w):
    z = XD @ w
    p = 1 / (1 + np.exp(-z))
    r = np.abs(z - TD)
    huber = np.where(r <= 0.5, r**2 / 2, 0.5 * (r - 0.25))
    bce = -(TD * np.log(p) + (1 - TD) * np.log(1 - p))
    dice = 1 - (2 * np.sum(p * TD) + 1) / (np.sum(p) + np.sum(TD) + 1)
    return (np.mean((p - TD) ** 2) + np.mean(bce) + dice + np.mean(huber)
            + np.mean(np.abs(z - TD)) + np.mean(np.logaddexp(0, z) - TD * z))


@pytest.mark.slow
def test_matrix_losses_match_numpy_and_finite_differences():
    Z = X * W
    P = sg.sigmoid(Z)
    loss = (sg.losses.mse(P, T) + sg.losses.bce(P, T) + sg.losses.dice(P, T)
            + sg.losses.huber(Z, T, 0.5) + sg.losses.mae(Z, T)
            + sg.losses.bce_with_logits(Z, T))
    model = sg.Model(loss, params={W: W0}, data=[X, T])
    value, grads = model.value_and_grad({X: XD, T: TD})
    assert value == pytest.approx(numpy_loss(W0), rel=1e-12)
    h = 1e-6
    numerical = np.zeros_like(W0)
    for i in range(3):
        for j in range(2):
            up, down = W0.copy(), W0.copy()
            up[i, j] += h
            down[i, j] -= h
            numerical[i, j] = (numpy_loss(up) - numpy_loss(down)) / (2 * h)
    np.testing.assert_allclose(grads[W], numerical, rtol=1e-6, atol=1e-9)


def test_dice_needs_matrices():
    a, b = sp.symbols("a b")
    with pytest.raises(TypeError, match="two matrices"):
        sg.losses.dice(a, b)
