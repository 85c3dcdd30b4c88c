"""Time symgrad/kernels/vecmath.py against libm inside njit loops and check which loops vectorize.

Run: python benchmarks/vecmath_bench.py [n]. Prints ns per element (median of repeats)
for math.f vs vecmath.vf over n float64 points, the Numba compile time of each loop, and
whether LLVM vectorized the loop: packed double arithmetic on ymm/zmm registers, and the
number of libm calls left in it. sin_fast and cos_fast (|x| <= SIN_FAST_LIMIT, nan beyond)
run on the sin/cos points against math.sin/math.cos; the last table times sin and cos on
[-pi, pi] too, where libm takes its fast path.

python benchmarks/vecmath_bench.py --tanh [--against OLD_VECMATH.py] [--repeats R] times
the tanh pass alone, single thread (time.thread_time), interleaved repeats, over 4,800
values (W2's tanh pass: H=16 x N=300, N(0, 2) arguments) and 1,000,000 (uniform in
[-20, 20]): vtanh, libm's math.tanh, the exp-based tanh of W2's hand-written peer and, with
--against, the vtanh of another copy of vecmath.py (for an A/B against main:
``git show main:symgrad/kernels/vecmath.py > /tmp/vecmath_main.py``). It prints the load
average, best and median ns per value, the instructions in the loop's vectorized body, and
each version's max error in ulp against x87 long double tanh (mpmath where long double is
just double) over 2,000,000 arguments spanning every binade and the switch region.
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
    sys.path.insert(0, str(ROOT))
    from symgrad.kernels import vecmath

    return vecmath


def load_file(path):
    """Another copy of vecmath.py (a developer's file, for an A/B), as its own module."""
    spec = importlib.util.spec_from_file_location("vecmath_against", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Numba's disk cache imports it by name
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


def hand_tanh():
    """W2's hand-written peer tanh (benchmarks/workloads/w2.py): exp(-2|x|) by a Taylor
    polynomial, then (1 - t) / (1 + t); fast, but not accurate near 0."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.workloads import w2

    return w2._vector_math(numba)[0]


def make_repeated_loop(f):
    @numba.njit(error_model="numpy")
    def loop(x, out, reps):
        for _ in range(reps):
            for i in range(x.size):
                out[i] = f(x[i])

    return loop


def body_instructions(f):
    """Instructions in the vectorized body of a loop over x applying f (its largest block of
    packed ymm/zmm code)."""
    loop = make_loop(f)
    loop(np.ones(64), np.empty(64))
    asm = loop.inspect_asm(loop.signatures[0]).split(".Lfunc_end0")[0]
    blocks = re.split(r"\n(?=\.LBB)", asm)
    body = max(blocks, key=lambda b: len(re.findall(r"[yz]mm", b)))
    if not PACKED.search(body) or CALL.search(body):
        return "-"  # not vectorized
    return sum(1 for line in body.splitlines()
               if line.strip() and not line.strip().startswith((".", "#")))


def max_ulp_error(f, x):
    """Max |f(x) - tanh(x)| in ulp of the exact result rounded to double."""
    out = np.empty_like(x)
    make_repeated_loop(f)(x, out, 1)
    if np.finfo(np.longdouble).nmant >= 63:
        exact = np.tanh(x.astype(np.longdouble))
        ulp = np.spacing(np.abs(exact.astype(np.float64))).astype(np.longdouble)
        return float(np.max(np.abs(out.astype(np.longdouble) - exact) / ulp))
    import mpmath

    mpmath.mp.prec = 120
    pick = np.random.default_rng(1).choice(x.size, 20_000, replace=False)
    return max(float(abs(g - mpmath.tanh(v)) / math.ulp(float(mpmath.tanh(v))))
               for v, g in zip(x[pick].tolist(), out[pick].tolist()))


def tanh_main(against=None, repeats=21):
    vm = load_vecmath()
    variants = {"vtanh": vm.vtanh, "math.tanh": math.tanh, "W2 hand-written": hand_tanh()}
    if against:
        variants[f"vtanh of {Path(against).name}"] = load_file(against).vtanh
    loops = {name: make_repeated_loop(f) for name, f in variants.items()}
    rng = np.random.default_rng(0)
    sizes = {4800: 2.0 * rng.standard_normal(4800), 1_000_000: rng.uniform(-20.0, 20.0, 1_000_000)}
    reps = {n: max(1, 2_000_000 // n) for n in sizes}
    for loop in loops.values():
        for x in sizes.values():
            loop(x, np.empty_like(x), 1)
    times = {(name, n): [] for name in loops for n in sizes}
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else "?"
    for _ in range(repeats):
        for n, x in sizes.items():
            out = np.empty_like(x)
            for name, loop in loops.items():
                start = time.thread_time()
                loop(x, out, reps[n])
                times[name, n].append((time.thread_time() - start) / (reps[n] * n) * 1e9)
    signs = np.where(rng.random(1_000_000) < 0.5, -1.0, 1.0)
    x_err = np.concatenate([signs * 2.0 ** rng.uniform(-1074.0, 6.0, 1_000_000),
                            rng.uniform(0.25, 0.6, 1_000_000)])
    print(f"tanh pass, single thread, thread_time, {repeats} interleaved repeats; "
          f"load average {' '.join(load)}")
    print(f"{'':26} {'4800: best':>11} {'median':>7} {'1e6: best':>10} {'median':>7} "
          f"{'body':>5} {'max ulp':>8}")
    for name, f in variants.items():
        cells = [f"{stat(times[name, n]):.3f}" for n in sizes for stat in (min, np.median)]
        print(f"{name:26} {cells[0]:>11} {cells[1]:>7} {cells[2]:>10} {cells[3]:>7} "
              f"{body_instructions(f):>5} {max_ulp_error(f, x_err):8.3g}")
    print("ns per value; body = instructions in the vectorized loop body; max ulp over "
          "2e6 arguments (every binade, and [0.25, 0.6])")


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--tanh" in args:
        against = args[args.index("--against") + 1] if "--against" in args else None
        repeats = int(args[args.index("--repeats") + 1]) if "--repeats" in args else 21
        tanh_main(against, repeats)
    else:
        main(int(args[0]) if args else 1_000_000)
