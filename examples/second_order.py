"""Second-order fits: Adam, L-BFGS and Newton-CG side by side on logistic regression.

scikit-learn's breast-cancer data (569 tumours, 30 features, standardized), a per-sample
logistic loss with an L2 penalty on the weights:

    loss = bce_with_logits(w . x + b, t) + 0.5 * 1e-3 * |w|^2

trained full batch three ways: Adam (each learning rate of 1e-3, 1e-2, 1e-1), L-BFGS and
Newton-CG (``sg.optim.LBFGS``, ``sg.optim.NewtonCG``: scipy's methods on symgrad's compiled
value, gradient and Hessian-vector product). The optimum's loss comes from an independent
reference: the same risk written in NumPy, minimised by scipy's BFGS (gtol 1e-10, float64).

Prints a table (iterations, gradient evaluations, time and final loss of the whole run)
counting, for each method, the iterations and gradient evaluations it needs to reach the
optimum's loss: Adam to within 1e-4
relative, L-BFGS and Newton-CG to within 1e-8 relative (one Hessian-vector product counts
as one gradient evaluation), and plots the loss gap against gradient evaluations
(second_order.png).

Needs scikit-learn (for the data): pip install scikit-learn  (or: pip install ".[examples]")

Run:  python examples/second_order.py
"""

import sys

import numpy as np
import scipy.optimize as so
import sympy as sp

import symgrad as sg

try:
    from sklearn.datasets import load_breast_cancer
except ImportError:
    print("scikit-learn is not installed, and this example needs its breast-cancer data set: "
          "pip install scikit-learn (or pip install \".[examples]\"). Skipped.")
    sys.exit(0)

L2, ADAM_RATES, ADAM_EPOCHS = 1e-3, (1e-3, 1e-2, 1e-1), 20_000
ADAM_TOL, SECOND_ORDER_TOL = 1e-4, 1e-8

# -- data: standardized features, 0/1 labels ---------------------------------------------------
features, labels = load_breast_cancer(return_X_y=True)
features = (features - features.mean(axis=0)) / features.std(axis=0)
n, d = features.shape
print(f"breast cancer: {n} samples, {d} standardized features")

# -- the model: one per-sample loss, 31 parameters -------------------------------------------------
w = sp.symbols(f"w0:{d}")
b = sp.Symbol("b")
x = sp.symbols(f"x0:{d}")
t = sp.Symbol("t")
logit = sum(wi * xi for wi, xi in zip(w, x)) + b
loss = sg.losses.bce_with_logits(logit, t) + 0.5 * L2 * sum(wi**2 for wi in w)
data = {**dict(zip(x, features.T)), t: labels.astype(float)}
START = {**{wi: 0.0 for wi in w}, b: 0.0}
model = sg.Model(loss, params=START, data=[*x, t])


# -- the reference optimum: the same risk in NumPy, scipy's BFGS ---------------------------------
def risk(p):
    z = features @ p[:d] + p[d]
    return np.mean(np.logaddexp(0.0, z) - labels * z) + 0.5 * L2 * p[:d] @ p[:d]


def risk_grad(p):
    z = features @ p[:d] + p[d]
    r = 0.5 * (1.0 + np.tanh(0.5 * z)) - labels  # sigmoid(z) - t
    return np.concatenate([features.T @ r / n + L2 * p[:d], [r.mean()]])


reference = so.minimize(risk, np.zeros(d + 1), jac=risk_grad, method="BFGS",
                        options={"gtol": 1e-10})
best = reference.fun
print(f"optimum (scipy BFGS, gtol 1e-10): loss {best:.15g} after {reference.nit} iterations, "
      f"|gradient| {np.abs(reference.jac).max():.1e}")


# -- the runs -----------------------------------------------------------------------------------
def run(optimizer, epochs):
    """Fit from the start; per epoch: the loss and the gradient evaluations so far."""
    model.params = START
    history = model.fit(data, optimizer=optimizer, epochs=epochs, verbose=0)
    if history.n_gev:  # LBFGS / NewtonCG: what the method asked for (an HVP counts as one)
        evals = np.cumsum(np.add(history.n_gev, history.n_hvp))
    else:  # full-batch first-order: one gradient per epoch
        evals = np.arange(1, len(history) + 1)
    return history, np.array(history.loss), evals


def reached(losses, evals, tol):
    """(iterations, gradient evaluations) until the loss is within ``tol`` of the optimum."""
    hit = np.flatnonzero((losses - best) / best <= tol)
    return (int(hit[0]) + 1, int(evals[hit[0]])) if hit.size else (None, None)


model.fit(data, optimizer=sg.optim.Adam(), epochs=1, verbose=0)  # compile before timing
runs = {}
for lr in ADAM_RATES:
    runs[f"Adam lr={lr:g}"] = (*run(sg.optim.Adam(lr=lr), ADAM_EPOCHS), ADAM_TOL)
adam_name = min((name for name in runs), key=lambda name: (
    reached(runs[name][1], runs[name][2], ADAM_TOL)[1] or np.inf))
runs["L-BFGS"] = (*run(sg.optim.LBFGS(), 200), SECOND_ORDER_TOL)
runs["Newton-CG"] = (*run(sg.optim.NewtonCG(), 100), SECOND_ORDER_TOL)

print(f"\n{'method':14} {'target':>7} {'iterations':>10} {'grad evals':>10} {'total it':>9} "
      f"{'total evals':>11} {'time (s)':>9} {'final loss':>19} {'rel. gap':>9}  stop")
for name, (history, losses, evals, tol) in runs.items():
    iters, count = reached(losses, evals, tol)
    gap = (losses[-1] - best) / best
    print(f"{name:14} {tol:7.0e} {iters or '-':>10} {count or '-':>10} {len(history):>9} "
          f"{int(evals[-1]):>11} {sum(history.time):9.3f} {losses[-1]:19.15f} {gap:9.1e}  "
          f"{history.stop_reason}")

adam_evals = reached(runs[adam_name][1], runs[adam_name][2], ADAM_TOL)[1]
print(f"\nbest Adam: {adam_name}, {adam_evals} gradient evaluations to within {ADAM_TOL:g}")
for name in ("L-BFGS", "Newton-CG"):
    evals = reached(runs[name][1], runs[name][2], SECOND_ORDER_TOL)[1]
    if evals is None or adam_evals is None:
        print(f"{name}: target not measurable (a method never reached its tolerance)")
        continue
    ratio = evals / adam_evals
    print(f"{name}: {evals} gradient evaluations to within {SECOND_ORDER_TOL:g} = "
          f"{ratio:.4f} of Adam's ({'meets' if ratio <= 0.2 else 'misses'} the 1/5 target)")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib not installed: skipped the plot")
else:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (_, losses, evals, _) in runs.items():
        gap = np.maximum((losses - best) / best, 1e-16)
        style = "-" if name in (adam_name, "L-BFGS", "Newton-CG") else ":"
        ax.plot(evals, gap, style, label=name)
    ax.axhline(ADAM_TOL, color="gray", lw=0.5)
    ax.axhline(SECOND_ORDER_TOL, color="gray", lw=0.5)
    ax.set(xscale="log", yscale="log", xlabel="gradient evaluations (an HVP counts as one)",
           ylabel="(loss - optimum) / optimum (floor 1e-16)",
           title="breast cancer logistic regression, L2 1e-3")
    ax.legend()
    fig.savefig("second_order.png", dpi=100, bbox_inches="tight")
    print("wrote second_order.png")
