"""Workload registry: one module per workload, each with one function per peer.

A workload module defines ``PEERS`` (peer name -> module that must be importable),
``runs(peers, quick)`` (the subprocess runs the driver launches, in order) and
``run(spec, opts)`` (executed inside the worker subprocess, returns result rows).
Add W2/W3 by writing ``w2.py`` etc. with the same three names and listing them here.
"""

WORKLOADS = {
    "W1": "benchmarks.workloads.w1",
    "W1B": "benchmarks.workloads.w1b",
    "W4": "benchmarks.workloads.w4",
    "W5": "benchmarks.workloads.w5",
}
