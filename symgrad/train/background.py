"""Compiling a matrix model's training loop in another process while NumPy trains.

``fit`` on a model whose compiled loop is not in the cache yet starts ``python -m
symgrad.train.background SPEC``: the child imports the generated module (after checking
that the file's SHA-256 is its name, so it runs only what symgrad wrote, and with the cache
checks of :func:`symgrad.compile.cache.load_module`) and calls its
``train`` for zero epochs with arguments of the same types as the parent's, which makes
Numba compile the loop and store it in the cache beside the module. The parent keeps
training with NumPy and, between chunks of epochs, loads the compiled loop once the child
has exited cleanly. A child that fails only means the NumPy tier trains to the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["BackgroundCompile", "compiled_in_cache", "wait_all"]


def compiled_in_cache(path: Path, function: str = "train") -> bool:
    """Whether Numba's cache beside the module ``path`` holds an entry for ``function``."""
    return any((path.parent / "__pycache__").glob(f"{path.stem}.{function}-*.nbi"))


class BackgroundCompile:
    """A child process compiling ``train`` of the module at ``path``; ``spec`` describes the
    arguments (see :func:`symgrad.train.arrays.loop_arguments`). At most
    :data:`MAX_CHILDREN` run at once: a request beyond that starts when one has finished
    (checked at every :attr:`ready`). One request per module: asking again returns it."""

    def __init__(self, path: Path, spec: dict) -> None:
        self.path, self.spec = path, spec
        self.proc: subprocess.Popen | None = None

    @classmethod
    def request(cls, path: Path, spec: dict) -> BackgroundCompile:
        job = _JOBS.get(path)
        if job is None or job.done and not job.ready:
            job = _JOBS[path] = cls(path, spec)
        job._start()
        return job

    def _start(self) -> None:
        if self.proc is not None or sum(j.running for j in _JOBS.values()) >= MAX_CHILDREN:
            return
        env = dict(os.environ, NUMBA_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "symgrad.train.background",
             json.dumps({"path": str(self.path), **self.spec})],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env, start_new_session=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def done(self) -> bool:
        """True once the child has finished, well or not."""
        return self.proc is not None and self.proc.poll() is not None

    @property
    def ready(self) -> bool:
        """True once the compiled loop is in the cache (starts the child if it waits)."""
        self._start()
        return self.proc is not None and self.proc.poll() == 0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the child (started now if it was waiting); True if it succeeded."""
        self._start()
        if self.proc is None:
            return False
        self.proc.wait(timeout)
        return self.ready


#: Compiling children run at once, per process: one core compiles, the other trains.
MAX_CHILDREN = 1
_JOBS: dict[Path, BackgroundCompile] = {}


def wait_all(timeout: float | None = None) -> int:
    """Wait until every requested background compile has finished (waiting ones are
    started in turn); return how many succeeded. Without it, a child still compiling when
    the program ends finishes on its own and leaves the compiled loop in the cache."""
    ok = 0
    for job in list(_JOBS.values()):
        ok += job.wait(timeout)
    return ok


def _main(argv: list[str]) -> int:
    import numpy as np

    from ..compile.pipeline import import_module
    from .arrays import loop_arguments

    if hasattr(os, "nice"):
        os.nice(19)  # training comes first: compile on what the parent leaves idle
    spec = json.loads(argv[0])
    path = Path(spec["path"])
    module = import_module(path)  # refuses a file whose SHA-256 is not its name: runs nothing
    if Path(module.__file__) != path:
        return 3  # the cache was not usable here: what this child compiles, the parent never sees
    dtype = np.dtype(spec["dtype"])
    values = np.zeros(spec["n_params"], dtype=dtype)
    X = tuple(np.zeros(s, dtype=dtype) for s in spec["X"])
    V = tuple(np.zeros(s, dtype=dtype) for s in spec["V"])
    grad, buffers = loop_arguments(module, X, spec["size"], spec["n_val"], spec["batched"],
                                   spec["flipped"], dtype, values.size)
    state = np.zeros((spec["n_state"], values.size), dtype=dtype)
    module.train(values, grad, state, np.zeros(1, dtype=np.int64), np.zeros(6), 0, X, V, buffers,
                 module.DIMS, 0, 0, spec["size"], False, False, 0, 0, np.zeros(1), np.zeros(1),
                 np.array([np.inf, -1.0, 0.0]), values.copy())
    if hasattr(module, "chunk"):  # the two-core loop's part of the model, and the loop
        from ..kernels.split import compiled_worker
        from .arrays import split_chunk

        split_chunk(module)
        compiled_worker()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
