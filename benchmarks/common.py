"""Helpers shared by the workload modules, used inside the worker subprocess.

Timing: ``per_call`` runs ``fn(a0, a1, ...)`` through ``timeit`` (garbage collector off, no
lambda or ``*args`` in the timed statement) in ``repeats`` batches of ``number`` calls, with
``number`` chosen so one batch takes about ``target_s``; it reports the median per-call time
(``steady_s``), the fastest batch and the spread. Checking: ``check`` compares a value and a
gradient with the NumPy float64 reference (max abs diff over value and every partial).
"""

from __future__ import annotations

import gc
import statistics
import time
import timeit
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Options:
    repeats: int = 11
    quick: bool = False

    @property
    def target_s(self) -> float:
        """Wall time of one timed batch."""
        return 0.03 if self.quick else 0.1


def per_call(fn, args=(), *, opts: Options, repeats: int | None = None) -> dict:
    """Median seconds per call of ``fn(*args)`` (plus min and quartiles) over ``repeats``."""
    names = [f"a{i}" for i in range(len(args))]
    timer = timeit.Timer(f"fn({', '.join(names)})", globals={"fn": fn, **dict(zip(names, args))})
    number, elapsed = 1, timer.timeit(1)
    while elapsed < opts.target_s / 4:
        number *= 4 if elapsed < opts.target_s / 40 else 2
        elapsed = timer.timeit(number)
    number = max(1, round(number * opts.target_s / max(elapsed, 1e-9)))
    times = [timer.timeit(number) / number for _ in range(repeats or opts.repeats)]
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    return {
        "steady_s": statistics.median(times),
        "steady_min_s": min(times),
        "steady_q1_s": quartiles[0],
        "steady_q3_s": quartiles[2],
        "calls_per_batch": number,
        "batches": len(times),
    }


def check(value, grad, ref_value, ref_grad, tol: float, rtol: float | None = None) -> dict:
    """Max abs diff of value and gradient against the reference; pass if <= tol and, when
    ``rtol`` is given, the max relative diff (over nonzero reference entries) is <= rtol."""
    got = np.concatenate([np.ravel(np.asarray(value, dtype=np.float64)),
                          np.ravel(np.asarray(grad, dtype=np.float64))])
    ref = np.concatenate([[ref_value], np.asarray(ref_grad, dtype=np.float64)])
    if got.shape != ref.shape:
        return {"max_abs_diff": None, "tol": tol, "check": False,
                "check_note": f"shape {got.shape} != reference {ref.shape}"}
    err = np.abs(got - ref)
    out = {"max_abs_diff": float(np.max(err)), "tol": tol}
    ok = out["max_abs_diff"] <= tol
    if rtol is not None:
        nz = ref != 0
        rel = float(np.max(err[nz] / np.abs(ref[nz]))) if nz.any() else 0.0
        out.update(max_rel_diff=rel, rtol=rtol, check_note=f"max rel diff {rel:.1e}")
        ok = ok and rel <= rtol
    out["check"] = bool(ok)
    return out


#: Every peer, mapped to the module whose absence means "not installed".
PEER_MODULES = {p: p for p in ("symgrad", "numpy", "numba", "torch", "jax", "pytensor")}


class Clock:
    """``with Clock() as c: ...`` then ``c.s`` is the elapsed wall time in seconds. The
    garbage collector runs before the clock starts, so no timed region of any peer pays
    for what came before it (a pass after the imports costs ~45 ms)."""

    def __enter__(self) -> Clock:
        gc.collect()
        self.s = 0.0
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self._t


def numba_cache_files(directory: str | Path) -> int:
    """How many Numba index files (``*.nbi``) a cache directory holds (0 = cold)."""
    return len(list(Path(directory).glob("**/*.nbi")))


def c_modules(compiledir: str | Path) -> int:
    """How many compiled C modules PyTensor's compile directory holds."""
    return len(list(Path(compiledir).glob("**/*.so")))


def pytensor_cache(compiledir: str | Path, before: int) -> dict:
    """Was PyTensor's disk cache warm, i.e. did compiling the function add no C module?"""
    new = c_modules(compiledir) - before
    return {"cache_warm": new == 0, "cache_note": f"{new} new C modules in {compiledir}"}


def jax_cache(jax) -> dict:
    """JAX keeps no disk cache unless ``jax_compilation_cache_dir`` is set."""
    directory = getattr(jax.config, "jax_compilation_cache_dir", None)
    if not directory:
        return {"cache_warm": False, "cache_note": "jax_compilation_cache_dir unset: no disk cache"}
    return {"cache_warm": None, "cache_note": f"persistent compilation cache in {directory}"}


def timed_steps(reset, step, steps: int) -> tuple[list[float], list]:
    """``reset()``, then ``steps`` calls of ``step()``, each timed alone (garbage collector
    off); returns the times and what the calls returned (e.g. the loss of every epoch)."""
    reset()
    times, out = [], []
    gc.collect()
    gc.disable()
    try:
        for _ in range(steps):
            t0 = time.perf_counter()
            out.append(step())
            times.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return times, out


def step_stats(times: list[float]) -> dict:
    """Median, min and quartiles of per-step (or per-epoch) times, as result-row fields."""
    q = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    return {"steady_s": statistics.median(times), "steady_min_s": min(times),
            "steady_q1_s": q[0], "steady_q3_s": q[2], "steps_timed": len(times)}


def engines(hist) -> str:
    """Which loop ran the epochs of a symgrad fit: 'numpy 2000', 'numpy 350, compiled 1650'."""
    ran = list(getattr(hist, "engine", []) or [])
    return ", ".join(f"{e} {ran.count(e)}" for e in dict.fromkeys(ran))
