"""Time templates/vecmath.py against libm inside njit loops and check which loops vectorize.

Run: python benchmarks/vecmath_bench.py [n]. Prints ns per element (median of repeats)
for math.f vs vecmath.vf over n float64 points, the Numba compile time of each loop, and
whether LLVM vectorized the loop: packed double arithmetic on ymm/zmm registers, and the
number of libm calls left in it. sin_fast and cos_fast (|x| <= SIN_FAST_LIMIT, nan beyond)
run on the sin/cos points against math.sin/math.cos; the last table times sin and cos on
[-pi, pi] too, where libm takes its fast path.
"""

import importlib.util
import math
import re
import sys
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_vecmath():
    spec = importlib.util.spec_from_file_location("vecmath", ROOT / "templates" / "vecmath.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_loop(f):
    @numba.njit(error_model="numpy")
    def loop(x, out):
        for i in range(x.size):
            out[i] = f(x[i])

    return loop


PACKED = re.compile(r"\bv(?:fn?m(?:add|sub)\d{3}|mul|add|sub|div)pd\s[^\n]*[yz]mm")
CALL = re.compile(r"\bcall[q]?\s")


def inspect(loop, sig):
    """(packed double ops, calls) in the assembly of the loop's own function
    (the first one; the CPython wrapper after it has calls of its own)."""
    asm = loop.inspect_asm(sig).split(".Lfunc_end0")[0]
    return len(PACKED.findall(asm)), len(CALL.findall(asm))


def compile_seconds(loop, sig):
    start = time.perf_counter()
    loop.compile(sig)
    return time.perf_counter() - start


def time_loop(loop, x, out, repeats):
    loop(x, out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loop(x, out)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / x.size * 1e9


def main(n=1_000_000, repeats=15):
    vm = load_vecmath()
    rng = np.random.default_rng(0)
    domains = {
        "exp": rng.uniform(-700.0, 700.0, n),
        "log": np.exp(rng.uniform(-700.0, 700.0, n)),
        "sin": rng.uniform(-1e4, 1e4, n),
        "cos": rng.uniform(-1e4, 1e4, n),
        "tanh": rng.uniform(-30.0, 30.0, n),
        "log1p": rng.uniform(-0.99, 10.0, n),
        "expm1": rng.uniform(-40.0, 40.0, n),
    }
    domains["sin_fast"] = domains["sin"]
    domains["cos_fast"] = domains["cos"]
    out = np.empty(n)
    sig = (numba.float64[::1], numba.float64[::1])
    print(
        f"n = {n}, median of {repeats}; packed = packed-double ops with ymm/zmm in the asm; "
        "compile = seconds to compile the loop (Numba already warm)"
    )
    print(
        f"{'function':9} {'libm ns':>8} {'vec ns':>8} {'speedup':>8} {'compile':>8}   "
        f"{'libm loop':22} {'vec loop':22}"
    )
    for name, x in domains.items():
        row = []
        for f in (getattr(math, name.removesuffix("_fast")), getattr(vm, "v" + name)):
            loop = make_loop(f)
            seconds = compile_seconds(loop, sig)
            ns = time_loop(loop, x, out, repeats)
            packed, calls = inspect(loop, sig)
            vectorized = "yes" if packed else "no"
            row.append((ns, seconds, f"{vectorized} ({packed} packed, {calls} calls)"))
        (libm_ns, _, libm_v), (vec_ns, vec_s, vec_v) = row
        print(
            f"{name:9} {libm_ns:8.2f} {vec_ns:8.2f} {libm_ns / vec_ns:7.1f}x {vec_s:7.2f}s   "
            f"{libm_v:22} {vec_v:22}"
        )

    print(f"\nsin and cos, ns per element ({'libm':>6} {'vfull':>6} {'vfast':>6})")
    for label, lo, hi in (("[-pi, pi]", -math.pi, math.pi), ("[-1e4, 1e4]", -1e4, 1e4)):
        x = rng.uniform(lo, hi, n)
        for name in ("sin", "cos"):
            fs = (getattr(math, name), getattr(vm, "v" + name), getattr(vm, f"v{name}_fast"))
            ns = [time_loop(make_loop(f), x, out, repeats) for f in fs]
            print(f"{name} on {label:22} {ns[0]:6.2f} {ns[1]:6.2f} {ns[2]:6.2f}")

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
