"""Matrix losses whose adjoints or tangents are smaller than the names they flow into (a
scalar adjoint below ``sum``, a column below a row sum, a bias row broadcast over the batch),
each with a NumPy float64 transcription and central differences of it: the independent
references of the broadcast tests in ``test_numpy_tier.py`` and ``test_second_order.py``.

The compiled loop always filled such a name's buffer; the NumPy tier, the trace and
``model.hvp``/``hessian`` (NumPy) stored the smaller value and crashed in the next matrix
product or summed one row where n rows were meant.
"""

import numpy as np
import sympy as sp
from sympy.matrices.expressions import HadamardPower, HadamardProduct, OneMatrix

import symgrad as sg

n = sp.Symbol("n", integer=True, positive=True)
X = sp.MatrixSymbol("X", n, 2)
W, b = sp.MatrixSymbol("W", 2, 2), sp.MatrixSymbol("b", 1, 2)
w, c, d = sp.MatrixSymbol("w", 2, 1), sp.MatrixSymbol("c", 1, 1), sp.MatrixSymbol("d", 2, 1)
V = sp.MatrixSymbol("V", 2, 3)

XV = np.array([[0.3, -1.2], [0.8, 0.5], [-0.4, 1.1]])  # n = 3 rows
INIT = {W: np.array([[0.25, 0.5], [0.75, -1.0]]), b: np.array([[0.5, -1.0]]),
        w: np.array([[0.3], [-0.7]]), c: np.array([[0.25]]), d: np.array([[0.1], [-0.4]]),
        V: np.array([[0.2, -0.5, 0.1], [0.4, 0.3, -0.6]])}


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# name: (loss, parameters, NumPy reference of the loss at (parameters, X))
CASES = {
    "sum(X W + b)**2": (sg.sum(X * W + b) ** 2, [W, b],
                        lambda p, x: np.sum(x @ p[W] + p[b]) ** 2),
    "sum(X + 1 b)**2": (sg.sum(X + OneMatrix(n, 1) * b) ** 2, [b],
                        lambda p, x: np.sum(x + p[b]) ** 2),
    "sum(1 b + X)**2": (sg.sum(OneMatrix(n, 1) * b + X) ** 2, [b],
                        lambda p, x: np.sum(p[b] + x) ** 2),
    "sum(X w + c)**2": (sg.sum(X * w + c) ** 2, [w, c],
                        lambda p, x: np.sum(x @ p[w] + p[c]) ** 2),
    "bias column sum(X.T + d 1)**2": (sg.sum(X.T + d * OneMatrix(1, n)) ** 2, [d],
                                      lambda p, x: np.sum(x.T + p[d]) ** 2),
    "bias column sum(W X.T + d)**2": (sg.sum(W * X.T + d) ** 2, [W, d],
                                      lambda p, x: np.sum(p[W] @ x.T + p[d]) ** 2),
    "sum(tanh(X W + b))**2": (sg.sum(sg.tanh(X * W + b)) ** 2, [W, b],
                              lambda p, x: np.sum(np.tanh(x @ p[W] + p[b])) ** 2),
    "sum(tanh(b) + X)**2": (sg.sum(sg.tanh(b) + X) ** 2, [b],
                            lambda p, x: np.sum(np.tanh(p[b]) + x) ** 2),
    "sum(X o 1 b)**2": (sg.sum(HadamardProduct(X, OneMatrix(n, 1) * b)) ** 2, [b],
                        lambda p, x: np.sum(x * p[b]) ** 2),
    "sum((X W + b) V)**2": (sg.sum((X * W + b) * V) ** 2, [W, b, V],
                            lambda p, x: np.sum((x @ p[W] + p[b]) @ p[V]) ** 2),
    "sum(rowsum(X W + b)**2)": (sg.sum(HadamardPower(sg.sum(X * W + b, axis=1), 2)), [W, b],
                                lambda p, x: np.sum(np.sum(x @ p[W] + p[b], axis=1) ** 2)),
    "sum(colsum(X W + b)**2)": (sg.sum(HadamardPower(sg.sum(X * W + b, axis=0), 2)), [W, b],
                                lambda p, x: np.sum(np.sum(x @ p[W] + p[b], axis=0) ** 2)),
    "sum(rowsum(X W) b)**2": (sg.sum(sg.sum(X * W, axis=1) * b) ** 2, [W, b],
                              lambda p, x: np.sum(np.sum(x @ p[W], axis=1)[:, None] * p[b]) ** 2),
    "mean(X W + b)**2": (sg.mean(X * W + b) ** 2, [W, b],
                         lambda p, x: np.mean(x @ p[W] + p[b]) ** 2),
    "sum(X W + b)*sum(X W)": (sg.sum(X * W + b) * sg.sum(X * W), [W, b],
                              lambda p, x: np.sum(x @ p[W] + p[b]) * np.sum(x @ p[W])),
    "sum(softmax(X + b) o X)**2": (sg.sum(HadamardProduct(sg.softmax(X + b), X)) ** 2, [b],
                                   lambda p, x: np.sum(_softmax(x + p[b]) * x) ** 2),
    "sum(X w o 1 c)**2": (sg.sum(HadamardProduct(X * w, OneMatrix(n, 1) * c)) ** 2, [w, c],
                          lambda p, x: np.sum((x @ p[w]) * p[c]) ** 2),
    # SymPy gives softmax(X) + b the shape of b, its first term: mean divided by 2, not 2n
    "mean(softmax(X) + b)**2": (sg.mean(sg.softmax(X) + b) ** 2, [b],
                                lambda p, x: np.mean(_softmax(x) + p[b]) ** 2),
    # a scalar factor on a broadcast: 2*OneMatrix(n, 1)*b was refused as a matrix product
    "sum(X - 2 1 b)**2": (sg.sum(X - 2 * OneMatrix(n, 1) * b) ** 2, [b],
                          lambda p, x: np.sum(x - 2 * p[b]) ** 2),
}
#: The two losses the bug was found with: the first crashed the NumPy tier and hessian, the
#: second's tangent summed one row of the broadcast bias.
REPORTED = ["sum(X W + b)**2", "sum(X + 1 b)**2"]


#: The reported losses and a few neighbours in one loss (their sum: one compile for the
#: compiled loop's test; shared nodes add fan-out).
_SOME = tuple(CASES[k] for k in ("sum(X W + b)**2", "sum(X + 1 b)**2", "sum(tanh(b) + X)**2",
                                 "bias column sum(W X.T + d)**2", "sum(rowsum(X W + b)**2)"))
CASES["a few in one"] = (sp.Add(*(loss for loss, _, _ in _SOME)),
                         [p for p in INIT if any(p in params for _, params, _ in _SOME)],
                         lambda p, x: sum(f(p, x) for _, _, f in _SOME))


def model(name: str):
    loss, params, _ = CASES[name]
    return sg.Model(loss, params={p: INIT[p] for p in params}, data=[X])


def flat(values: dict, params) -> np.ndarray:
    return np.concatenate([np.asarray(values[p], dtype=float).ravel() for p in params])


def reference(name: str):
    """The NumPy loss of case ``name`` as a function of the flat parameters, and the point."""
    _, params, f = CASES[name]
    return reference_of(params, f)


def fd_gradient(f, v: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central differences (error ~h**2: exact to rounding for these quadratics)."""
    g = np.empty_like(v)
    for j in range(v.size):
        e = np.zeros_like(v)
        e[j] = h
        g[j] = (f(v + e) - f(v - e)) / (2 * h)
    return g


def fd_hessian(f, v: np.ndarray, h: float = 2e-3) -> np.ndarray:
    """Central second differences of f for every pair of entries, at steps h and h/2 with
    Richardson's extrapolation (error ~h**4 plus rounding ~1e-8 relative)."""
    m = v.size

    def second(step):
        hess = np.empty((m, m))
        e = np.eye(m) * step
        for i in range(m):
            for j in range(m):
                hess[i, j] = (f(v + e[i] + e[j]) - f(v + e[i] - e[j])
                              - f(v - e[i] + e[j]) + f(v - e[i] - e[j])) / (4 * step * step)
        return hess

    return (4 * second(h / 2) - second(h)) / 3


def err(got, want) -> float:
    """Largest absolute difference, relative to the largest reference entry (at least 1)."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))


def random_losses():
    """A hypothesis strategy of ``(loss, parameters, NumPy reference)``: (n, 2) matrices
    built from X by bias rows and columns (OneMatrix on either side, scaled), products,
    row and column sums broadcast back, softmax, tanh, sums and entry-wise products,
    reduced by ``sum(.)**2`` or ``mean(.)**2``."""
    from conftest import expression_trees
    from hypothesis import strategies as st

    one_row, one_col = OneMatrix(n, 1), OneMatrix(1, 2)
    leaves = st.sampled_from([(X, lambda p, x: x), (X * W, lambda p, x: x @ p[W])])

    def unary(build, ref):
        return lambda t: (build(t[0]), lambda p, x, f=t[1]: ref(p, f(p, x)))

    steps = [
        unary(lambda e: sg.tanh(e) * W, lambda p, a: np.tanh(a) @ p[W]),
        unary(lambda e: e + b, lambda p, a: a + p[b]),
        unary(lambda e: e - 2 * one_row * b, lambda p, a: a - 2 * p[b]),
        unary(lambda e: HadamardProduct(e, one_row * b), lambda p, a: a * p[b]),
        unary(lambda e: (e.T + d).T, lambda p, a: (a.T + p[d]).T),
        unary(lambda e: (e.T + d * OneMatrix(1, n)).T, lambda p, a: (a.T + p[d]).T),
        unary(lambda e: e + sg.sum(e, axis=1) * one_col,
              lambda p, a: a + a.sum(axis=1, keepdims=True)),
        unary(lambda e: e + one_row * sg.sum(e, axis=0),
              lambda p, a: a + a.sum(axis=0, keepdims=True)),
        unary(lambda e: sg.softmax(e), lambda p, a: _softmax(a)),
        unary(lambda e: sg.tanh(e), lambda p, a: np.tanh(a)),
    ]
    pairs = [
        lambda s, t: (s[0] + t[0], lambda p, x, f=s[1], g=t[1]: f(p, x) + g(p, x)),
        lambda s, t: (HadamardProduct(s[0], t[0]),
                      lambda p, x, f=s[1], g=t[1]: f(p, x) * g(p, x)),
    ]

    def reduced(args):
        (expr, f), mean = args
        if not expr.free_symbols & {W, b, d}:
            expr, f = expr + b, (lambda p, x, g=f: g(p, x) + p[b])
        reduce = np.mean if mean else np.sum
        loss = (sg.mean(expr) if mean else sg.sum(expr)) ** 2
        return loss, [s for s in (W, b, d) if s in loss.free_symbols], (
            lambda p, x: reduce(f(p, x)) ** 2)

    return st.tuples(expression_trees(leaves, steps, pairs, max_leaves=4),
                     st.booleans()).map(reduced)


def reference_of(params, f):
    """``f(p, x)`` at XV as a function of the flat ``params``, and their initial point."""
    def at(v):
        p, k = {}, 0
        for s in params:
            p[s] = v[k:k + INIT[s].size].reshape(INIT[s].shape)
            k += INIT[s].size
        return f(p, XV)

    return at, flat(INIT, params)
