"""Weight initialization: zeros and constants are symmetric, too small vanishes, too large
explodes, Xavier keeps the gradients' scale through the layers.

A deep tanh MLP written with matrices, 16 -> 32 -> 32 -> 32 -> 32 -> 32 -> 32 -> 4 (six
hidden layers), classifies four overlapping Gaussian blobs. ONE sg.Model is built; each
initialization only sets ``model.params``, so the code is generated and compiled once.

For each initialization the example prints, at the starting point:
  - the norm of the gradient of every layer's weights, ||dL/dW_k|| (from model.value_and_grad),
  - the spread (standard deviation) of every hidden layer's activations,
and then trains briefly (minibatch SGD) and prints the loss and validation accuracy.

  zeros          every gradient except the output bias's is exactly 0: nothing but the bias
                 learns (and sg.Model warns sg.SymmetryWarning for each weight matrix).
  constant 0.1   all units of a layer compute the same value and get the same gradient: after
                 training, every column of each hidden W is still identical (one unit per layer).
  normal 0.01    activations shrink ~0.06x per layer and so do gradients going back: all
                 ~1e-7 of Xavier's (vanishing). SGD does not move.
  Xavier         Var(W) = 2/(fan_in + fan_out): gradient norms about equal in every layer.
  normal 1, 2    tanh saturates; gradients grow going back towards the input (exploding).

Saves a plot of the per-layer gradient norms and the loss curves (initialization.png).

Run:  python examples/initialization.py
"""

import time
import warnings

import numpy as np
import sympy as sp

import symgrad as sg

FEATURES, WIDTH, DEPTH, CLASSES = 16, 32, 6, 4
N, NOISE, EPOCHS, BATCH, LR = 1024, 1.5, 30, 32, 0.1

# -- data: four Gaussian blobs in 16 dimensions, 1024 training and 1024 validation points ------
rng = np.random.default_rng(0)
centers = rng.normal(0.0, 1.0, (CLASSES, FEATURES))
labels = rng.integers(0, CLASSES, 2 * N)
points = centers[labels] + rng.normal(0.0, NOISE, (2 * N, FEATURES))
X_train, y_train, X_val, y_val = points[:N], labels[:N], points[N:], labels[N:]

# -- the model: six tanh layers, then softmax cross-entropy -----------------------------------
n = sp.Symbol("n", integer=True, positive=True)
X = sp.MatrixSymbol("X", n, FEATURES)
Y = sp.MatrixSymbol("Y", n, CLASSES)
sizes = [FEATURES] + [WIDTH] * DEPTH + [CLASSES]
Ws = [sp.MatrixSymbol(f"W{k + 1}", sizes[k], sizes[k + 1]) for k in range(DEPTH + 1)]
bs = [sp.MatrixSymbol(f"b{k + 1}", 1, sizes[k + 1]) for k in range(DEPTH + 1)]

activation = X
for W, b in zip(Ws[:-1], bs[:-1]):
    activation = sg.tanh(activation * W + b)
scores = activation * Ws[-1] + bs[-1]
loss = sg.softmax_cross_entropy(scores, Y)

INITS = {  # name -> f(rows, cols, seed) for the weights; biases always start at zero
    "zeros": lambda r, c, seed: sg.init.zeros(r, c),
    "constant 0.1": lambda r, c, seed: np.full((r, c), 0.1),
    "normal 0.01": lambda r, c, seed: sg.init.normal(r, c, 0.01, seed=seed),
    "xavier": lambda r, c, seed: sg.init.xavier(r, c, seed=seed),
    "normal 1.0": lambda r, c, seed: sg.init.normal(r, c, 1.0, seed=seed),
    "normal 2.0": lambda r, c, seed: sg.init.normal(r, c, 2.0, seed=seed),
}


def initial(name: str) -> dict:
    params = {}
    for k, (W, b) in enumerate(zip(Ws, bs)):
        params[W] = INITS[name](sizes[k], sizes[k + 1], k)
        params[b] = sg.init.zeros(1, sizes[k + 1])
    return params


def hidden_activations(params: dict, x: np.ndarray) -> list:
    """The six hidden layers' outputs (plain NumPy, for their spread and rank)."""
    out, a = [], x
    for W, b in zip(Ws[:-1], bs[:-1]):
        a = np.tanh(a @ params[W] + params[b])
        out.append(a)
    return out


# Built with the zero initialization: sg.Model warns that the weights start symmetric.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = sg.Model(loss, params=initial("zeros"), data=[X, Y], optimizer=sg.optim.SGD(lr=LR),
                     prediction=sg.softmax(scores), target=Y)
symmetry = [w for w in caught if issubclass(w.category, sg.SymmetryWarning)]
print(f"sg.Model(...) with zero weights: {len(symmetry)} SymmetryWarnings "
      f"({', '.join(str(w.message).split()[0] for w in symmetry)}); the first says:")
print(f"  {symmetry[0].message}")

train = {X: X_train, Y: sg.one_hot(y_train, CLASSES)}
val = {X: X_val, Y: sg.one_hot(y_val, CLASSES)}

# -- 1. gradients and activations at initialization -------------------------------------------
t0 = time.perf_counter()
model.value_and_grad(train)  # the first call compiles (or loads) the kernels
first_call_s = time.perf_counter() - t0

norms, spreads = {}, {}
for name in INITS:
    model.params = initial(name)  # same compiled model, new starting point
    value, grads = model.value_and_grad(train)
    norms[name] = [float(np.linalg.norm(grads[W])) for W in Ws]
    spreads[name] = [float(np.std(a)) for a in hidden_activations(model.params, X_train)]

layers = "".join(f"{W.name:>10s}" for W in Ws)
print(f"\ngradient norm ||dL/dW_k|| per layer at initialization "
      f"(W1 at the input ... W{DEPTH + 1} at the output)")
print(f"{'init':14s}{layers}   W1/W{DEPTH + 1}")
for name, row in norms.items():
    ratio = f"{row[0] / row[-1]:9.3g}" if row[-1] > 0 else "      n/a"
    print(f"{name:14s}" + "".join(f"{v:10.2e}" for v in row) + f"  {ratio}")
small, xavier = np.array(norms["normal 0.01"]), np.array(norms["xavier"])
print(f"normal 0.01 vs xavier: gradients {np.max(small / xavier):.1e} times as large at most "
      "(vanishing)")
print(f"normal 2.0: W1's gradient is {norms['normal 2.0'][0] / norms['normal 2.0'][-1]:.0f}x "
      f"the output layer's (exploding towards the input)")

print("\nstandard deviation of each hidden layer's activations at initialization")
print(f"{'init':14s}" + "".join(f"{'a' + str(k + 1):>10s}" for k in range(DEPTH)))
for name, row in spreads.items():
    print(f"{name:14s}" + "".join(f"{v:10.2e}" for v in row))

# -- 2. brief training from each initialization ----------------------------------------------
print(f"\nminibatch SGD (lr={LR}, batch {BATCH}) for {EPOCHS} epochs from each initialization")
curves, trained = {}, {}
t0 = time.perf_counter()
for name in INITS:
    model.params = initial(name)
    hist = model.fit(train, epochs=EPOCHS, batch_size=BATCH, validation=val, verbose=0,
                     initial_epoch=0)  # each initialization: a fresh run, same shuffles
    curves[name] = hist.loss
    trained[name] = model.params
    predicted = np.argmax(model.predict(data={X: X_val}), axis=1)
    print(f"{name:14s} loss {hist.loss[0]:.4f} -> {hist.loss[-1]:.4f}  val loss "
          f"{hist.val_loss[-1]:.4f}  val accuracy {np.mean(predicted == y_val):.3f}")
train_s = time.perf_counter() - t0

# -- 3. the symmetry problem after training ---------------------------------------------------
print("\nafter training: are the hidden units of each layer still identical?")
for name in ("zeros", "constant 0.1", "xavier"):
    p = trained[name]
    column_gap = max(float(np.max(np.abs(p[W] - p[W][:, :1]))) for W in Ws[:-1])
    entries = max(float(np.max(np.abs(p[W]))) for W in Ws[:-1])
    ranks = [int(np.linalg.matrix_rank(a)) for a in hidden_activations(p, X_train)]
    print(f"{name:14s} max |W[:, j] - W[:, 0]| over hidden W1..W{DEPTH}: {column_gap:.3g}  "
          f"(max |entry| {entries:.3g}); rank of the hidden activations {ranks}")
print("zeros: the hidden weights never move (all gradients 0); constant: they move, but every "
      "column stays equal, so each layer acts as one unit.")

compile_s = model.timings["compile_s"]
print(f"\ntimings: first value_and_grad {first_call_s:.2f} s (compiles or loads), trainer compile "
      f"{compile_s:.2f} s, training {len(INITS)} runs {train_s - compile_s:.2f} s")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib not installed: skipped the plot")
else:
    fig, (ax_norm, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.5))
    style = {name: dict(color=f"C{i}", ls="--" if name == "zeros" else "-")
             for i, name in enumerate(INITS)}
    k = np.arange(1, DEPTH + 2)
    for name, row in norms.items():
        if name not in ("zeros", "constant 0.1"):  # (near) zero: off a log scale
            ax_norm.semilogy(k, row, marker="o", label=name, **style[name])
    ax_norm.set(xlabel="layer k (1 = input side)", ylabel="||dL/dW_k|| at initialization",
                title="gradient norms at init (zeros, constant: ~0)", xticks=k)
    ax_norm.legend()
    for name, loss_curve in curves.items():
        ax_loss.plot(np.arange(1, len(loss_curve) + 1), loss_curve, label=name, **style[name])
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log",
                title=f"training: SGD lr={LR}, batch {BATCH}")
    ax_loss.legend()
    fig.savefig("initialization.png", dpi=100, bbox_inches="tight")
    print("wrote initialization.png")
