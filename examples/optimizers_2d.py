"""Six optimizers on one 2-D loss surface: SGD, Momentum, Nesterov, Adagrad, RMSprop, Adam.

The "model" has two parameters (x, y) and the loss is an elongated, tilted valley
L(x, y) = (x + y)^2 / 10 + (x - y)^2 (curvature 50x stronger across it than along it).
The data is one dummy sample d = 1 (the per-sample loss is d * L, as data must appear in the
loss), so every epoch is exactly one full-batch optimizer step on L. A callback
reads model.params after each epoch to record the trajectory. Prints each optimizer's final
point and loss and plots the trajectories over the contour lines (optimizers_2d.png).

Run:  python examples/optimizers_2d.py
"""

import numpy as np
import sympy as sp

import symgrad as sg

x, y, d = sp.symbols("x y d")
LOSS = (x + y) ** 2 / 10 + (x - y) ** 2
START = (-4.0, -2.0)
EPOCHS = 60

optimizers = {
    "SGD": sg.optim.SGD(lr=0.2),
    "Momentum": sg.optim.Momentum(lr=0.05, momentum=0.9),
    "Nesterov": sg.optim.Nesterov(lr=0.05, momentum=0.9),
    "Adagrad": sg.optim.Adagrad(lr=1.0),
    "RMSprop": sg.optim.RMSprop(lr=0.1),
    "Adam": sg.optim.Adam(lr=0.3),
}

# A single dummy data column d holding one sample, d = 1: the mean loss is exactly L(x, y).
model = sg.Model(loss=d * LOSS, params={x: START[0], y: START[1]}, data=[d], fast_math=False)
dummy = {d: np.ones(1)}
paths = {}
for name, opt in optimizers.items():
    model.params = {x: START[0], y: START[1]}
    path = [START]

    def record(epoch, logs, path=path):
        p = model.params
        path.append((p[x], p[y]))

    hist = model.fit(dummy, optimizer=opt, epochs=EPOCHS, callbacks=[record], verbose=0)
    paths[name] = np.array(path)
    px, py = path[-1]
    final = model.evaluate(dummy)
    print(f"{name:9s} after {len(hist):3d} steps: x={px:+.4f} y={py:+.4f} loss={final:.3e}"
          f"  (loss at step 10: {hist.loss[10]:.3e})")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib not installed: skipped the plot")
else:
    gx, gy = np.meshgrid(np.linspace(-5, 3, 200), np.linspace(-3, 3, 200))
    gl = (gx + gy) ** 2 / 10 + (gx - gy) ** 2
    fig, ax = plt.subplots(figsize=(8, 6))
    ax.contour(gx, gy, gl, levels=np.geomspace(0.01, 30, 15), colors="0.75", linewidths=0.8)
    for name, path in paths.items():
        ax.plot(path[:, 0], path[:, 1], ".-", ms=3, lw=1, label=name)
    ax.plot(*START, "ko")
    ax.plot(0, 0, "k*", ms=12)
    ax.set(xlabel="x", ylabel="y", title=f"{EPOCHS} steps on (x+y)²/10 + (x-y)²")
    ax.legend()
    fig.savefig("optimizers_2d.png", dpi=100, bbox_inches="tight")
    print("wrote optimizers_2d.png")
