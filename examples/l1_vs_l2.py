"""L1 vs L2 regularization: L1 drives irrelevant weights to (near) zero, L2 only shrinks them.

A linear model with 30 features of which only 3 matter (true weights 3, -2, 1.5), fitted on
60 noisy samples by full-batch SGD three times: no penalty, weight_decay=0.1 (L2,
lambda*theta added to the gradient) and l1=0.1 (lambda*sign(theta) added). Prints how many of
the 27 irrelevant weights end near zero (|w| < 0.01) and the relevant ones, and plots all
weights (l1_vs_l2.png).

Run:  python examples/l1_vs_l2.py
"""

import numpy as np
import sympy as sp

import symgrad as sg

D, N, NEAR = 30, 60, 0.01
true_w = np.zeros(D)
true_w[:3] = [3.0, -2.0, 1.5]
rng = np.random.default_rng(0)
X = rng.normal(size=(N, D))
Y = X @ true_w + rng.normal(0, 0.5, N)

w = sp.symbols(f"w0:{D}")
xs = sp.symbols(f"x0:{D}")
y = sp.symbols("y")
pred = sum(wi * xi for wi, xi in zip(w, xs))
model = sg.Model(loss=sg.losses.mse(pred, y), params={wi: 0.0 for wi in w}, data=[*xs, y])
data = {**dict(zip(xs, X.T)), y: Y}

fitted = {}
for label, opt in (("none", sg.optim.SGD(lr=0.02)),
                   ("L2 weight_decay=0.1", sg.optim.SGD(lr=0.02, weight_decay=0.1)),
                   ("L1 l1=0.1", sg.optim.SGD(lr=0.02, l1=0.1))):
    model.params = {wi: 0.0 for wi in w}
    hist = model.fit(data, optimizer=opt, epochs=2000, verbose=0)
    values = np.array([model.params[wi] for wi in w])
    fitted[label] = values
    irrelevant = np.abs(values[3:])
    print(f"{label:20s} loss {hist.loss[-1]:.4f}  relevant w = "
          f"{', '.join(f'{v:+.3f}' for v in values[:3])}  irrelevant: "
          f"{np.sum(irrelevant < NEAR):2d}/{D - 3} near zero, mean |w| {irrelevant.mean():.4f}")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib not installed: skipped the plot")
else:
    fig, ax = plt.subplots(figsize=(10, 4))
    idx = np.arange(D)
    for k, (label, values) in enumerate(fitted.items()):
        ax.bar(idx + (k - 1) * 0.27, values, width=0.27, label=label)
    ax.plot(idx, true_w, "k_", ms=14, mew=2, label="true")
    ax.set(xlabel="feature", ylabel="weight", title="fitted weights (features 0-2 matter)")
    ax.legend()
    fig.savefig("l1_vs_l2.png", dpi=100, bbox_inches="tight")
    print("wrote l1_vs_l2.png")
