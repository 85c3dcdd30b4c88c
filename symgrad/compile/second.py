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

import time

import numpy as np

from ..emit import GeneratedModule
from ..rules import Program, Tangent
from .pipeline import Pipeline

__all__ = ["SecondOrder"]


class SecondOrder:
    """The second-order code of one compiled function (see the module docstring): the
    second-order parts of its :class:`~symgrad.compile.pipeline.Pipeline`, and on the tape
    backend their tape.

    On the tape backend ``hvp_array(x, v, grad, hv)`` and ``hessian_array(x, grad, hess)``
    return the value and fill the arrays (float64, C-contiguous, checked by the caller); flat
    code has the same kernels in ``module`` (``CompiledFunction`` picks which).
    """

    def __init__(self, pipeline: Pipeline, backend: str) -> None:
        self._pipeline, self.backend = pipeline, backend
        self.timings: dict = {}
        start = time.perf_counter()
        self.tangent: Tangent = pipeline.tangent
        self.timings["linearize_s"] = time.perf_counter() - start
        self._tape = None

    @property
    def generated(self) -> GeneratedModule:
        """The module with the second-order kernels (printed when first asked for)."""
        return self._pipeline.second_generated

    def render(self, standalone: bool = False) -> GeneratedModule:
        return self._pipeline.render_second(standalone)

    @property
    def path(self):
        """The second-order module's file (once :attr:`module` imported it)."""
        return self._pipeline.second_path

    @property
    def module(self):
        """The imported second-order module (flat backend)."""
        if "load_s" not in self.timings:
            start = time.perf_counter()
            self._pipeline.second_module  # noqa: B018
            self.timings["load_s"] = time.perf_counter() - start
        return self._pipeline.second_module

    @property
    def tape(self):
        """The tape of forward, backward and tangent lines (tape backend): inputs, then the
        direction; "gradient" slots: the gradient, then ``H v``."""
        if self._tape is None:
            from .tape import lower

            start = time.perf_counter()
            p, t = self._pipeline.program, self.tangent
            joined = Program(p.forward, [*p.backward, *t.lines], p.output,
                             [*p.grads, *t.outputs])
            self._tape = lower(joined, [*(n.var for n in self._pipeline.param_nodes),
                                        *t.inputs])
            self.timings["lower_s"] = time.perf_counter() - start
        return self._tape

    def hvp_array(self, x: np.ndarray, v: np.ndarray, grad: np.ndarray,
                  hv: np.ndarray) -> float:
        """The tape's value, gradient and H v (flat code: ``self.module.hvp_array``)."""
        n = len(self._pipeline.wrt_nodes)
        both = np.empty(2 * n)
        value = self.tape.value_and_grad_array(np.concatenate([x, v]), both)
        grad[:] = both[:n]
        hv[:] = both[n:]
        return value

    def hessian_array(self, x: np.ndarray, grad: np.ndarray, hess: np.ndarray) -> float:
        """The tape's value, gradient and Hessian (flat code: ``self.module.hessian_array``)."""
        n = len(self._pipeline.wrt_nodes)
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
