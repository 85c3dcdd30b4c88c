"""Patterns in the backward flow: add, mul, max and copy (fan-out) gates.

Each gate is compiled from a tiny SymPy expression; the listing shows the one line of
backward code the gate contributes, and the numbers show its pattern:

- add gate: gradient *distributor* - every input receives the upstream gradient;
- mul gate: *swap multiplier* - each input receives upstream times the other input;
- max gate: gradient *router* - the larger input gets it all, the other 0; at a tie symgrad
  splits it evenly (0.5 each, PyTorch's torch.maximum rule);
- copy gate / fan-out: gradient *adder* - a value used twice receives the sum.

Run:  python examples/gate_patterns.py
"""

import sympy as sp

import symgrad as sg

a, b, x, y, z = sp.symbols("a b x y z")


def show(title, expr, wrt, **point):
    f = sg.compile(expr, wrt=wrt)
    value, grad = f.value_and_grad(**point)
    at = ", ".join(f"{k}={v:g}" for k, v in point.items())
    print(f"== {title}:  {expr}  at {at}")
    print(f.listing(columns=True))
    print(f"value = {value:g}")
    for s, g in zip(f.wrt, grad):
        print(f"  d/d{s} = {g:g}")
    print()
    return value, dict(zip(map(str, f.wrt), grad))


show("add gate (distributor)", x + y, [x, y], x=3, y=-1)
show("mul gate (swap multiplier)", x * y, [x, y], x=3, y=-1)
show("max gate (router)", sp.Max(x, y), [x, y], x=3, y=-1)
_, tie = show("max gate at a tie (gradient split in half)", sp.Max(x, y), [x, y], x=2, y=2)
value, g = show("(x + y) * z: add then mul", (x + y) * z, [x, y, z], x=-2, y=5, z=-4)
_, fan = show("copy gate / fan-out: b used twice", (a + b) * (b + 1), [a, b], a=2, b=1)

print("summary")
print(f"  (x+y)*z at (-2, 5, -4): value {value:g}, grads {g['x']:g}, {g['y']:g}, {g['z']:g}")
print(f"  max(x, y) tie at x=y=2: grads {tie['x']:g}, {tie['y']:g}")
print(f"  fan-out e=(a+b)(b+1) at a=2, b=1: de/da = {fan['a']:g}, de/db = {fan['b']:g}"
      f"  (b's two paths: (b+1) + (a+b) = 2 + 3)")
