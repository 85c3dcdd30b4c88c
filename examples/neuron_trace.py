"""See backprop happen on the lecture's sigmoid neuron.

Prints the flat forward/backward code with the value of every line at the slide's point
(L = 0.73; gradients -0.20, 0.39, -0.39, -0.59, 0.20), the same neuron with the sigmoid
written with exp (the slide's gate chain -0.53, -0.53, -0.20, 0.20), checks the gradient
against central differences, and draws the computational graph with every wire's value and
gradient to neuron.svg (and neuron_gates.svg), as on the slides.

Run:  python examples/neuron_trace.py [output folder]
"""

import sys
from pathlib import Path

import sympy as sp

import symgrad as sg
from symgrad.show import check_gradients, graph, trace

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
out.mkdir(parents=True, exist_ok=True)
w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
point = dict(w0=2, x0=-1, w1=-3, x1=-2, w2=-3)

neuron = sg.compile(sg.sigmoid(w0 * x0 + w1 * x1 + w2), wrt=[w0, x0, w1, x1, w2])
print(trace(neuron, **point).format(columns=True))

gates = sg.compile(1 / (1 + sp.exp(-(w0 * x0 + w1 * x1 + w2))), wrt=[w0, x0, w1, x1, w2])
print(trace(gates, **point).format(columns=True))

check_gradients(neuron, **point)

for name, f in (("neuron.svg", neuron), ("neuron_gates.svg", gates)):
    path = graph(f, **point).save(out / name)
    print(f"wrote {path}")
