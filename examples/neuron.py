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

# 2. Training it: per-sample binary cross-entropy of the neuron's output against label y.
p = sg.sigmoid(w0 * x0 + w1 * x1 + w2)
loss = sg.compile(-(y * sp.log(p) + (1 - y) * sp.log(1 - p)), wrt=[w0, w1, w2],
                  inputs=[w0, w1, w2, x0, x1, y], name="loss")
print("\nPer-sample loss, compiled (backward shown):\n")
print("\n".join(loss.generated.backward))

rng = np.random.default_rng(0)
n = 200
X = np.vstack([rng.normal([-1.0, -1.0], 0.8, (n, 2)), rng.normal([1.0, 1.5], 0.8, (n, 2))])
Y = np.repeat([0.0, 1.0], n)
w = np.zeros(3)
lr = 0.5
start = time.perf_counter()
kernel = loss.kernel  # the raw compiled function: floats in, (value, gradient tuple) out
for epoch in range(101):
    total, g = 0.0, np.zeros(3)
    for (a, b), label in zip(X, Y):
        v, gi = kernel(w[0], w[1], w[2], a, b, label)
        total += v
        g += gi
    w -= lr * g / len(Y)
    if epoch % 20 == 0:
        print(f"epoch {epoch:3d}  mean loss {total / len(Y):.4f}")
elapsed = time.perf_counter() - start
pred = 1 / (1 + np.exp(-(X @ w[:2] + w[2]))) > 0.5
print(f"\ntrained w0={w[0]:.3f} w1={w[1]:.3f} w2={w[2]:.3f}; "
      f"train accuracy {np.mean(pred == Y):.3f}")
print(f"{101 * len(Y)} value+gradient calls from Python in {elapsed:.2f} s")
