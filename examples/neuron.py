"""The lecture's sigmoid neuron: its flat backprop code, its gradient, and training it.

Compiles L = sigmoid(w0*x0 + w1*x1 + w2), prints the generated listing next to the
lecture's, checks the gradient at the slide's point, then trains the neuron as a logistic
regression classifier on two Gaussian blobs with plain gradient descent on the mean
binary cross-entropy, using the compiled value_and_grad of the per-sample loss.

Run:  python examples/neuron.py
"""

import time

import numpy as np
import sympy as sp

import symgrad as sg

w0, x0, w1, x1, w2, y = sp.symbols("w0 x0 w1 x1 w2 y")

# 1. The slide: one neuron, its flat forward/backward code and its gradient.
neuron = sg.compile(sg.sigmoid(w0 * x0 + w1 * x1 + w2), wrt=[w0, x0, w1, x1, w2])
print("Flat forward / backward code of L = sigmoid(w0*x0 + w1*x1 + w2):\n")
print(neuron.listing(columns=True))
value, grad = neuron.value_and_grad(w0=2, x0=-1, w1=-3, x1=-2, w2=-3)
print(f"at w0=2, x0=-1, w1=-3, x1=-2, w2=-3:  L = {value:.3f}")
for s, g in zip(neuron.wrt, grad):
    print(f"  dL/d{s} = {g:+.3f}")
print(f"(codegen {neuron.timings['codegen_s'] * 1e3:.0f} ms, Numba "
      f"{neuron.timings['compile_s'] * 1e3:.0f} ms, disk cache hit: {neuron.timings['cache_hit']})")

# 2. Training it as a logistic-regression classifier on two Gaussian blobs: per-sample
#    binary cross-entropy on the logit (the stable form), whole loop compiled.
logit = w0 * x0 + w1 * x1 + w2
model = sg.Model(
    loss=sg.losses.bce_with_logits(logit, y),
    params={w0: 0.0, w1: 0.0, w2: 0.0},
    data=[x0, x1, y],
    prediction=sg.sigmoid(logit),
    target=y,
)
print("\nPer-sample loss the compiled trainer differentiates:\n")
print(model.listing(columns=True))

rng = np.random.default_rng(0)
n = 500
X = np.vstack([rng.normal([-1.0, -1.0], 0.8, (n, 2)), rng.normal([1.0, 1.5], 0.8, (n, 2))])
Y = np.repeat([0.0, 1.0], n)
start = time.perf_counter()
hist = model.fit({x0: X[:, 0], x1: X[:, 1], y: Y}, optimizer=sg.optim.SGD(lr=0.5), epochs=200,
                 metrics=["accuracy"], verbose=0)
elapsed = time.perf_counter() - start
for epoch in (0, 10, 50, 100, 199):
    print(f"epoch {epoch:3d}  mean loss {hist.loss[epoch]:.4f}  "
          f"accuracy {hist.metrics['accuracy'][epoch]:.3f}")
p = model.params
print(f"\ntrained w0={p[w0]:.3f} w1={p[w1]:.3f} w2={p[w2]:.3f}")
print(f"fit: {elapsed:.2f} s in all, of which Numba compile/load "
      f"{model.timings['compile_s']:.2f} s (disk cache hit: {model.timings['cache_hit']}; the "
      "first model on a machine also compiles symgrad's kernel library, once)")
