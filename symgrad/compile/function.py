"""``symgrad.compile``: a SymPy expression in, a compiled value-and-gradient function out.

This is where the layers meet: validate the expression and the symbols, run it through
the :class:`~symgrad.compile.pipeline.Pipeline` (graph, reverse pass, printed module written
to the content-addressed cache, imported on first use: Numba compiles, or loads its own
on-disk cache) and wrap the kernels in a small checked Python API. Numba's errors never
reach the user: argument problems are caught and explained before or after the call, and a
module Numba rejects is reported with its path.
"""

from __future__ import annotations

import gc
import math
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from itertools import zip_longest
from pathlib import Path
from types import ModuleType

import numpy as np
import sympy as sp

from ..emit import GeneratedModule
from ..errors import ExpressionError, InputError
from ..expression import as_expression, free_symbols
from ..expression import stabilize as _stabilize
from ..graph import Graph
from ..rules import Program
from .inputs import nan_input, real_array, real_number
from .nonfinite import NonFiniteWarning, explain
from .pipeline import Pipeline, numba_failed
from .second import SecondOrder

__all__ = ["CompiledFunction", "NonFiniteWarning", "compile"]


def compile(
    expr: sp.Basic,
    wrt: Iterable[sp.Symbol] | None = None,
    *,
    inputs: Iterable[sp.Symbol] | None = None,
    name: str = "L",
    cache_dir: str | os.PathLike | None = None,
    fast_math: bool = False,
    backend: str = "auto",
    stabilize: bool = False,
) -> CompiledFunction:
    """Compile ``expr`` and its gradient with respect to ``wrt`` into Numba code.

    ``wrt`` defaults to every symbol of the expression (sorted by name). Arguments of the
    compiled function are ``inputs`` if given (every symbol exactly once), else ``wrt``
    followed by the remaining symbols sorted by name. ``name`` names the output in the
    listing (``L`` as in the lecture). ``cache_dir`` overrides where generated modules and
    Numba's machine code are cached (default ``$SYMGRAD_CACHE_DIR`` or ``~/.cache/symgrad``).
    ``fast_math=True`` swaps libm's exp/log/sin/cos/tanh/log1p/expm1 for symgrad's
    vectorizable versions (within 1 ulp, full domain) so that the batched kernels vectorize
    (~2x faster per point), at ~0.3 s more Numba compile time per function used.

    ``backend``: ``"flat"`` compiles the flat code (Numba, milliseconds per line, then the
    fastest calls); ``"tape"`` runs the same program as a tape of opcodes in symgrad's
    interpreter, compiled once per machine (no per-model compile, ~6 ns per operation);
    ``"auto"`` (default) takes the tape above :data:`TAPE_FROM` lines of flat code, where
    a flat compile would take seconds. The listing is the same either way.

    ``stabilize=True`` first rewrites plain forms that overflow (``1/(1 + exp(-x))``,
    ``log(sigmoid(x))``, ``log(1 + exp(x))``, ``log(exp(a) + exp(b))``, ...) into
    ``sigmoid``, ``log_sigmoid``, ``softplus``, ``logsumexp`` (see
    ``symgrad.expression.stabilize``); the listing shows the rewritten code. By default the
    expression is compiled gate by gate as written, and a call that returns inf or NaN at
    finite inputs gives a :class:`NonFiniteWarning` naming the line and the stable form.
    """
    if backend not in ("auto", "flat", "tape"):
        raise ValueError(f"backend must be 'auto', 'flat' or 'tape', got {backend!r}")
    start = time.perf_counter()
    expr = as_expression(expr)
    if stabilize:
        expr = _stabilize(expr)
    if not isinstance(name, str):
        raise ExpressionError(f"name must be a string, got {type(name).__name__}.")
    symbols = free_symbols(expr)
    if not symbols:
        raise ExpressionError(
            f"the expression {expr} has no symbols, so there is nothing to differentiate."
        )
    wrt_syms = _check_wrt(wrt, symbols)
    params = _check_inputs(inputs, symbols, wrt_syms)

    collecting = gc.isenabled()
    gc.disable()  # the graph and program are many small objects: no collections meanwhile
    try:
        pipeline = Pipeline(expr, params, wrt_syms, name=name, fast_math=fast_math,
                            cache_dir=cache_dir)
        program = pipeline.program
        if backend == "tape" or backend == "auto" and (
                len(program.forward) + len(program.backward) > TAPE_FROM):
            from .tape import lower

            tape = lower(program, pipeline.param_nodes)  # printed only when asked for
            pipeline.timings.update(codegen_s=time.perf_counter() - start, backend="tape")
            return CompiledFunction(pipeline, expr, params, wrt_syms, tape)
        pipeline.generated  # noqa: B018  (printed now, with the collector off)
    finally:
        if collecting:
            gc.enable()
    pipeline.timings["codegen_s"] = time.perf_counter() - start
    pipeline.path  # noqa: B018  (written now: the listing and the file are ready)
    pipeline.timings["backend"] = "flat"
    return CompiledFunction(pipeline, expr, params, wrt_syms)


#: Lines of flat code (forward + backward) above which ``backend="auto"`` runs a tape: there
#: a flat Numba compile takes over ~2 s, and the tape's first call is faster at every size.
TAPE_FROM = 1000


def _check_wrt(wrt, symbols: list[sp.Symbol]) -> list[sp.Symbol]:
    if wrt is None:
        return sorted(symbols, key=lambda s: s.name)
    if isinstance(wrt, sp.Symbol):
        wrt = [wrt]
    if isinstance(wrt, (set, frozenset)) or not isinstance(wrt, Iterable):
        what = "an unordered set" if isinstance(wrt, (set, frozenset)) else type(wrt).__name__
        raise ExpressionError(f"wrt must be a symbol or a list of symbols (in the order the "
                              f"gradient should have), got {what}: {wrt!r:.60}.")
    wrt = list(wrt)
    present = set(symbols)
    for s in wrt:
        if not isinstance(s, sp.Symbol):
            raise ExpressionError(f"wrt must list SymPy symbols, got {s!r} ({type(s).__name__}).")
        if s not in present:
            same = [t for t in symbols if t.name == s.name]
            hint = (
                f" The expression has a different symbol named {s.name!r} (other assumptions);"
                " pass that one." if same else " Remove it from wrt."
            )
            raise ExpressionError(f"wrt symbol {s.name!r} does not occur in the expression.{hint}")
    if len(set(wrt)) != len(wrt):
        raise ExpressionError("wrt lists a symbol twice; list each symbol once.")
    if not wrt:
        raise ExpressionError("wrt is empty: name the symbols to differentiate with respect to.")
    return wrt


def _check_inputs(inputs, symbols: list[sp.Symbol], wrt: list[sp.Symbol]) -> list[sp.Symbol]:
    if inputs is None:
        chosen = set(wrt)
        rest = sorted((s for s in symbols if s not in chosen), key=lambda s: s.name)
        return [*wrt, *rest]
    if isinstance(inputs, (set, frozenset)) or not isinstance(inputs, Iterable):
        raise ExpressionError(f"inputs must be a list of symbols (in the order of the "
                              f"arguments), got {type(inputs).__name__}: {inputs!r:.60}.")
    inputs = list(inputs)
    if not all(isinstance(s, sp.Symbol) for s in inputs):
        bad = next(s for s in inputs if not isinstance(s, sp.Symbol))
        raise ExpressionError(f"inputs must list SymPy symbols, got {bad!r:.60} "
                              f"({type(bad).__name__}).")
    given, present = set(inputs), set(symbols)
    if len(given) != len(inputs) or given != present:
        missing = [s.name for s in symbols if s not in given]
        extra = [getattr(s, "name", repr(s)) for s in inputs if s not in present]
        raise ExpressionError(
            "inputs must list every symbol of the expression exactly once"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; not in the expression: {', '.join(extra)}" if extra else "")
            + "."
        )
    return inputs


def _compiled(function, *args, path: Path):
    """``function(*args)``, a Numba dispatcher that may compile now: a module that Numba
    rejects is reported as a symgrad bug with its path, never as Numba's traceback. (Numba's
    error class is imported only on failure: importing it costs ~0.7 us, more than a call.)"""
    try:
        return function(*args)
    except Exception as exc:
        from numba.core.errors import NumbaError

        if isinstance(exc, NumbaError):
            raise numba_failed(exc, path) from None
        raise


class CompiledFunction:
    """A compiled expression: its value and gradient, its listing and its source.

    Call it like a Python function, positionally (in the order of :attr:`inputs`), by
    keyword (the symbols' names), or with one mapping from symbols or names to values.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        expr: sp.Basic,
        inputs: Sequence[sp.Symbol],
        wrt: Sequence[sp.Symbol],
        tape=None,
    ) -> None:
        #: The graph, program and generated module this function runs (see
        #: ``symgrad.compile.pipeline``).
        self.pipeline = pipeline
        self.expr = expr
        self.inputs: tuple[sp.Symbol, ...] = tuple(inputs)
        self.wrt: tuple[sp.Symbol, ...] = tuple(wrt)
        self.timings = pipeline.timings
        self._module = tape  # a Tape stands in for the module: same kernels
        self._kernel = tape.value_and_grad if tape is not None else None
        # value_and_grad's checked kernel and the fast path's callable (see value_and_grad)
        self._checked = _checked_in_python(self._kernel) if tape is not None else None
        self._fast = self._checked
        self._n = len(self.inputs)
        self._safe = [n.name for n in pipeline.param_nodes]  # the inputs' names in the code
        self._index = _keyword_index(self.inputs, self._safe)
        self._warned = False  # a NonFiniteWarning was given
        self._second: SecondOrder | None = None  # built when first needed

    @property
    def ir(self) -> Graph:
        """The graph the code was generated from (nodes named as in the listing)."""
        return self.pipeline.graph

    @property
    def generated(self) -> GeneratedModule:
        """The printed module: listing lines and source (printed when first asked for on the
        tape path, where a very large program may take seconds to print)."""
        return self.pipeline.generated

    @property
    def path(self) -> Path | None:
        """The generated module's file in the cache (None on the tape backend, which writes
        nothing); after the import, the file it was imported from."""
        return None if self.backend == "tape" else self.pipeline.path

    @property
    def backend(self) -> str:
        """``"flat"`` (compiled flat code) or ``"tape"`` (symgrad's tape interpreter)."""
        return self.timings["backend"]

    @property
    def program(self) -> Program:
        """The forward and backward assignments (SymPy data) that the listing prints, one per
        line."""
        return self.pipeline.program

    @property
    def module(self) -> ModuleType:
        """The imported generated module. Imported on first use: nothing compiles until a
        kernel is first called, and then only that kernel (Numba's disk cache keeps it)."""
        if self._module is None:
            self._module = self.pipeline.module
        return self._module

    @property
    def kernel(self):
        """The raw Numba ``value_and_grad`` (float64 arguments), compiled on first use."""
        if self._kernel is None:
            self._kernel = self._float64_kernel("value_and_grad")[0]
        return self._kernel

    def _float64_kernel(self, name: str) -> tuple:
        """The module's dispatcher ``name`` (a ``value_and_grad`` signature) and its compiled
        result, compiled or loaded for float64 arguments only: other numbers convert to
        float64, the rest is refused (a TypeError, which the callers turn into an
        InputError)."""
        from numba import float64, types

        start = time.perf_counter()
        kernel = getattr(self.module, name)
        signature = types.Tuple((float64, types.UniTuple(float64, len(self.wrt))))(
            *[float64] * self._n)
        if tuple(signature.args) not in kernel.overloads:  # else another object did it
            _compiled(kernel.compile, signature, path=self.path)
        kernel.disable_compile()
        self.timings["compile_s"] = (self.timings.get("compile_s", 0.0)
                                     + time.perf_counter() - start)
        return kernel, kernel.overloads[tuple(signature.args)]

    @property
    def value_kernel(self):
        """The raw Numba ``value`` function."""
        return self.module.value

    @property
    def source(self) -> str:
        """The whole generated module (standalone: it needs only NumPy and Numba)."""
        if self.pipeline.fast_math:  # the cached module imports symgrad's kernels
            return self.pipeline.render(standalone=True).source
        return self.generated.source

    def listing(self, columns: bool = False, order: int = 1) -> str:
        """The flat forward and backward code, one primitive per line.

        With ``columns=True`` forward and backward stand side by side, as on the slides.
        ``order=2`` adds the second-order lines below them: the tangent ``dot_x`` of every
        line along the direction ``dot_<wrt>`` (= ``v``), ending in ``dot_grad_<wrt>``, the
        entries of Hessian @ v (forward over reverse; see :meth:`hvp`).
        """
        text = self.format_listing(self.generated.forward, self.generated.backward, columns)
        if order == 1:
            return text
        if order != 2:
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        return text + self.format_tangent(self.second_order.generated.tangent)

    @staticmethod
    def format_tangent(lines: Sequence[str]) -> str:
        """The second-order block of a listing (see ``listing(order=2)``)."""
        return "\n".join(["", "# tangent (Hessian @ v; dot_<wrt> = v)", *lines]) + "\n"

    @property
    def second_order(self) -> SecondOrder:
        """The second-order code (tangent lines, their module or tape), built when first
        needed: ``sg.compile`` itself pays nothing for it."""
        if self._second is None:
            self._second = SecondOrder(self.pipeline, self.backend)
        return self._second

    def hvp(self, v, *args, **kwargs) -> np.ndarray:
        """Hessian (with respect to :attr:`wrt`) times ``v`` at a point, without forming
        the Hessian: shape ``(len(wrt),)``.

        ``v`` is a sequence of ``len(wrt)`` numbers in ``wrt`` order, or a dict keyed by the
        ``wrt`` symbols (or names); the point is given as for a call. Costs one pass of the
        forward, backward and tangent lines (forward over reverse: a few gradients' worth).
        """
        x = np.array(self._bind(args, kwargs))
        vec = self._direction(v)
        grad, hv = np.empty(len(self.wrt)), np.empty(len(self.wrt))
        value = self._second_call("hvp_array", x, vec, grad, hv)
        if value - value != 0.0 or not np.isfinite(grad).all():  # inf or NaN
            self._nonfinite(x.tolist(), value, grad.tolist())
        return hv

    def hessian(self, *args, **kwargs) -> np.ndarray:
        """The Hessian with respect to :attr:`wrt` at a point: a symmetric ``(n, n)`` array
        (``n = len(wrt)``), rows and columns in ``wrt`` order; one tangent pass per column."""
        x = np.array(self._bind(args, kwargs))
        n = len(self.wrt)
        grad, hess = np.empty(n), np.empty((n, n))
        value = self._second_call("hessian_array", x, grad, hess)
        if value - value != 0.0 or not np.isfinite(grad).all():  # inf or NaN
            self._nonfinite(x.tolist(), value, grad.tolist())
        return hess

    def value_grad_hvp(self, x: np.ndarray, v: np.ndarray) -> tuple[float, np.ndarray,
                                                                    np.ndarray]:
        """``(value, gradient, Hessian @ v)`` with the inputs in one array (order of
        :attr:`inputs`) and ``v`` an array in ``wrt`` order: the fast form for optimizers."""
        x = self._array(x, self._n, "x", f"one value per input of {self._signature()}")
        vec = self._array(v, len(self.wrt), "v", "one value per wrt symbol")
        grad, hv = np.empty(len(self.wrt)), np.empty(len(self.wrt))
        value = self._second_call("hvp_array", x, vec, grad, hv)
        return value, grad, hv

    def _second_call(self, kernel: str, *arrays):
        second = self.second_order
        if second.backend == "tape":
            return getattr(second, kernel)(*arrays)
        module = second.module
        return _compiled(getattr(module, kernel), *arrays, path=second.path)

    def _direction(self, v) -> np.ndarray:
        if isinstance(v, Mapping):
            index = {**{s: k for k, s in enumerate(self.wrt)},
                     **{s.name: k for k, s in enumerate(self.wrt)}}
            vec = np.full(len(self.wrt), np.nan)
            for key, value in v.items():
                if key not in index:
                    raise InputError(f"v has the key {_label(key)}, which is not one of wrt "
                                     f"({', '.join(s.name for s in self.wrt)}).")
                vec[index[key]] = _number(self.wrt[index[key]], value)
            missing = [s.name for s, x in zip(self.wrt, vec) if x != x]
            if missing:
                raise InputError(f"v has no value for {', '.join(missing)}; give one number "
                                 "per wrt symbol.")
            return vec
        return self._array(v, len(self.wrt), "v", "one value per wrt symbol, in wrt order")

    @staticmethod
    def _array(values, n: int, name: str, what: str) -> np.ndarray:
        a = np.ascontiguousarray(real_array(name, values))  # the one rule: no text, no complex
        if a.shape != (n,):
            raise InputError(f"{name} must have shape ({n},) ({what}), got {a.shape}.")
        if np.isnan(a).any():
            raise InputError(f"{name} has NaN at index {int(np.flatnonzero(np.isnan(a))[0])}; "
                             "give real numbers.")
        return a

    @staticmethod
    def format_listing(fwd: list[str], bwd: list[str], columns: bool = False) -> str:
        """Forward lines, then backward lines (or side by side with ``columns=True``)."""
        if not columns:
            return "\n".join(["# forward", *fwd, "", "# backward", *bwd]) + "\n"
        width = max(len(line) for line in [*fwd, "forward"]) + 4
        rows = zip_longest(["# forward", *fwd], ["# backward", *bwd], fillvalue="")
        return "\n".join(f"{a:<{width}}{b}".rstrip() for a, b in rows) + "\n"

    def __call__(self, *args, **kwargs) -> float:
        """The value of the expression."""
        values = self._bind(args, kwargs)
        result = _compiled(self.value_kernel, *values, path=self.path)
        if result - result != 0.0:  # inf or NaN
            self._nonfinite(values, result, None)
        return result

    def value_and_grad(self, *args, **kwargs) -> tuple[float, tuple[float, ...]]:
        """``(value, gradient)``, the gradient a tuple in the order of :attr:`wrt`."""
        if not kwargs:
            # The fast path, for Python floats: a float first, and the rest adds up to a
            # float, which only floats, ints, bools (and Fractions) do. For them the compiled
            # entry point's own conversion, float(), is the one rule's; everything else
            # (NumPy and SymPy numbers, text) takes the checked path below, whose dispatcher
            # converts or refuses. ``_fast`` raises where an input or a result is not finite
            # (FloatingPointError) or the count is wrong (TypeError), and is None until the
            # first call compiled it.
            try:
                if type(args[0]) is float and type(sum(args, 0.0)) is float:
                    return self._fast(*args)
            except Exception:  # the path below does it again and says what
                pass
        return self._value_and_grad(args, kwargs)

    def _value_and_grad(self, args: tuple, kwargs: dict) -> tuple[float, tuple[float, ...]]:
        """``value_and_grad`` through the checked kernel's dispatcher, which converts NumPy
        scalars and refuses what is not a number; compiles on the first call, and where the
        check fails, a NaN input is refused and a non-finite result gets the warning."""
        if kwargs or len(args) != self._n:
            args = self._bind(args, kwargs)
        checked = self._checked or self._compile_checked()
        try:
            try:
                return checked(*args)
            except (TypeError, ValueError, OverflowError):  # not all floats: convert or refuse
                args = self._bind(args, {})
                return checked(*args)
        except FloatingPointError:  # inf or NaN somewhere (or a finite sum that overflowed)
            result = (self._kernel or self.kernel)(*args)
            self._nonfinite(args, *result, stacklevel=4)  # the warning names the caller's line
            return result

    def _compile_checked(self):
        """Compile (or load) the module's ``value_and_grad_checked`` and take its compiled
        entry point as the fast path: called directly, it skips the dispatcher's type
        dispatch (~80 ns of a ~250 ns call), which ``value_and_grad``'s guard replaces."""
        checked, compiled = self._float64_kernel("value_and_grad_checked")
        self._checked = checked
        self._fast = getattr(compiled, "entry_point", None) or checked
        return checked

    def value_and_grad_array(
        self, x: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """``(value, gradient)`` with all inputs in one array (order of :attr:`inputs`).

        The fast form for many inputs: no tuple of floats is built, and the gradient is
        written into ``out`` (a float64 array of length ``len(wrt)``) when one is given.
        """
        if not (type(x) is np.ndarray and x.dtype == np.float64 and x.shape == (self._n,)
                and x.flags.carray):  # C-contiguous and writable, else Numba compiles anew
            x = real_array("x", x)
            if x.shape != (self._n,):
                raise InputError(f"x must have shape ({self._n},) (one value per input of "
                                 f"{self._signature()}), got {x.shape}.")
            x = np.array(x, dtype=np.float64, order="C")  # a private, writable copy
        if out is None:
            out = np.empty(len(self.wrt))
        elif not (type(out) is np.ndarray and out.dtype == np.float64
                  and out.shape == (len(self.wrt),) and out.flags.writeable):
            _check_out("out", out, (len(self.wrt),))  # says what is wrong
        value = _compiled(self.module.value_and_grad_array, x, out, path=self.path)
        total = value + out.sum() + x.sum()  # NaN inputs too: a finite result may hide them
        if total - total != 0.0:
            self._nonfinite(x.tolist(), value, out.tolist())
        return value, out

    def gradient(self, *args, **kwargs) -> dict[sp.Symbol, float]:
        """The gradient as a dict keyed by the ``wrt`` symbols."""
        return dict(zip(self.wrt, self.value_and_grad(*args, **kwargs)[1], strict=True))

    def save(self, path: str | os.PathLike, order: int = 1) -> Path:
        """Write the standalone module (needs only NumPy and Numba) to ``path``; ``order=2``
        writes the one with the second-order kernels ``hvp_array`` and ``hessian_array``."""
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        path = Path(path)
        source = self.source if order == 1 else self.second_order.render(standalone=True).source
        path.write_text(source, encoding="utf-8")
        return path

    def __repr__(self) -> str:
        p = self.pipeline.program
        wrt = [g.name[len("grad_"):] for g in p.grads]
        tape = ", run as a tape" if self.backend == "tape" else ""
        return (
            f"<CompiledFunction {p.output.name}({', '.join(self._safe)}) wrt ({', '.join(wrt)}): "
            f"{len(p.forward)} forward, {len(p.backward)} backward lines{tape}>"
        )

    def _signature(self) -> str:
        return f"{self.generated.output}({', '.join(s.name for s in self.inputs)})"

    def value_batch(self, *args, **kwargs) -> np.ndarray:
        """The value at many points: each input a 1-D array (scalars broadcast); shape (N,)."""
        columns = self._bind_columns(args, kwargs)
        out = np.empty(columns[0].shape[0])
        _compiled(self.module.value_batch, columns, out, path=self.path)
        self._check_batch(columns, out)
        return out

    def value_and_grad_batch(
        self, *args, out: tuple[np.ndarray, np.ndarray] | None = None, **kwargs
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values (N,) and gradients (len(wrt), N) at many points, in one compiled loop.

        ``out=(values, grads)`` reuses preallocated float64 arrays (allocating 8*(1+len(wrt))
        bytes per point costs about as much as computing them).
        """
        columns = self._bind_columns(args, kwargs)
        n = columns[0].shape[0]
        if out is None:
            value, grad = np.empty(n), np.empty((len(self.wrt), n))
        else:
            if not (isinstance(out, tuple | list) and len(out) == 2):
                raise InputError(f"out must be a pair (values, grads) of float64 arrays of "
                                 f"shapes ({n},) and ({len(self.wrt)}, {n}); got "
                                 f"{type(out).__name__}.")
            value, grad = out
            _check_out("out[0] (values)", value, (n,))
            _check_out("out[1] (grads)", grad, (len(self.wrt), n))
        _compiled(self.module.value_and_grad_batch, columns, value, grad, path=self.path)
        self._check_batch(columns, value, grad)
        return value, grad

    def _bind_columns(self, args: tuple, kwargs: dict) -> tuple[np.ndarray, ...]:
        arrays = []
        for s, v in zip(self.inputs, self._collect(args, kwargs)):
            a = real_array(s.name, v)
            if a.ndim == 1 and not a.flags.carray:  # C-contiguous and writable
                a = np.array(a, order="C")  # the layout the compiled loop was made for
            if a.ndim > 1:
                raise InputError(f"{s.name} must be a number or a 1-D array, got shape {a.shape}.")
            arrays.append(a)
        lengths = {a.shape[0] for a in arrays if a.ndim == 1}
        if len(lengths) > 1:
            shapes = ", ".join(f"{s.name}: {a.shape[0]}" for s, a in zip(self.inputs, arrays)
                               if a.ndim == 1)
            raise InputError(f"input arrays have different lengths ({shapes}); pass arrays of one "
                             "length (scalars are broadcast).")
        n = lengths.pop() if lengths else 1
        return tuple(a if a.ndim == 1 else np.full(n, a[()]) for a in arrays)

    def _check_batch(self, columns: tuple[np.ndarray, ...], value: np.ndarray,
                     grad: np.ndarray | None = None) -> None:
        """NaN inputs are refused (also where the results are finite: max(1, nan) is 1), and
        the first sample whose value or gradient is not finite at finite inputs gets a
        NonFiniteWarning; looked into only where a sum of the inputs and results is not
        finite (cheap otherwise)."""
        total = float(value.sum()) + (float(grad.sum()) if grad is not None else 0.0)
        total += sum(float(column.sum()) for column in columns)
        if total - total == 0.0:
            return
        for s, column in zip(self.inputs, columns):
            bad = np.flatnonzero(np.isnan(column))
            if bad.size:
                raise InputError(f"input {s.name} is NaN at index {bad[0]} ({bad.size} NaN in "
                                 "all); remove or fill those points first.")
        if self._warned:
            return
        bad = ~np.isfinite(value)
        if grad is not None:
            bad |= ~np.isfinite(grad).all(axis=0)
        for column in columns:
            bad &= np.isfinite(column)
        samples = np.flatnonzero(bad)
        if samples.size:
            i = int(samples[0])
            self._nonfinite([c[i] for c in columns], float(value[i]),
                            None if grad is None else grad[:, i].tolist(),
                            f"at sample {i} ({samples.size} such samples in all)", stacklevel=4)

    def _bind(self, args: tuple, kwargs: dict) -> list[float]:
        return [_number(s, v) for s, v in zip(self.inputs, self._collect(args, kwargs))]

    def _collect(self, args: tuple, kwargs: dict) -> list:
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            args, kwargs = (), dict(args[0])
        if len(args) > self._n:
            raise InputError(f"{self._signature()} takes {self._n} values, got {len(args)}.")
        values: list = list(args) + [_MISSING] * (self._n - len(args))
        for key, value in kwargs.items():
            k = self._index.get(key)
            if k is None:
                raise InputError(
                    f"unexpected argument {_label(key)}; {self._signature()} takes "
                    f"{', '.join(s.name for s in self.inputs)}."
                )
            if k == -1:
                raise InputError(
                    f"the name {key!r} belongs to more than one symbol; pass the Symbol object "
                    "as the key of a dict, or pass the values positionally."
                )
            if values[k] is not _MISSING:
                raise InputError(f"{_label(key)} was given twice.")
            values[k] = value
        missing = [s.name for s, v in zip(self.inputs, values) if v is _MISSING]
        if missing:
            raise InputError(
                f"missing value for {', '.join(missing)}; {self._signature()} needs a number "
                "for every input."
            )
        return values

    def _nonfinite(self, values: Sequence, value: float, grads: Sequence[float] | None,
                   where: str = "", stacklevel: int = 3) -> None:
        """Called where a result may be inf or NaN: a NaN input is refused; at finite inputs,
        the first time for this function, a NonFiniteWarning names the line that overflowed
        (found by running the program as data) and the stable form to write."""
        point = [float(v) for v in values]
        bad = [s.name for s, v in zip(self.inputs, point) if v != v]  # float32 NaN too
        if bad:
            raise nan_input(", ".join(bad))
        if self._warned or not all(map(math.isfinite, point)):
            return
        if math.isfinite(value) and (grads is None or all(map(math.isfinite, grads))):
            return  # a sum of finite results overflowed
        self._warned = True
        warnings.warn(explain(self, point, value, grads, where), NonFiniteWarning,
                      stacklevel=stacklevel)


_MISSING = object()


def _checked_in_python(kernel):
    """``kernel`` (the tape's ``value_and_grad``) with the check of a generated module's
    ``value_and_grad_checked``: FloatingPointError where an input or a result is not finite."""

    def checked(*args):
        result = kernel(*args)
        total = sum(result[1], result[0] + sum(args))
        if total - total != 0.0:
            raise FloatingPointError
        return result

    return checked


def _label(key) -> str:
    return repr(key.name) if isinstance(key, sp.Symbol) else repr(key)


def _keyword_index(inputs: Sequence[sp.Symbol], safe: Sequence[str]) -> dict:
    index: dict = {}
    for k, (s, safe_name) in enumerate(zip(inputs, safe)):
        index[s] = k
        for key in {s.name, safe_name}:
            index[key] = -1 if key in index and index[key] != k else k
    return index


def _number(symbol: sp.Symbol, value) -> float:
    return real_number(symbol.name, value)


def _check_out(name: str, out, shape: tuple) -> None:
    """``out`` must be a writable float64 NumPy array of ``shape`` (Numba writes into it)."""
    if not isinstance(out, np.ndarray):
        raise InputError(f"{name} must be a float64 NumPy array of shape {shape} "
                         f"(e.g. np.empty({shape})), got {type(out).__name__}.")
    if out.shape != shape or out.dtype != np.float64:
        raise InputError(f"{name} must be a float64 array of shape {shape}, got "
                         f"{out.dtype} of shape {out.shape}.")
    if not out.flags.writeable:
        raise InputError(f"{name} is read-only; pass a writable array (or out=None for a new "
                         "one).")
