"""Workload registry: one module per workload, each with one function per peer.

A workload module defines ``PEERS`` (peer name -> module that must be importable),
``runs(peers, quick)`` (the subprocess runs the driver launches, in order) and
``run(spec, opts)`` (executed inside the worker subprocess, returns result rows).
Add a workload by writing ``wN.py`` with the same three names and listing it here.
"""

WORKLOADS = {
    "W1": "benchmarks.workloads.w1",
    "W1B": "benchmarks.workloads.w1b",
    "W2": "benchmarks.workloads.w2",
    "W3": "benchmarks.workloads.w3",
    "W4": "benchmarks.workloads.w4",
    "W4P": "benchmarks.workloads.w4p",
    "W4D": "benchmarks.workloads.w4d",
    "W5": "benchmarks.workloads.w5",
    "H1": "benchmarks.workloads.h1",
}
