"""The one artifact of symgrad's pipeline: an expression's graph, its program and its module.

``graph.build`` -> ``rules.differentiate`` -> emit -> ``cache.write_module`` ->
``cache.load_module``, orchestrated here and nowhere else. A :class:`Pipeline` builds the
graph and the program when it is made (their errors belong to the caller's constructor)
and runs each later step when first needed, once: nothing is printed, written or imported
before someone asks for it. The emit step is chosen once, by ``kind``: ``"function"``
(``emit.render``: ``sg.compile``'s module), ``"trainer"`` (``emit.render_trainer``: a
per-sample model's block kernels) or ``"arrays"`` (``emit.arrays.render_arrays``: a matrix
model's loops). Second order is the same chain on the program's tangent lines
(``rules.linearize``, then a second module of the same kind).

Timings go into the ``timings`` dict the owner passes (its own ``timings``): ``codegen_s``
(printing), ``cache_hit`` and ``path`` (writing), ``load_s`` (importing),
``second_order_codegen_s`` and ``second_order_load_s``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import sympy as sp

from ..emit import GeneratedModule, render, render_trainer
from ..errors import CompileError, ExpressionError, NotSupportedError
from ..graph import Node, build
from ..rules import Program, Tangent, differentiate, linearize
from .cache import cache_dir as _cache_dir
from .cache import load_module, write_module

__all__ = ["KINDS", "Pipeline", "import_module", "import_source", "numba_failed"]


class Pipeline:
    """One expression through symgrad's layers (see the module docstring).

    ``params`` are the symbols the generated code takes first (a function's arguments in
    order; a model's parameters), ``wrt`` those it differentiates with respect to (default:
    ``params``), ``data`` a model's data symbols. ``shapes`` (matrix models) gives each
    matrix symbol's shape, ``batch`` the batch-size symbol, ``dtype`` the loops' float type.
    ``check(pipeline)`` runs after the graph is built and before the reverse pass: a symbol
    without a node in the graph has the node ``None`` there, for ``check`` to name; any left
    is refused afterwards.
    """

    def __init__(
        self,
        expr: sp.Basic,
        params: Sequence[sp.Symbol],
        wrt: Sequence[sp.Symbol] | None = None,
        data: Sequence[sp.Symbol] = (),
        *,
        kind: str = "function",
        name: str = "L",
        shapes: dict | None = None,
        batch: sp.Symbol | None = None,
        dtype: str = "float64",
        fast_math: bool = False,
        cache_dir: str | os.PathLike | None = None,
        check: Callable[[Pipeline], None] | None = None,
        timings: dict | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind = kind
        self._emit = KINDS[kind]
        self.fast_math, self.cache_dir = fast_math, cache_dir
        self.batch, self.dtype, self.shapes = batch, dtype, shapes
        self.timings = {} if timings is None else timings
        #: The graph (nodes named as in the listing).
        self.graph = build(expr, output_name=name, shapes=shapes)
        node_of = self.graph.input_nodes()
        #: The graph's input nodes of ``params``, ``wrt`` and ``data`` (in their order).
        self.param_nodes: list[Node] = [node_of.get(s) for s in params]
        self.wrt_nodes: list[Node] = (self.param_nodes if wrt is None
                                      else [node_of.get(s) for s in wrt])
        self.data_nodes: list[Node] = [node_of.get(s) for s in data]
        if check is not None:
            check(self)
        absent = [s for s in [*params, *(wrt or ()), *data] if node_of.get(s) is None]
        if absent:
            raise ExpressionError(f"{getattr(absent[0], 'name', absent[0])} does not occur in "
                                  "the expression; remove it.")
        #: The forward and backward assignments (SymPy data), one per listing line.
        self.program: Program = differentiate(self.graph, self.wrt_nodes)
        self._generated: GeneratedModule | None = None
        self._path: Path | None = None
        self._module: ModuleType | None = None
        self._tangent: Tangent | None = None
        self._second: dict = {}  # the second-order module: "generated", "path", "module"

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps run so far, in order (``"build"``, ``"differentiate"``, ``"render"``,
        ``"write"``, ``"import"``): what has been paid for."""
        done = (True, True, self._generated is not None, self._path is not None,
                self._module is not None)
        names = ("build", "differentiate", "render", "write", "import")
        return tuple(name for name, did in zip(names, done) if did)

    # -- first order ------------------------------------------------------------------

    def render(self, standalone: bool = False) -> GeneratedModule:
        """The module printed now (``standalone``: carrying a copy of the kernels it uses,
        for ``save``); :attr:`generated` is the cached module's, printed once."""
        return self._emit(self, standalone, None)

    @property
    def generated(self) -> GeneratedModule:
        """The generated module (listing and source), printed when first asked for."""
        if self._generated is None:
            t0 = time.perf_counter()
            self._generated = self.render()
            self.timings.setdefault("codegen_s", time.perf_counter() - t0)
        return self._generated

    @property
    def path(self) -> Path:
        """The module's file in the cache, written when first asked for (after the import:
        the file it was imported from, which moved if the cache could not be used)."""
        if self._path is None:
            self._path, existed = write_module(self.generated.source, _cache_dir(self.cache_dir))
            self.timings.update(cache_hit=existed, path=self._path)
        return self._path

    @property
    def module(self) -> ModuleType:
        """The imported module (each Numba kernel in it compiles, or loads from Numba's
        cache, when first called; a ``cfunc`` at import)."""
        if self._module is None:
            path = self.path
            t0 = time.perf_counter()
            self._module = import_module(path, self.generated.source)
            self._path = Path(self._module.__file__)
            self.timings["load_s"] = time.perf_counter() - t0
        return self._module

    # -- second order -----------------------------------------------------------------

    @property
    def tangent(self) -> Tangent:
        """The program's tangent lines along the ``wrt`` inputs (forward over reverse),
        made when first asked for."""
        if self._tangent is None:
            shapes = ({n.var: n.shape for n in self.graph.nodes if n.shape}
                      if self.shapes is not None else None)
            self._tangent = linearize(self.program, [n.var for n in self.wrt_nodes], shapes)
        return self._tangent

    def render_second(self, standalone: bool = False) -> GeneratedModule:
        """The module with the second-order kernels, printed now."""
        return self._emit(self, standalone, self.tangent)

    @property
    def second_generated(self) -> GeneratedModule:
        """The second-order module, printed (and the tangent lines made) when first asked
        for."""
        if "generated" not in self._second:
            t0 = time.perf_counter()
            self._second["generated"] = self.render_second()
            self.timings["second_order_codegen_s"] = time.perf_counter() - t0
        return self._second["generated"]

    @property
    def second_path(self) -> Path | None:
        """The second-order module's file (None until it is written by :attr:`second_module`)."""
        return self._second.get("path")

    @property
    def second_module(self) -> ModuleType:
        """The second-order module, written to the cache and imported when first asked for."""
        if "module" not in self._second:
            source = self.second_generated.source
            path, _ = write_module(source, _cache_dir(self.cache_dir))
            t0 = time.perf_counter()
            self._second["module"] = module = import_module(path, source)
            self._second["path"] = Path(module.__file__)
            self.timings["second_order_load_s"] = time.perf_counter() - t0
        return self._second["module"]


def _function_module(p: Pipeline, standalone: bool, tangent: Tangent | None) -> GeneratedModule:
    return render(p.graph, p.program, p.param_nodes, p.wrt_nodes, fast_math=p.fast_math,
                  standalone=standalone, tangent=tangent)


def _trainer_module(p: Pipeline, standalone: bool, tangent: Tangent | None) -> GeneratedModule:
    return render_trainer(p.graph, p.program, p.param_nodes, p.data_nodes, p.fast_math,
                          standalone, tangent=tangent)


def _arrays_module(p: Pipeline, standalone: bool, tangent: Tangent | None) -> GeneratedModule:
    from ..emit.arrays import render_arrays  # only matrix models need it

    if tangent is not None:
        raise NotSupportedError("a matrix model's second order runs with NumPy; it has no "
                                "second-order module.")
    return render_arrays(p.graph, p.program, p.param_nodes, p.data_nodes, p.batch,
                         dtype=p.dtype, fast_math=p.fast_math, standalone=standalone)


#: The emit step of each kind of pipeline.
KINDS: dict[str, Callable[[Pipeline, bool, Tangent | None], GeneratedModule]] = {
    "function": _function_module, "trainer": _trainer_module, "arrays": _arrays_module}


def import_module(path: Path, source: str | None = None) -> ModuleType:
    """``cache.load_module``, with a module that Numba rejects at import (a ``cfunc``
    compiles then) reported as a symgrad bug with its path, never as Numba's traceback."""
    try:
        return load_module(path, source)
    except Exception as exc:
        from numba.core.errors import NumbaError  # only on failure: the import costs time

        if isinstance(exc, NumbaError):
            raise numba_failed(exc, path) from None
        raise


def import_source(source: str, directory: Path) -> ModuleType:
    """A generated module's ``source`` written to the cache ``directory`` and imported (a
    Dask worker's copy of a model's module)."""
    path, _ = write_module(source, directory)
    return import_module(path, source)


def numba_failed(exc: Exception, path: Path) -> CompileError:
    """The error for a generated module that Numba could not compile."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CompileError(
        f"Numba could not compile the generated module {path}: {first}. This is a symgrad "
        "bug; please report it together with that file."
    )
