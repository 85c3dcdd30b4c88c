"""Second order of a compiled function: Hessian-vector products and Hessians, as flat code.

Built on first use, so that first-order users pay nothing: the tangent lines of the program
(``symgrad.rules.linearize``: forward over reverse) are printed into a second generated
module, ``module.py.j2`` with its ``hvp_array``/``hessian_array`` kernels, written to the
cache under its own hash and imported; each kernel compiles at its first call. On the tape
backend the same lines are lowered to a second tape instead (no compile at all): ``H v``
is that tape's "gradient" with the direction ``v`` as extra inputs, and a Hessian is one
such run per column.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np

from ..emit import GeneratedModule, render
from ..graph import Graph, Node
from ..rules import Program, Tangent, linearize
from .cache import cache_dir as _cache_dir
from .cache import load_module, write_module

__all__ = ["SecondOrder"]


class SecondOrder:
    """The second-order code of one compiled function (see the module docstring).

    On the tape backend ``hvp_array(x, v, grad, hv)`` and ``hessian_array(x, grad, hess)``
    return the value and fill the arrays (float64, C-contiguous, checked by the caller); flat
    code has the same kernels in ``module`` (``CompiledFunction`` picks which).
    """

    def __init__(self, graph: Graph, program: Program, params: Sequence[Node],
                 wrt: Sequence[Node], fast_math: bool, cache_dir: str | os.PathLike | None,
                 backend: str) -> None:
        self._graph, self._program = graph, program
        self._params, self._wrt = list(params), list(wrt)
        self._fast_math, self._cache_dir, self.backend = fast_math, cache_dir, backend
        self.timings: dict = {}
        start = time.perf_counter()
        self.tangent: Tangent = linearize(program, [n.var for n in wrt])
        self.timings["linearize_s"] = time.perf_counter() - start
        self._generated: GeneratedModule | None = None
        self._module = None
        self._tape = None
        self.path = None

    @property
    def generated(self) -> GeneratedModule:
        """The module with the second-order kernels (printed when first asked for)."""
        if self._generated is None:
            self._generated = self.render()
        return self._generated

    def render(self, standalone: bool = False) -> GeneratedModule:
        return render(self._graph, self._program, self._params, self._wrt,
                      fast_math=self._fast_math, standalone=standalone, tangent=self.tangent)

    @property
    def module(self):
        """The imported second-order module (flat backend)."""
        if self._module is None:
            start = time.perf_counter()
            source = self.generated.source
            self.path, _ = write_module(source, _cache_dir(self._cache_dir))
            self._module = load_module(self.path, source)
            self.timings["load_s"] = time.perf_counter() - start
        return self._module

    @property
    def tape(self):
        """The tape of forward, backward and tangent lines (tape backend): inputs, then the
        direction; "gradient" slots: the gradient, then ``H v``."""
        if self._tape is None:
            from .tape import lower

            start = time.perf_counter()
            p, t = self._program, self.tangent
            joined = Program(p.forward, [*p.backward, *t.lines], p.output,
                             [*p.grads, *t.outputs])
            self._tape = lower(joined, [*(n.var for n in self._params), *t.inputs])
            self.timings["lower_s"] = time.perf_counter() - start
        return self._tape

    def hvp_array(self, x: np.ndarray, v: np.ndarray, grad: np.ndarray,
                  hv: np.ndarray) -> float:
        """The tape's value, gradient and H v (flat code: ``self.module.hvp_array``)."""
        n = len(self._wrt)
        both = np.empty(2 * n)
        value = self.tape.value_and_grad_array(np.concatenate([x, v]), both)
        grad[:] = both[:n]
        hv[:] = both[n:]
        return value

    def hessian_array(self, x: np.ndarray, grad: np.ndarray, hess: np.ndarray) -> float:
        """The tape's value, gradient and Hessian (flat code: ``self.module.hessian_array``)."""
        n = len(self._wrt)
        point = np.concatenate([x, np.zeros(n)])
        both = np.empty(2 * n)
        value = 0.0
        for k in range(n):
            point[len(x):] = 0.0
            point[len(x) + k] = 1.0
            value = self.tape.value_and_grad_array(point, both)
            hess[:, k] = both[n:]
        grad[:] = both[:n]
        return value
