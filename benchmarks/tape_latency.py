"""Latency of the tape path (``symgrad.compile.tape``) against the flat module, per stage.

Each measurement runs in a fresh subprocess. Stages: ``codegen`` (the expression checks,
graph build and reverse pass of ``sg.compile``), ``print`` (the listing's lines), ``lower``
(program -> tape), ``first`` (the first value+gradient: the interpreter loads from Numba's
cache), then the steady time per call from Python. ``interp`` rows compile the
interpreter into an empty Numba cache (the one-time cost per machine). ``flat`` rows run
``sg.compile`` into an empty symgrad cache.

    python benchmarks/tape_latency.py                 # W5 depths 30..1000, the 20,000 sin sum
    python benchmarks/tape_latency.py --cases w5:30,flat:30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = "interp,w5:30,w5:200,w5:500,w5:1000,sin:20000,flat:30,flat:100"


def _expression(kind: str, n: int):
    import numpy as np
    import sympy as sp

    if kind == "w5":
        ws = sp.symbols(f"w0:{n}")
        state = sp.Float(0.5)
        for k in range(n):
            state = state + ws[k] * sp.sin(state)
        return (state - 2) ** 2, list(ws), np.random.default_rng(0).uniform(0.0, 0.2, n)
    x = sp.Symbol("x")
    a = sp.symbols(f"a0:{n}")
    expr = sp.Add(*[sp.sin(a[k] * x) for k in range(n)])
    return expr, None, np.random.default_rng(0).uniform(-1.0, 1.0, n + 1)


def _steady(fn, args, target=0.3) -> float:
    timer = timeit.Timer(lambda: fn(*args))
    number = 1
    while timer.timeit(number) < target / 10:
        number *= 4
    return min(timer.timeit(number) / number for _ in range(5))


def measure_tape(kind: str, n: int) -> dict:
    import resource

    expr, wrt, point = _expression(kind, n)
    import numpy as np

    from symgrad.compile.function import _check_inputs, _check_wrt
    from symgrad.compile.tape import lower
    from symgrad.emit.printer import FlatCodePrinter
    from symgrad.expression import as_expression, free_symbols
    from symgrad.graph import build
    from symgrad.rules import differentiate

    out: dict = {"case": f"{kind}:{n}"}
    start = t = time.perf_counter()
    expr = as_expression(expr)
    symbols = free_symbols(expr)
    wrt_syms = _check_wrt(wrt, symbols)
    params = _check_inputs(None, symbols, wrt_syms)
    graph = build(expr)
    node_of = graph.input_nodes()
    program = differentiate(graph, [node_of[s] for s in wrt_syms])
    out["codegen_s"] = time.perf_counter() - t
    t = time.perf_counter()
    printer = FlatCodePrinter()
    lines = [printer.doprint(a) for a in [*program.forward, *program.backward]]
    out["print_s"] = time.perf_counter() - t
    out["listing_s"] = time.perf_counter() - start
    t = time.perf_counter()
    tape = lower(program, [node_of[s] for s in params])
    out["lower_s"] = time.perf_counter() - t
    args = [float(v) for v in point]
    t = time.perf_counter()
    value, grad = tape.value_and_grad(*args)
    out["first_s"] = time.perf_counter() - t
    out["total_s"] = time.perf_counter() - start
    out.update(lines=len(lines), rows=tape.code.shape[0], slots=tape.n_slots)
    out["steady_us"] = 1e6 * _steady(tape.value_and_grad, args)
    x, g = np.array(args), np.empty(len(wrt_syms))
    out["steady_array_us"] = 1e6 * _steady(tape.value_and_grad_array, (x, g))
    out["ns_per_row"] = 1e3 * out["steady_array_us"] / tape.code.shape[0]
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["value"] = value
    return out


def measure_flat(n: int) -> dict:
    expr, wrt, point = _expression("w5", n)
    import symgrad as sg

    t = time.perf_counter()
    f = sg.compile(expr, wrt=wrt)
    compile_s = time.perf_counter() - t
    args = [float(v) for v in point]
    t = time.perf_counter()
    f.value_and_grad(*args)
    first = time.perf_counter() - t
    return {"case": f"flat:{n}", "lines": len(f.generated.forward) + len(f.generated.backward),
            "codegen_s": f.timings["codegen_s"], "numba_s": f.timings["compile_s"],
            "total_s": compile_s + first,
            "steady_us": 1e6 * _steady(f.value_and_grad, args),
            "steady_kernel_us": 1e6 * _steady(f.kernel, args)}


def measure_interpreter() -> dict:
    """Compile every entry point of the interpreter into the (empty) Numba cache."""
    import numpy as np

    t = time.perf_counter()
    from symgrad.kernels import tape_vm as vm

    out = {"case": "interp", "import_s": time.perf_counter() - t}
    op = vm.OPCODES
    code = np.array([[op["MUL"], 1, 0, 0, 0]], dtype=np.int32)
    consts, x, slots = np.empty(0), np.array([2.0]), np.array([0], dtype=np.int64)
    grad, values, grads = np.empty(1), np.empty(3), np.empty((1, 3))
    calls = {
        "value_and_grad_point": lambda: vm.value_and_grad_point(code, consts, 2, x, 1, slots, grad),
        "value_point": lambda: vm.value_point(code, consts, 2, x, 1),
        "value_batch": lambda: vm.value_batch(code, consts, 2, np.ones((1, 3)), 1, values),
        "value_and_grad_batch": lambda: vm.value_and_grad_batch(
            code, consts, 2, np.ones((1, 3)), 1, slots, values, grads),
    }
    for name, call in calls.items():
        t = time.perf_counter()
        call()
        out[f"{name}_s"] = time.perf_counter() - t
    out["total_s"] = sum(v for k, v in out.items() if k.endswith("_s"))
    return out


def child(case: str) -> dict:
    kind, _, n = case.partition(":")
    if kind == "interp":
        return measure_interpreter()
    if kind == "flat":
        return measure_flat(int(n))
    return measure_tape(kind, int(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=DEFAULT)
    parser.add_argument("--child")
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(child(opts.child)))
        return
    numba_cache = tempfile.mkdtemp(prefix="tape-bench-numba-")
    for case in opts.cases.split(","):
        env = dict(os.environ, NUMBA_CACHE_DIR=numba_cache,
                   SYMGRAD_CACHE_DIR=tempfile.mkdtemp(prefix="tape-bench-sg-"),
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if case == "interp" or case.startswith("flat"):
            env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="tape-bench-numba-")
        if case != "interp":  # the interpreter is in the shared cache: compile it there once
            subprocess.run([sys.executable, __file__, "--child", "interp"], env=dict(
                env, NUMBA_CACHE_DIR=numba_cache), check=True, capture_output=True)
        result = subprocess.run([sys.executable, __file__, "--child", case], env=env,
                                check=True, capture_output=True, text=True)
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
