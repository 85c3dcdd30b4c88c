"""W4P: W4 as a whole job in a new process: imports + data + compile + 100 Adam steps.

Each run starts ``python -m benchmarks.workloads.w4p PEER`` and times the process from its
start to its exit (the job prints its final parameters, checked against workloads.md's).
symgrad runs cold (an empty SYMGRAD_CACHE_DIR; its kernel library already compiled, as
after a user's first model) and warm (the same directory again); JAX keeps no disk cache,
PyTorch eager compiles nothing. ``first call`` is the median whole-process wall time over
the repeats (3, 1 with --quick); symgrad cold uses a new empty directory for every repeat.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.workloads.w4 import ANCHOR, ANCHOR_TOL, BETA1, BETA2, EPS, INIT, LR, STEPS, data

PEERS = {"symgrad": "symgrad", "torch": "torch", "jax": "jax"}


def runs(peers: list[str], quick: bool) -> list[dict]:
    out = []
    for peer in peers:
        phases = ("cold", "warm") if peer == "symgrad" else ("cold",)
        out += [{"peer": peer, "phase": phase, "cache": "w4p"} for phase in phases]
    return out


def run(spec, opts):
    repeats = 1 if opts.quick else 3
    walls, final = [], None
    for _ in range(repeats):
        env = dict(os.environ)
        if spec["peer"] == "symgrad":
            env["SYMGRAD_CACHE_DIR"] = (tempfile.mkdtemp(prefix="symgrad-w4p-")
                                        if spec["phase"] == "cold" else spec["cache_dir"])
            if spec["phase"] == "warm" and not os.listdir(spec["cache_dir"]):
                subprocess.run([sys.executable, "-m", __name__, "symgrad"], env=env,
                               capture_output=True, check=True)  # fill the cache first
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", __name__, spec["peer"]], env=env,
                              capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if proc.returncode:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1])
        final = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    diff = float(np.max(np.abs(final - ANCHOR)))
    yield {"variant": "whole process: imports + data + compile + 100 Adam steps",
           "group": "process", "first_call_s": statistics.median(walls),
           "steady_s": None, "max_abs_diff": diff, "tol": ANCHOR_TOL,
           "check": bool(diff <= ANCHOR_TOL), "cache_warm": spec["phase"] == "warm"
           if spec["peer"] == "symgrad" else None,
           "check_note": f"vs workloads.md params; {repeats} processes: "
           + ", ".join(f"{w:.2f}" for w in walls) + " s"}


def _symgrad():
    import sympy as sp

    import symgrad as sg

    x, y = data()
    a, b, c, d, e, xs, ys = sp.symbols("a b c d e x y")
    pred = a * sp.exp(-b * xs) * sp.sin(c * xs + d) + e
    model = sg.Model(loss=(pred - ys) ** 2, params=dict(zip((a, b, c, d, e), INIT)),
                     data=[xs, ys])
    model.fit({xs: x, ys: y}, optimizer=sg.optim.Adam(lr=LR), epochs=STEPS, verbose=0)
    return list(model.params.values())


def _torch():
    import torch

    torch.set_num_threads(2)
    x, y = (torch.from_numpy(v) for v in data())
    p = torch.tensor(INIT, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=LR, betas=(BETA1, BETA2), eps=EPS)
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((p[0] * torch.exp(-p[1] * x) * torch.sin(p[2] * x + p[3]) + p[4]
                           - y) ** 2)
        loss.backward()
        opt.step()
    return p.detach().numpy().tolist()


def _jax():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    x, y = (jax.device_put(v) for v in data())

    def loss(p):
        return jnp.mean((p[0] * jnp.exp(-p[1] * x) * jnp.sin(p[2] * x + p[3]) + p[4] - y) ** 2)

    @jax.jit
    def step(p, m, v, t):
        g = jax.grad(loss)(p)
        t = t + 1.0
        m = BETA1 * m + (1.0 - BETA1) * g
        v = BETA2 * v + (1.0 - BETA2) * g * g
        return p - (LR / (1.0 - BETA1 ** t)) * m / (jnp.sqrt(v) / jnp.sqrt(1.0 - BETA2 ** t)
                                                    + EPS), m, v, t

    state = (jnp.asarray(INIT), jnp.zeros(5), jnp.zeros(5), jnp.float64(0.0))
    for _ in range(STEPS):
        state = step(*state)
    return np.asarray(jax.block_until_ready(state[0])).tolist()


if __name__ == "__main__":
    print(json.dumps({"symgrad": _symgrad, "torch": _torch, "jax": _jax}[sys.argv[1]]()))
