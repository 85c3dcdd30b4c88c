"""Benchmark symgrad against its peers: ``python benchmarks/run.py [options]``.

Every (workload, peer) run is a fresh subprocess (``python -m benchmarks.worker``) with
OMP/MKL/OPENBLAS/NUMBA thread counts and XLA's intra-op pool set to 2, so thread pools never
share a process. Each run prints JSON rows; this driver adds the background load (1-minute
load average before and after the run), computes ratios (peer steady time / symgrad steady
time in the same workload, case and group), prints a table and optionally writes JSON.
See benchmarks/README.md for the columns.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.workloads import WORKLOADS  # noqa: E402

MARK = "@@ROW "
ALL_PEERS = ["symgrad", "numpy", "numba", "torch", "jax", "pytensor"]
THREADS = "2"


def worker_env() -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = THREADS
    env["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={THREADS} "
        + env.get("XLA_FLAGS", "")
    ).strip()
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def busy_cpu_s() -> tuple[float, float] | None:
    """(CPU seconds all processes have spent so far, seconds stolen by the hypervisor),
    from Linux /proc/stat, or None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


def own_cpu_s() -> float:
    """CPU seconds used by this driver and its finished subprocesses."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def launch(spec: dict, env: dict, timeout: float) -> list[dict]:
    """Run one worker subprocess; always returns at least one row."""
    base = {k: spec.get(k) for k in ("workload", "peer", "case", "phase")}
    load_before = os.getloadavg()
    busy_before, own_before = busy_cpu_s(), own_cpu_s()
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        )
        rows = [json.loads(line[len(MARK):]) for line in proc.stdout.splitlines()
                if line.startswith(MARK)]
        if not rows:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            rows = [{**base, "status": "error", "error": f"exit {proc.returncode}: {tail}"}]
    except subprocess.TimeoutExpired:
        rows = [{**base, "status": "timeout", "error": f"no result within {timeout:.0f} s"}]
    wall = time.perf_counter() - start
    busy_after, own = busy_cpu_s(), own_cpu_s() - own_before
    extra = {"wall_s": wall, "load_before": load_before, "load_after": os.getloadavg(),
             # cores kept busy by other processes while this subprocess ran (0 = quiet),
             # and cores' worth of time the hypervisor gave to other machines
             "bg_cores": None if busy_before is None or busy_after is None
             else max(0.0, (busy_after[0] - busy_before[0] - own) / wall),
             "steal_cores": None if busy_before is None or busy_after is None
             else (busy_after[1] - busy_before[1]) / wall}
    return [{**row, **extra} for row in rows]


def kernel_library(env: dict, timeout: float) -> list[dict]:
    """symgrad's kernel library: its one-time compile (``symgrad cache warm`` with an empty
    Numba cache) and, so that every later row finds it as users do after their first model,
    the same command against the real cache (a load if it was compiled before)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="symgrad-bench-numba-") as empty:
        for variant, extra in (("kernel library, one-time compile (empty Numba cache)",
                                {"NUMBA_CACHE_DIR": empty}),
                               ("kernel library, warm-up against the real cache", {})):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "symgrad", "cache", "warm"], cwd=ROOT,
                                  env={**env, **extra}, capture_output=True, text=True,
                                  timeout=timeout)
            wall = time.perf_counter() - start
            ok = proc.returncode == 0
            rows.append({"workload": "K", "peer": "symgrad", "variant": variant,
                         "status": "ok" if ok else "error", "first_call_s": wall, "wall_s": wall,
                         "cache_warm": False if extra else None,
                         "error": "" if ok else proc.stderr.strip()[-300:],
                         "load_before": os.getloadavg(), "load_after": os.getloadavg()})
    return rows


def add_ratios(rows: list[dict]) -> None:
    base = {(r["workload"], r.get("case"), r.get("group")): r["steady_s"] for r in rows
            if r.get("baseline") and r.get("steady_s")}
    for r in rows:
        b = base.get((r["workload"], r.get("case"), r.get("group")))
        r["ratio"] = r["steady_s"] / b if b and r.get("steady_s") else None


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if s >= scale or unit == "ns":
            return f"{s / scale:.3g} {unit}"
    return "-"


def notes(r: dict) -> str:
    if r.get("status") != "ok":
        return r.get("error", "")
    parts = []
    for key, label in (("import_s", "import"), ("sympy_import_s", "sympy import"),
                       ("numba_import_s", "numba import"), ("build_s", "build expr"),
                       ("codegen_s", "codegen"), ("compile_s", "numba compile/load"),
                       ("load_s", "load"), ("total_s", "first run total")):
        if r.get(key) is not None:
            parts.append(f"{label} {fmt_time(r[key])}")
    if r.get("backend") == "tape":
        parts.append("run as a tape")
    if r.get("engines"):
        parts.append(f"epochs by {r['engines']}")
    if r.get("lines"):
        parts.append(f"{r['lines']} lines")
    if r.get("points_per_call"):
        parts.append("per point")
    if r.get("check_note"):
        parts.append(r["check_note"])
    if r.get("cache_note") and r.get("peer") == "pytensor":
        parts.append(r["cache_note"].split(" in ")[0])
    return "; ".join(parts)


def bg_cores(r: dict) -> str:
    if r.get("bg_cores") is None:
        return "-"
    steal = r.get("steal_cores") or 0.0
    return f"{r['bg_cores']:.2f}" + (f" +{steal:.2f} steal" if steal >= 0.01 else "")


def table(rows: list[dict]) -> str:
    head = ["workload", "case", "peer", "variant", "cache", "first call", "steady/call",
            "ratio", "max_abs_diff", "check", "load 1m", "bg cores", "notes"]
    body = []
    for r in rows:
        warm = r.get("cache_warm")
        diff = r.get("max_abs_diff")
        check = {True: "pass", False: "FAIL"}.get(r.get("check"), r.get("status", "-"))
        body.append([
            r["workload"], r.get("case") or "-", r["peer"], r.get("variant") or "-",
            {True: "warm", False: "cold"}.get(warm, "-"),
            fmt_time(r.get("first_call_s")),
            fmt_time(r.get("steady_s")),
            "-" if r.get("ratio") is None else f"{r['ratio']:.3g}x",
            "-" if diff is None else f"{diff:.1e}", check,
            f"{r['load_before'][0]:.2f}->{r['load_after'][0]:.2f}",
            bg_cores(r), notes(r),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    widths[-1] = 0  # notes: no padding
    line = lambda cells: "  ".join(f"{c!s:<{w}}" for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths[:-1]] + ["-----"])]
                     + [line(b) for b in body])


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "symgrad"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + (" (symgrad/ has uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="e.g. W1,W5")
    ap.add_argument("--peers", default=",".join(ALL_PEERS), help="e.g. symgrad,torch,jax")
    ap.add_argument("--json", type=Path, help="write meta and rows to this JSON file")
    ap.add_argument("--repeats", type=int, help="timed batches per row (median); default 11, "
                    "5 with --quick")
    ap.add_argument("--quick", action="store_true",
                    help="short batches, fewer repeats, skip the slow cases (W5 depth 1000)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per subprocess")
    args = ap.parse_args(argv)

    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    peers = [p.strip().lower() for p in args.peers.split(",") if p.strip()]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    for p in peers:
        if not any(p in importlib.import_module(WORKLOADS[w]).PEERS for w in workloads):
            print(f"warning: no workload has a peer named {p!r}", file=sys.stderr)
    repeats = args.repeats or (5 if args.quick else 11)
    env = worker_env()
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "host": platform.node(),
        "cpus": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(), "git": git_state(), "repeats": repeats,
        "quick": args.quick, "threads": THREADS, "xla_flags": env["XLA_FLAGS"],
        "load_start": os.getloadavg(),
    }
    rows: list[dict] = kernel_library(env, args.timeout) if "symgrad" in peers else []
    caches: dict[str, str] = {}
    try:
        for w in workloads:
            module = importlib.import_module(WORKLOADS[w])
            for spec in module.runs([p for p in peers if p in module.PEERS], args.quick):
                spec = {"workload": w, "repeats": repeats, "quick": args.quick, **spec}
                # "cache": a fresh directory per key (symgrad's compile cache); "shared": a
                # directory per key for files runs of one workload pass on (W4's reference)
                for kind in ("cache", "shared"):
                    if spec.get(kind):
                        key = f"{kind}-{spec[kind]}"
                        if key not in caches:
                            caches[key] = tempfile.mkdtemp(prefix=f"symgrad-bench-{key}-")
                        spec[f"{kind}_dir"] = caches[key]
                new = launch(spec, env, spec.get("timeout", args.timeout))
                rows += new
                for r in new:
                    print(f"[{w} {r['peer']} {r.get('case') or ''} {r.get('phase') or ''}] "
                          f"{r.get('variant') or r.get('error')}: {fmt_time(r.get('steady_s'))}"
                          f" ({r['wall_s']:.1f} s)", file=sys.stderr, flush=True)
    finally:
        for d in caches.values():
            shutil.rmtree(d, ignore_errors=True)
    meta["load_end"] = os.getloadavg()
    add_ratios(rows)
    print(f"\n{meta['command']}\n{meta['started']}  {meta['cpus']} cpus  git {meta['git']}  "
          f"threads {THREADS}  repeats {repeats}  load avg (1/5/15 min) start "
          f"{'/'.join(f'{x:.2f}' for x in meta['load_start'])} end "
          f"{'/'.join(f'{x:.2f}' for x in meta['load_end'])}\n")
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        print(f"\nwrote {args.json}")
    bad = [r for r in rows if r.get("check") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
