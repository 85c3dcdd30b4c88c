"""Models the saved-model tests build in the test process and in the subprocesses they start
(a killed training run, the audit-hook check): the same model, data and fit arguments."""

import numpy as np
import sympy as sp
from sympy import MatrixSymbol

import symgrad as sg

a, b, c, x, y = sp.symbols("a b c x y")
n = sp.Symbol("n")
X, Y = MatrixSymbol("X", n, 2), MatrixSymbol("Y", n, 2)
W1, b1 = MatrixSymbol("W1", 2, 6), MatrixSymbol("b1", 1, 6)
W2, b2 = MatrixSymbol("W2", 6, 2), MatrixSymbol("b2", 1, 2)


def scalar(optimizer=None):
    """A small nonlinear regression, minibatch Adam with shuffling."""
    rng = np.random.default_rng(0)
    xs = rng.uniform(-2, 2, 90)
    ys = 1.5 * np.tanh(2.0 * xs) + 0.3 + 0.05 * rng.standard_normal(90)
    pred = a * sp.tanh(b * x) + c
    model = sg.Model((pred - y) ** 2 + sp.Rational(1, 1000) * sp.Abs(b), {a: 0.5, b: 0.5, c: 0.0},
                     [x, y], prediction=pred, target=y,
                     optimizer=optimizer or sg.optim.Adam(lr=0.03))
    return model, {x: xs, y: ys}, dict(batch_size=16, seed=11)


def matrix(dtype="float64", optimizer=None):
    """A tanh MLP classifier on two blobs, minibatch Adam with shuffling."""
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((80, 2))
    labels = (xs[:, 0] + 0.5 * xs[:, 1] > 0).astype(np.int64)
    scores = sg.tanh(X * W1 + b1) * W2 + b2
    loss = sg.softmax_cross_entropy(scores, Y) + sp.Float("0.001") * sg.l2(W1)
    model = sg.Model(loss, {W1: sg.init.xavier(2, 6, seed=2), b1: np.zeros((1, 6)),
                            W2: sg.init.xavier(6, 2, seed=3), b2: np.zeros((1, 2))},
                     [X, Y], prediction=sg.softmax(scores), target=Y, dtype=dtype,
                     optimizer=optimizer or sg.optim.Adam(lr=0.02))
    return model, {X: xs, Y: sg.one_hot(labels, 2)}, dict(batch_size=16, seed=5,
                                                         engine="compiled")


def dropout():
    """The MLP with dropout on its hidden layer (masks drawn per epoch from seed and epoch)."""
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((60, 2))
    labels = (xs[:, 0] - xs[:, 1] > 0).astype(np.int64)
    scores = sg.dropout(sg.tanh(X * W1 + b1), 0.25) * W2 + b2
    model = sg.Model(sg.softmax_cross_entropy(scores, Y),
                     {W1: sg.init.xavier(2, 6, seed=5), b1: np.zeros((1, 6)),
                      W2: sg.init.xavier(6, 2, seed=6), b2: np.zeros((1, 2))},
                     [X, Y], optimizer=sg.optim.Adam(lr=0.02))
    return model, {X: xs, Y: sg.one_hot(labels, 2)}, dict(batch_size=20, seed=7,
                                                         engine="compiled")


BUILD = {"scalar": scalar, "matrix": matrix, "dropout": dropout}


def flat(model) -> np.ndarray:
    """All parameters of a model, one vector (for bit-for-bit comparisons)."""
    return np.concatenate([np.ravel(v) for v in model.params.values()])


# -- reading and rewriting a file's header (a hostile editor recomputes the checksum) ---------

def split(data: bytes):
    """(header dict, array bytes) of a saved-model file."""
    import json
    import struct

    (size,) = struct.unpack("<Q", data[8:16])
    return json.loads(data[16:16 + size]), data[16 + size:-32]


def join(header, arrays: bytes) -> bytes:
    """A saved-model file with this header and array bytes, with a valid checksum."""
    import hashlib
    import json
    import struct

    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    body = b"\x93SYMGRAD" + struct.pack("<Q", len(text)) + text + arrays
    return body + hashlib.sha256(body).digest()


def paths(value, prefix=()):
    """Every path (tuple of keys and indices) into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for k, v in enumerate(value):
            yield from paths(v, (*prefix, k))


def replaced(value, path, new, delete=False):
    """A copy of the JSON ``value`` with the entry at ``path`` replaced (or deleted)."""
    import copy

    value = copy.deepcopy(value)
    if not path:
        return new
    *head, last = path
    parent = value
    for k in head:
        parent = parent[k]
    if delete:
        del parent[last]
    else:
        parent[last] = new
    return value


#: Replacement values a hostile or careless edit may put anywhere in a header.
HOSTILE = [None, True, -1, 0, 1, 2**70, -(2**70), 10**400, 1e308, float("nan"), "", "x" * 300,
           "os.system", "__import__('os').system('echo pwned')", "Function", "Symbol",
           "eval", "<f8", "|O", ">f8", "<i8", [], {}, [0], [2**40, 2**40], [[[[[]]]]],
           {"a": 1}, ["Symbol", "x", {}], ["Integer", "9" * 5000], ["Float", "1e9999999", 53],
           ["Float", "0.1", 10**9], ["Rational", "1", "0"], ["Pow", 0, 0], [0, 1, 2]]


def mutants(data: bytes, seed: int, count: int):
    """``count`` damaged or edited versions of a saved-model file, reproducibly from ``seed``:
    byte flips, truncations, appended bytes, and header edits with the checksum recomputed
    (values replaced by :data:`HOSTILE` ones or random integers, keys deleted, the version
    raised, huge shapes, hostile node types)."""
    import random

    rng = random.Random(seed)
    header, arrays = split(data)
    every = list(paths(header))
    for _ in range(count):
        how = rng.randrange(6)
        if how == 0:
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] ^= rng.randint(1, 255)
            yield "flip", bytes(b)
        elif how == 1:
            yield "truncate", data[:rng.randrange(len(data))]
        elif how == 2:
            yield "append", data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif how == 3:
            path = rng.choice(every[1:])
            yield "delete", join(replaced(header, path, None, delete=True), arrays)
        elif how == 4:
            path = rng.choice(every)
            new = rng.choice(HOSTILE + [rng.randint(-5, 2**64), rng.random()])
            yield "edit", join(replaced(header, path, new), arrays)
        else:
            nodes = header["expression"]["nodes"]
            k = rng.randrange(len(nodes))
            new = rng.choice(["os.system", "exec", "Function", "Lambda", "Symbol", 99, -1,
                              "Integer", "MatrixSymbol", "Float", "S"])
            yield "node", join(replaced(header, ("expression", "nodes", k, 0), new), arrays)
