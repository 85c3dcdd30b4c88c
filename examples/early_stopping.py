"""Early stopping: stop when the validation loss stops improving and keep the best weights.

A linear model on 20 narrow Gaussian bumps (RBF features of x, computed with NumPy) has
enough freedom to pass through 12 noisy samples of sin(2 pi x); Adam first learns the smooth
curve, then starts fitting the noise: the training loss keeps falling, the validation loss
turns up. fit(..., validation=..., early_stopping=k) stops k epochs after the best
validation loss and restores the best parameters. Prints the best epoch and a summary of both
curves, compares with a run without early stopping, and plots (early_stopping.png).

Run:  python examples/early_stopping.py
"""

import numpy as np
import sympy as sp

import symgrad as sg

K, WIDTH, PATIENCE = 20, 0.06, 100
centers = np.linspace(0, 1, K)


def features(x):
    return np.exp(-((x[:, None] - centers) ** 2) / (2 * WIDTH**2))


rng = np.random.default_rng(1)
x_train = np.sort(rng.uniform(0, 1, 12))
x_val = rng.uniform(0, 1, 200)
y_train = np.sin(2 * np.pi * x_train) + rng.normal(0, 0.3, x_train.size)
y_val = np.sin(2 * np.pi * x_val) + rng.normal(0, 0.3, x_val.size)

w = sp.symbols(f"w0:{K}")
phi = sp.symbols(f"phi0:{K}")
b, y = sp.symbols("b y")
pred = sum(wk * pk for wk, pk in zip(w, phi)) + b
init = {**{wk: 0.0 for wk in w}, b: 0.0}
model = sg.Model(loss=sg.losses.mse(pred, y), params=init, data=[*phi, y])


def columns(x, target):
    return {**dict(zip(phi, features(x).T)), y: target}


train, val = columns(x_train, y_train), columns(x_val, y_val)

hist = model.fit(train, optimizer=sg.optim.Adam(lr=0.05), epochs=5000, validation=val,
                 early_stopping=PATIENCE, verbose=0)
print(hist.summary())
print(f"best epoch {hist.best_epoch}: val loss {hist.best_loss:.4f}; stopped after "
      f"{len(hist)} epochs ({hist.stop_reason}), best parameters restored")
for e in sorted({0, 10, 50, 100, hist.best_epoch, len(hist) - 1}):
    print(f"  epoch {e:4d}  train {hist.loss[e]:.4f}  val {hist.val_loss[e]:.4f}")
print(f"restored model: train {model.evaluate(train):.4f}  val {model.evaluate(val):.4f}")
stopped = model.params

model.params = init
full = model.fit(train, optimizer=sg.optim.Adam(lr=0.05), epochs=5000, validation=val,
                 verbose=0)
print(f"without early stopping, after {len(full)} epochs: train {full.loss[-1]:.4f}  "
      f"val {full.val_loss[-1]:.4f}  (overfit: val is "
      f"{full.val_loss[-1] / hist.best_loss:.1f}x the early-stopped one)")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib not installed: skipped the plot")
else:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.semilogy(full.loss, label="train")
    ax1.semilogy(full.val_loss, label="validation")
    ax1.axvline(hist.best_epoch, color="k", ls="--", lw=1, label="best epoch")
    ax1.axvline(len(hist) - 1, color="r", ls=":", lw=1, label=f"stop (patience {PATIENCE})")
    ax1.set(xlabel="epoch", ylabel="mean squared error", title="loss curves")
    ax1.legend()
    grid = np.linspace(0, 1, 400)
    F = features(grid)
    ws = np.array([stopped[wk] for wk in w])
    wf = np.array([model.params[wk] for wk in w])
    ax2.plot(x_train, y_train, "ko", label="training data")
    ax2.plot(grid, np.sin(2 * np.pi * grid), "0.6", label="sin(2πx)")
    ax2.plot(grid, F @ ws + stopped[b], label="early stopped")
    ax2.plot(grid, F @ wf + model.params[b], label="5000 epochs")
    ax2.set(xlabel="x", ylim=(-2.5, 2.5), title="fits")
    ax2.legend()
    fig.savefig("early_stopping.png", dpi=100, bbox_inches="tight")
    print("wrote early_stopping.png")
