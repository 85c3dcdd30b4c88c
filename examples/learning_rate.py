"""The learning rate: too small is slow, a good one converges, too large diverges.

Plain gradient descent on the valley L(x, y) = (x + y)^2 / 10 + (x - y)^2 (curvatures 0.4
and 4, so steps are stable only for lr < 2 / 4 = 0.5). With lr = 1.5 every step multiplies
the error across the valley by -5: the loss overflows, fit() stops within that epoch with a
sg.DivergenceWarning, and the History is kept (stop_reason "diverged", best parameters
restored). Prints the loss after some epochs per learning rate and plots the curves
(learning_rate.png).

Run:  python examples/learning_rate.py
"""

import warnings

import numpy as np
import sympy as sp

import symgrad as sg

x, y, d = sp.symbols("x y d")
START = {x: -4.0, y: -2.0}
EPOCHS = 500
# One dummy sample d = 1 (data must occur in the loss): the mean loss is exactly L(x, y).
model = sg.Model(loss=d * ((x + y) ** 2 / 10 + (x - y) ** 2), params=START, data=[d])
dummy = {d: np.ones(1)}

curves = {}
for label, lr in (("too small", 0.002), ("good", 0.2), ("too large", 1.5)):
    model.params = START
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = model.fit(dummy, optimizer=sg.optim.SGD(lr=lr), epochs=EPOCHS, verbose=0,
                         initial_epoch=0)  # a fresh run: epochs counted from 0
    curves[f"lr={lr} ({label})"] = hist.loss
    at = "  ".join(f"epoch {e}: {hist.loss[e]:.3g}" for e in (0, 10, 100) if e < len(hist))
    print(f"lr={lr:<6g} {label:9s} {at}  last: {hist.loss[-1]:.3g} after {len(hist)} epochs,"
          f" stop_reason={hist.stop_reason}")
    for w in caught:
        if issubclass(w.category, sg.DivergenceWarning):
            print(f"  caught DivergenceWarning: {w.message}")
    if hist.stop_reason == "diverged":
        p = model.params
        print(f"  History kept: {len(hist)} epochs, best epoch {hist.best_epoch} "
              f"(loss {hist.best_loss:.3g}); parameters restored to x={p[x]:.4g}, y={p[y]:.4g}")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib not installed: skipped the plot")
else:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, loss in curves.items():
        loss = np.asarray(loss)
        ok = np.isfinite(loss) & (loss < 1e30)
        ax.semilogy(np.arange(len(loss))[ok], loss[ok], label=label)
    ax.set(xlabel="epoch", ylabel="loss (cut at 1e30)", ylim=(1e-12, 1e30),
           title="gradient descent with three learning rates")
    ax.legend()
    fig.savefig("learning_rate.png", dpi=100, bbox_inches="tight")
    print("wrote learning_rate.png")
