"""Time W3's two large float32 products from compiled code (``np.dot`` in njit, SciPy's
OpenBLAS) in every memory layout the generator could choose, and NumPy's own sgemm beside them.

Run: OPENBLAS_NUM_THREADS=1 python benchmarks/gemm_layouts.py [rounds]. The X batch is a row
slice (a view) of a (60000, 784) float32 array, as in an unshuffled fit. One thread is timed
with time.thread_time (robust on a shared machine), more with perf_counter; the variants are
interleaved, each timed over 100 calls per round; medians and minima over the rounds, in us
per call.

forward  s0 = X @ W1 (128 x 784 x 128):
  stored   the generator's layout: s0 (128, n) (samples innermost) = W1.T @ X.T
  rows     s0 stored (n, 128) = X @ W1
  W1^T     W1 stored transposed, (128, 784): s0 (128, n) = W1t @ X.T
  copy     as "stored", the batch copied to a buffer first (view against copy)
backward grad_W1 = X.T @ delta (784 x 128 x 128):
  stored   grad_W1 (784, 128), delta (128, n) = X.T @ delta.T
  rows     delta stored (n, 128) = X.T @ delta
  W1^T     grad_W1 stored transposed, (128, 784) = delta @ X

Measured 2026-12-07 (one thread, load ~2, 15 rounds): forward 329 / 318 / 298 / 353, backward
378 / 372 / 341; NumPy's sgemm 298-308 in the same layouts. Storing W1 transposed made both
products ~10 % faster; the whole W3 step, one thread, 6 % (the same parameters to the bit).
"""

import os
import sys
import time

import numpy as np
from numba import njit

R = 100  # calls per timed round


@njit
def fwd_stored(X, W1, W1t, s0, d, gW, gWt):
    for r in range(R):
        st = (r % 468) * 128
        np.dot(W1.T, X[st:st + 128].T, s0)


@njit
def fwd_rows(X, W1, W1t, s0, d, gW, gWt):
    for r in range(R):
        st = (r % 468) * 128
        np.dot(X[st:st + 128], W1, s0)


@njit
def fwd_w1t(X, W1, W1t, s0, d, gW, gWt):
    for r in range(R):
        st = (r % 468) * 128
        np.dot(W1t, X[st:st + 128].T, s0)


@njit
def fwd_copy(X, W1, W1t, s0, d, gW, gWt):
    Xb = np.empty((128, X.shape[1]), X.dtype)
    for r in range(R):
        st = (r % 468) * 128
        Xb[:] = X[st:st + 128]
        np.dot(W1.T, Xb.T, s0)


@njit
def bwd_stored(X, W1, W1t, s0, d, gW, gWt):
    for r in range(R):
        st = (r % 468) * 128
        np.dot(X[st:st + 128].T, d.T, gW)


@njit
def bwd_rows(X, W1, W1t, s0, d, gW, gWt):
    for r in range(R):
        st = (r % 468) * 128
        np.dot(X[st:st + 128].T, d, gW)


@njit
def bwd_w1t(X, W1, W1t, s0, d, gW, gWt):
    for r in range(R):
        st = (r % 468) * 128
        np.dot(d, X[st:st + 128], gWt)


def main(rounds: int) -> None:
    X = np.random.default_rng(0).random((60000, 784), dtype=np.float32)
    W1 = np.random.default_rng(1).standard_normal((784, 128)).astype(np.float32)
    W1t = np.ascontiguousarray(W1.T)
    s0, d = np.empty((128, 128), np.float32), np.ones((128, 128), np.float32)
    gW, gWt = np.empty((784, 128), np.float32), np.empty((128, 784), np.float32)
    args = (X, W1, W1t, s0, d, gW, gWt)
    fns = {"forward stored": fwd_stored, "forward rows": fwd_rows, "forward W1^T": fwd_w1t,
           "forward copy": fwd_copy, "backward stored": bwd_stored,
           "backward rows": bwd_rows, "backward W1^T": bwd_w1t}
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "?")
    clock = time.thread_time if threads == "1" else time.perf_counter
    for f in fns.values():
        f(*args)
    numpy_fns = {
        "numpy X @ W1": lambda r: np.dot(X[r * 128:r * 128 + 128], W1, out=s0),
        "numpy delta @ X": lambda r: np.dot(d, X[r * 128:r * 128 + 128], out=gWt),
        "numpy X.T @ delta.T": lambda r: np.dot(X[r * 128:r * 128 + 128].T, d.T, out=gW)}
    times = {k: [] for k in [*fns, *numpy_fns]}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = clock()
            f(*args)
            times[k].append((clock() - t0) / R * 1e6)
        for k, f in numpy_fns.items():
            t0 = clock()
            for r in range(R):
                f(r)
            times[k].append((clock() - t0) / R * 1e6)
    print(f"OPENBLAS_NUM_THREADS={threads}, {clock.__name__}, {rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f}")
    for k, t in times.items():
        print(f"{k:22s} median {np.median(t):7.1f} us   min {min(t):7.1f} us")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
