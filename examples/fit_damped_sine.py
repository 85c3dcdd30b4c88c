"""Fit a damped oscillation y = a*exp(-b*x)*sin(c*x + d) + e to noisy measurements.

The whole training loop — epochs, minibatches, the per-sample flat backprop code and the
Adam update — runs in one generated Numba module. Prints the per-sample listing the loop
runs, the loss curve, and the fitted parameters against the true ones.

Run:  python examples/fit_damped_sine.py
"""

import numpy as np
import sympy as sp

import symgrad as sg

a, b, c, d, e, x, y = sp.symbols("a b c d e x y")
pred = a * sp.exp(-b * x) * sp.sin(c * x + d) + e

true = {a: 2.0, b: 0.3, c: 3.0, d: 0.5, e: 0.1}
rng = np.random.default_rng(0)
X = rng.uniform(0, 10, 20_000)
Y = 2.0 * np.exp(-0.3 * X) * np.sin(3.0 * X + 0.5) + 0.1 + rng.normal(0, 0.05, X.size)
train, val = slice(0, 16_000), slice(16_000, None)

model = sg.Model(
    loss=sg.losses.mse(pred, y),
    params={a: 1.5, b: 0.2, c: 2.9, d: 0.3, e: 0.0},
    data=[x, y],
    prediction=pred,
    target=y,
)
print("Per-sample code the compiled training loop runs for every sample:\n")
print(model.listing(columns=True))

hist = model.fit(
    {x: X[train], y: Y[train]},
    optimizer=sg.optim.Adam(lr=0.01),
    epochs=300,
    batch_size=256,
    validation={x: X[val], y: Y[val]},
    early_stopping=20,
    metrics=["r2"],
    verbose=0,
)
print("loss curve:")
for k in sorted({0, 1, 5, 10, 25, 50, 100, 200, len(hist) - 1}):
    if k < len(hist):
        print(f"  epoch {hist.epoch[k]:3d}  loss {hist.loss[k]:.6f}  val_loss "
              f"{hist.val_loss[k]:.6f}  val R2 {hist.val_metrics['r2'][k]:.4f}")
print(hist.summary())
print(f"compile {model.timings['compile_s']:.2f} s (disk cache hit: {model.timings['cache_hit']}),"
      f" {1e3 * np.median(hist.time):.2f} ms per epoch of {16_000 // 256 + 1} Adam steps")
print("\nparameter   fitted     true")
for s, v in model.params.items():
    print(f"  {s}       {v:+.5f}   {true[s]:+.5f}")
