"""Matrix programs -> a NumPy-style listing and a compiled module of loops.

The listing is the contract: one whole-array operation per line (``s4 = X @ W1``,
``grad_b1 = sum(grad_s5, axis=0)``), as the lecture's vectorized backprop writes it. The
compiled module implements each line as loops over preallocated buffers, every block under
its listing line as a comment:

* matrices whose rows are the batch are stored transposed (samples innermost), so
  element-wise loops and most matrix products run along contiguous memory and vectorize;
* consecutive element-wise lines over the same shape share one loop nest (fused);
* matrix products call BLAS (``symgrad.kernels.blas.gemm`` into a preallocated output, split
  over two threads by hand) unless they are tiny
  (``BLAS_FROM``) or fused (below); tiny ones are loops ordered so the innermost runs along
  contiguous memory, or fast-math dot products;
  products over a small static dimension (``UNROLL_UP_TO`` terms) are written out term by
  term as element-wise lines, which share the loop nest of the lines around them;
* a parameter matrix whose BLAS products pass fewer transposed operands when it is stored
  transposed is kept so, with its gradient and optimizer state, inside the compiled
  ``train`` (:func:`working_layout`), converted at the loop's boundaries;
* sums along the samples (``X.T @ delta`` with a small side, ``sum(delta, axis=0)``) are
  accumulators of the loop nest that computes ``delta`` (added with
  ``kernels.loops.accumulate``, the one reassociated addition, so the loop vectorizes);
  other sums go to small fast-math kernels; element-wise code stays without fast-math so
  the vectorizable exp/log/tanh keep their exact arithmetic;
* a buffer that one loop nest writes and only that loop nest reads, at the entry it wrote,
  is a local variable there (:meth:`_Kernel.scalarize`): a layer's backward pass is one
  pass over its activations, with no adjoint written to memory.

Each kind of line is one ``_emit_<op>`` method of ``_Kernel``. The kernels the code calls
(sums, row-wise softmax and cross-entropy, dot products, math maps) are written once in
``symgrad.kernels.arrays``; the module carries a copy of those it uses, so that Numba
compiles them with the model's loops (inlined and fused there, not called across a library).

Parameters are views into one flat vector (so the optimizers of the per-sample trainer
update them unchanged), and so are their gradients.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import sympy as sp
from sympy.codegen.ast import AddAugmentedAssignment
from sympy.core.numbers import Number

from ..expression.arrays import (
    ArrayOp,
    colsum,
    expr_shape,
    matmul,
    rowsum,
    softmax,
    total,
    transpose,
)
from ..graph import Graph, NameAllocator, Node
from ..kernels import copy_functions
from ..rules import Program
from .module import math_context, version
from .printer import FlatCodePrinter
from .split import split_reason
from .templates import environment

__all__ = ["ArrayModule", "ArrayPrinter", "render_arrays"]

#: Parameter vectors from this long are updated in two halves at once (the value of
#: symgrad.kernels.optim.HALVES_FROM, which is not imported here: that would import Numba).
HALVES_FROM = 1 << 15
#: Matrix products from this many multiply-adds (batch rows counted as BLAS_BATCH) use BLAS
#: unless fused into element-wise loops (UNROLL_UP_TO, SUMS_UP_TO; below FUSE_BELOW).
#: Measured from compiled code, one thread: OpenBLAS (``np.dot``) beats the loops below from
#: about 1,000 multiply-adds on, float32 and float64 alike (a 128x128x10 product: 3.3-7 us
#: against 16 us; the loops pay a setup per short inner loop); below, the loops' lead is tiny.
BLAS_FROM = 1 << 12
#: Products with fewer multiply-adds than this are fused into the element-wise loops when
#: their shape allows (UNROLL_UP_TO terms, SUMS_UP_TO rows); larger ones call BLAS.
FUSE_BELOW = 1 << 18
BLAS_BATCH = 128
#: Matrix products summing over at most this many terms (a small static dimension, such as
#: a 2-feature input or a 16-unit hidden layer) are element-wise lines, written out term by
#: term: they share the loop nest of the element-wise lines around them, and each entry is
#: summed in registers instead of a zeroing pass and a read-modify-write pass per term
#: (W2's 16-term ``a1 @ W2``: 0.74 us against 1.07 us).
UNROLL_UP_TO = 16
#: Sums over the batch (``X.T @ delta``) whose small side has at most this many rows are
#: fused into the loop nest that computes ``delta``, one accumulator per entry (float32 in a
#: float32 model). W3's 10-class output layer: grad_s2, grad_W2 = s2.T @ grad_s3 and
#: grad_s1 in one loop took 9 us against 13-17 us as a loop, BLAS and a loop (float64:
#: 15-18 us against 28 us).
SUMS_UP_TO = 16
#: Parameter matrices whose BLAS products pass fewer transposed operands when the matrix is
#: stored transposed are kept so inside the compiled ``train`` (the working layout,
#: :func:`working_layout`); everything outside it sees the model's layout. Measured on W3's
#: shapes (Numba's np.dot, SciPy's OpenBLAS sgemm, one thread, CPU time, medians of 9 rounds
#: of 100 calls): ``X @ W1`` (128 x 784 x 128) 331 -> 300 us with W1 stored transposed (one
#: transposed operand instead of two), its gradient ``X.T @ delta`` 382 -> 342 us (none
#: instead of two); the same bits on W3. False renders the canonical layout (tests).
WORKING_LAYOUT = True
#: Batched data with at most this many columns is stored transposed (samples innermost);
#: wider data keeps its rows (a batch is then a copy of whole rows, not a strided gather).
FLIP_DATA_UP_TO = 32
_MAPPED = {sp.exp: "exp", sp.log: "log", sp.tanh: "tanh", sp.sin: "sin", sp.cos: "cos"}
#: Math names the copied kernels may read; the module binds them (vectorizable or libm).
_MATH_NAMES = frozenset(_MAPPED.values())


class ArrayPrinter(FlatCodePrinter):
    """The listing's printer: whole-array operations in NumPy spelling."""

    def _arg(self, e):
        return self.parenthesize(e, 60)

    def _print_matmul(self, e):
        a, b = e.args
        return f"{self._arg(a)} @ {self._arg(b)}"

    def _print_transpose(self, e):
        return f"{self._arg(e.args[0])}.T"

    def _print_rowsum(self, e):
        return f"sum({self._print(e.args[0])}, axis=1)"

    def _print_colsum(self, e):
        return f"sum({self._print(e.args[0])}, axis=0)"

    def _print_total(self, e):
        return f"sum({self._print(e.args[0])})"

    def _print_sqnorm(self, e):
        return f"sum({self._arg(e.args[0])}**2)"

    def _print_softmax(self, e):
        return f"softmax({self._print(e.args[0])})"

    def _print_log_softmax(self, e):
        return f"log_softmax({self._print(e.args[0])})"

    def _print_dropout_mask(self, e):
        return f"dropout_mask({self._print(e.args[0])}.shape, {float(e.args[1])!r})"

    def _print_softmax_cross_entropy(self, e):
        return f"softmax_cross_entropy({', '.join(self._print(a) for a in e.args)})"


class _Raw(sp.Symbol):
    """A symbol printed verbatim: an indexed array access inside a loop body."""

    def _symgrad_code(self, printer):
        return self.name


@dataclass
class _Var:
    name: str
    shape: tuple
    flip: bool  # stored transposed: its rows (the batch) are the storage's inner axis
    kind: str  # "param", "grad", "data", "buffer", "scalar"


@dataclass
class _Loop:
    """One loop nest over a storage shape, with the fused element-wise statements in it,
    and the sums along its inner axis fused into it: each an accumulator ``_r<k>`` set to 0
    before the inner loop (``pre``), added to in it and stored after it (``post``)."""

    dims: tuple[str, str]
    bounds: tuple[str, str]
    comments: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    written: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)
    read_elsewhere: set[str] = field(default_factory=set)  # read at other entries
    reduced: set[str] = field(default_factory=set)  # complete only after the loop nest
    pre: list[str] = field(default_factory=list)
    post: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ArrayModule:
    """The generated source and the listing it implements."""

    source: str
    forward: list[str]
    backward: list[str]
    params: list[str]
    data: list[str]
    output: str
    renamed: list[tuple[str, str]]
    batch: str
    flipped: tuple[bool, ...] = ()


class _Kernel:
    """Turns assignments into the loops of one function body, printer-style.

    Each assignment goes to the method ``_emit_<op>`` named after the class of its
    right-hand side (``_emit_matmul``, ``_emit_rowsum``, ``_emit_softmax``, ``_emit_exp``,
    ...), as SymPy's printers dispatch ``_print_<class>``; a method returns the lines of
    code under the listing line, [] if it added the line to the element-wise loops itself
    (:meth:`_fuse`; ``self.comment`` is the listing line), or None to leave the line to
    the element-wise loops (:meth:`_emit_elementwise`, fused with the loop before when they
    can share it) or, for a scalar, to one printed line. Adding an operation is adding one
    method (and, if it needs one, a kernel in ``symgrad.kernels.arrays``, whose source the
    module carries: ``self.kernels`` collects their names).
    """

    def __init__(self, vars_: dict[str, _Var], batch: str, printer: FlatCodePrinter,
                 names: NameAllocator, fast_math: bool = True, dtype: str = "float64") -> None:
        self.fast_math = fast_math
        self.dtype = dtype  # the buffers' element type, which a local kept instead keeps
        self.lse_of: str | None = None  # whose row-wise log-sum-exp _wz holds now
        self.augmented: set[str] = set()  # targets of += lines
        self.uses_dropout = False
        self.vars = vars_
        self.batch = batch
        self.printer = printer
        self.names = names
        self.blocks: list[_Loop | list[str]] = []
        self.temps: list[_Var] = []
        self.kernels: set[str] = set()  # functions of symgrad.kernels.arrays the code calls
        self.work_rows: set[str] = set()
        self.aliases: list[str] = []
        self.comment = ""  # the listing line being emitted
        self.alias_of: dict[str, str] = {}  # a buffer shared by a copy: the copy -> its source
        self.uses_accumulate = False  # a loop nest sums with symgrad.kernels.loops.accumulate
        self.locals: list[str] = []  # buffers kept in local variables (:meth:`scalarize`)
        #: scores -> (block, call) of their cross-entropy, which a later softmax of the same
        #: scores turns into sce_probs_t (the softmax computed on the way)
        self.sce_at: dict[str, tuple[int, str]] = {}

    # -- shapes and storage ---------------------------------------------------------------

    def dim(self, d) -> str:
        return str(d) if isinstance(d, int) or (isinstance(d, sp.Integer)) else self.batch

    def storage(self, v: _Var) -> tuple[str, str]:
        r, c = v.shape
        return (self.dim(c), self.dim(r)) if v.flip else (self.dim(r), self.dim(c))

    def logical(self, v: _Var) -> tuple[str, str]:
        """Run-time rows and columns of ``v``, read off its array.

        Loop bounds are never literals: LLVM fully unrolls loops of small constant trip
        count, which multiplies compile time (measured 6x on 20 loop nests) and slows them.
        """
        r, c = f"{v.name}.shape[0]", f"{v.name}.shape[1]"
        return (c, r) if v.flip else (r, c)

    def shapes(self) -> dict:
        return {sp.Symbol(v.name): v.shape for v in self.vars.values() if v.shape}

    def access(self, v: _Var, i: str, j: str, swap: bool = False) -> str:
        """Storage access of ``v``'s logical entry (i, j) (``swap``: of ``v.T``), broadcast."""
        r, c = v.shape
        if swap:
            i, j = j, i
        i = "0" if r == 1 else i
        j = "0" if c == 1 else j
        return f"{v.name}[{j}, {i}]" if v.flip else f"{v.name}[{i}, {j}]"

    def temp(self, shape: tuple) -> _Var:
        name = self.names.take(f"t{len(self.temps)}")
        v = _Var(name, shape, bool(shape) and not isinstance(shape[0], int), "buffer"
                 if shape else "scalar")
        self.vars[name] = v
        if shape:
            self.temps.append(v)
        return v

    def call(self, kernel: str, args: str) -> str:
        """A call of ``symgrad.kernels.arrays``' ``kernel`` (the module's copy, ``_kernel``)."""
        self.kernels.add(kernel)
        return f"_{kernel}({args})"

    # -- statements -------------------------------------------------------------------------

    def assign(self, target: str, expr: sp.Basic, aug: bool, comment: str) -> None:
        # the batch size is an integer; n**(-2) would be integer arithmetic (0) in Numba
        expr = expr.xreplace({sp.Symbol(self.batch): _Raw(f"float({self.batch})")})
        expr = self.hoist(expr, root=True)
        v = self.vars[target]
        source = self.vars.get(getattr(expr, "name", None))
        if (not aug and v.kind == "buffer" and target not in self.augmented
                and source is not None and source.shape == v.shape and source.flip == v.flip):
            # a copy that is never added to later can share the buffer; one that is (a
            # fan-out, a residual connection) must not, or the += would change the source
            self.aliases.append(f"{target} = {source.name}  # {comment}: the same values")
            self.alias_of[target] = self.alias_of.get(source.name, source.name)
            return
        emit = getattr(self, f"_emit_{type(expr).__name__}", None)
        self.comment = comment
        lines = emit(v, expr, aug) if emit is not None else None
        if lines:
            self.code([f"# {comment}", *lines])
        elif lines is not None:
            pass  # the method added the line to the element-wise loops itself
        elif v.shape:
            self._emit_elementwise(v, expr, aug, comment)
        else:
            self.code([f"# {comment}", f"{target} {'+=' if aug else '='} "
                                       f"{self.printer.doprint(expr)}"])

    def code(self, lines: list[str]) -> None:
        self.blocks.append(lines)

    @staticmethod
    def each(v: _Var, statement: str) -> list[str]:
        """``statement`` for every stored entry ``[_a, _b]`` of ``v``."""
        return [f"for _a in range({v.name}.shape[0]):", f"    for _b in range({v.name}.shape[1]):",
                f"        {statement}"]

    def hoist(self, e: sp.Basic, root: bool) -> sp.Basic:
        """Compute every whole-array operation below the root into a temporary first."""
        if isinstance(e, ArrayOp):
            args = []
            for a in e.args:
                plain = isinstance(a, (sp.Symbol, Number)) or (
                    isinstance(e, matmul) and isinstance(a, transpose)
                    and isinstance(a.args[0], sp.Symbol))
                args.append(a if plain else self.hoist_to_temp(a))
            if isinstance(e, transpose) and not root:
                return transpose(args[0])
            e = type(e)(*args)
            return e if root else self.hoist_to_temp(e)
        if not e.args or isinstance(e, (sp.Symbol, Number)):
            return e
        if (self.fast_math and type(e) in _MAPPED
                and expr_shape(e, self.shapes()) != ()):
            arg = self.hoist_to_temp(self.hoist(e.args[0], False))
            e = e.func(arg)
            return e if root else self.hoist_to_temp(e)
        args = [self.hoist(a, False) for a in e.args]
        return e.func(*args)

    def hoist_to_temp(self, e: sp.Basic) -> sp.Basic:
        if isinstance(e, sp.Symbol):
            return e
        shape = expr_shape(e, self.shapes())
        t = self.temp(shape)
        self.assign(t.name, e, False, f"{t.name} = {ArrayPrinter().doprint(e)}")
        return sp.Symbol(t.name)

    # -- element-wise lines: fused loops ------------------------------------------------------

    def _emit_elementwise(self, v: _Var, expr: sp.Basic, aug: bool, comment: str) -> None:
        """``v (+)= expr`` entry by entry, in the loop nest before if it runs over the same
        storage and reads nothing it wrote at other entries (a transpose, a broadcast)."""
        i, j = ("_b", "_a") if v.flip else ("_a", "_b")
        reads: dict[str, bool] = {}

        def visit(e):
            if isinstance(e, transpose):
                name = e.args[0].name
                reads[name] = True
                return _Raw(self.access(self.vars[name], i, j, swap=True))
            if isinstance(e, sp.Symbol):
                var = self.vars.get(e.name)
                if var is None or not var.shape:
                    return e
                same = var.shape == v.shape and var.flip == v.flip
                reads[e.name] = reads.get(e.name, False) or not same
                return _Raw(self.access(var, i, j))
            if not e.args or isinstance(e, Number):
                return e
            return e.func(*[visit(a) for a in e.args])

        self._fuse(v, self.printer.doprint(visit(expr)), reads, aug, comment)

    def _fuse(self, v: _Var, body: str, reads: dict[str, bool], aug: bool,
              comment: str) -> None:
        """``v[_a, _b] (+)= body`` in the loop nest before, if it runs over ``v``'s storage
        and wrote none of the arrays ``body`` reads at other entries (``reads[name]``)."""
        dims = self.storage(v)
        i, j = ("_b", "_a") if v.flip else ("_a", "_b")
        statement = f"{self.access(v, i, j)} {'+=' if aug else '='} {body}"
        last = self.blocks[-1] if self.blocks else None
        fusable = (isinstance(last, _Loop) and last.dims == dims
                   and not self._conflicts(last, reads)
                   and v.name not in last.reduced and v.name not in last.read_elsewhere)
        if not fusable:
            last = _Loop(dims, (f"{v.name}.shape[0]", f"{v.name}.shape[1]"))
            self.blocks.append(last)
        last.comments.append(comment)
        last.body.append(statement)
        last.written.add(v.name)
        self._note_reads(last, reads)

    def _note_reads(self, loop: _Loop, reads: dict[str, bool]) -> None:
        for name, odd in reads.items():
            name = self.alias_of.get(name, name)
            loop.read.add(name)
            if odd:
                loop.read_elsewhere.add(name)

    def _conflicts(self, loop: _Loop, reads: dict[str, bool]) -> bool:
        """Whether a statement reading ``reads`` (name -> read at other entries than the
        loop's own) cannot join ``loop``: it reads what the loop wrote at other entries, or
        a sum the loop completes only at its end."""
        for name, odd in reads.items():
            name = self.alias_of.get(name, name)
            if name in loop.reduced or odd and name in loop.written:
                return True
        return False

    def _fuse_sums(self, big: _Var, out: _Var, sums: list[tuple[str, str]],
                   reads: dict[str, bool], aug: bool) -> bool:
        """``target (+)= sum over the inner storage axis of expr`` for each (target, expr)
        of ``sums``, added to the loop nest before if it runs over ``big``'s storage (expr
        reads ``big[_a, _b]`` and, at other entries, what ``reads`` marks); False if it
        cannot join it (then nothing is added).

        Each sum is a scalar accumulator of that loop, added to with ``accumulate``: only
        that addition may be reassociated, so the loop still vectorizes and the
        element-wise code in it computes exactly as written. The sums of a layer's
        backward pass (``X.T @ delta``, ``sum(delta, axis=0)``) so read ``delta`` in the
        pass that computes it instead of a pass of their own each."""
        last = self.blocks[-1] if self.blocks else None
        name = self.alias_of.get(out.name, out.name)
        if (not isinstance(last, _Loop) or last.dims != self.storage(big)
                or self._conflicts(last, reads)
                or name in last.read or name in last.written or name in last.reduced):
            return False
        for target, expr in sums:
            r = f"_r{len(last.pre)}"
            last.pre.append(f"{r} = {'np.float32(0.0)' if self.dtype == 'float32' else '0.0'}")
            last.body.append(f"{r} = accumulate({r}, {expr})")
            last.post.append(f"{target} {'+=' if aug else '='} {r}")
        last.comments.append(self.comment)
        last.reduced.add(name)
        self._note_reads(last, reads)
        self.uses_accumulate = True
        return True

    def _emit_map(self, out: _Var, e, aug: bool) -> list[str] | None:
        """``out = f(a)`` for a vectorizable math function: one shared kernel per function.

        Each inlined copy of a vectorizable function costs ~0.4 s of Numba compile time;
        a kernel per function (not per use) keeps that constant. The kernel is one loop over
        1-D arrays (``kernels.arrays.map_tanh`` says why): two buffers go to it flat, other
        matrices row by row.
        """
        if not out.shape or not self.fast_math or aug or not isinstance(e.args[0], sp.Symbol):
            return None
        a = self.vars.get(e.args[0].name)
        if a is None or a.shape != out.shape or a.flip != out.flip:
            return None
        kernel = f"map_{_MAPPED[type(e)]}"  # a loop over 1-D arrays (see kernels.arrays)
        if a.kind == out.kind == "buffer":  # both from alloc(), contiguous: one flat loop,
            # whose vectorized body leaves one remainder instead of one per row (W2's tanh
            # over (16, 300): measured 7.4 us flat against 9.1 us by rows)
            return [self.call(kernel, ", ".join(f"{v.name}.reshape({v.name}.size)"
                                                for v in (a, out)))]
        return [f"for _r in range({a.name}.shape[0]):",
                f"    {self.call(kernel, f'{a.name}[_r], {out.name}[_r]')}"]

    _emit_exp = _emit_log = _emit_tanh = _emit_sin = _emit_cos = _emit_map

    # -- whole-array operations ---------------------------------------------------------------

    def operand(self, e) -> tuple[_Var, bool]:
        if isinstance(e, transpose):
            return self.vars[e.args[0].name], True
        return self.vars[e.name], False

    def _emit_matmul(self, c: _Var, e: matmul, aug: bool) -> list[str]:
        """``c (+)= A @ B``: BLAS for large products, else loops whose innermost runs along
        contiguous memory, or a fast-math dot product per entry."""
        (a, ta), (b, tb) = self.operand(e.args[0]), self.operand(e.args[1])
        sw_a, sw_b = ta ^ a.flip, tb ^ b.flip
        ra, ka = transpose.shape_of(a.shape) if ta else a.shape
        _, cb = transpose.shape_of(b.shape) if tb else b.shape
        work = 1
        for d in (ra, ka, cb):
            work *= d if isinstance(d, int) else BLAS_BATCH
        I_, J_ = self.logical(c)
        K_ = self.logical(a)[0 if ta else 1]
        if isinstance(ka, int) and ka <= UNROLL_UP_TO and work < FUSE_BELOW:
            return self._unrolled_matmul(c, (a, ta), (b, tb), ka, aug)
        if (work < FUSE_BELOW and self.dim(ka) == self.batch  # a sum over the batch
                and self._summed_matmul(c, a, b, aug)):
            return []
        if work >= BLAS_FROM:
            (left, t_left), (right, t_right) = _blas_operands(c.flip, (a.name, sw_a),
                                                              (b.name, sw_b))
            left, right = f"{left}.T" if t_left else left, f"{right}.T" if t_right else right
            if not aug:
                return [f"gemm({left}, {right}, {c.name})"]
            t = self.temp(c.shape)
            t.flip = c.flip  # stored as c is (a parameter's gradient may be transposed)
            return [f"gemm({left}, {right}, {t.name})",
                    *self.each(c, f"{c.name}[_a, _b] += {t.name}[_a, _b]")]

        def A(i, p):
            return f"{a.name}[{p}, {i}]" if sw_a else f"{a.name}[{i}, {p}]"

        def B(p, j):
            return f"{b.name}[{j}, {p}]" if sw_b else f"{b.name}[{p}, {j}]"

        def C(i, j):
            return f"{c.name}[{j}, {i}]" if c.flip else f"{c.name}[{i}, {j}]"

        zero = [] if aug else self.each(c, f"{c.name}[_a, _b] = 0.0")
        if c.flip and sw_a:
            return zero + [f"for _j in range({J_}):", f"    for _q in range({K_}):",
                           f"        _x = {B('_q', '_j')}", f"        for _i in range({I_}):",
                           f"            {C('_i', '_j')} += {A('_i', '_q')} * _x"]
        if not c.flip and not sw_b:
            return zero + [f"for _i in range({I_}):", f"    for _q in range({K_}):",
                           f"        _x = {A('_i', '_q')}", f"        for _j in range({J_}):",
                           f"            {C('_i', '_j')} += _x * {B('_q', '_j')}"]
        if not sw_a and sw_b:
            return [self.call("mm_dot", f"{a.name}, {b.name}, {c.name}, {I_}, {J_}, {K_}, "
                                        f"{c.flip}, {aug}")]
        return [f"for _i in range({I_}):", f"    for _j in range({J_}):", "        _x = 0.0",
                f"        for _q in range({K_}):", f"            _x += {A('_i', '_q')} * "
                f"{B('_q', '_j')}", f"        {C('_i', '_j')} {'+=' if aug else '='} _x"]

    def _summed_matmul(self, c: _Var, a: _Var, b: _Var, aug: bool) -> bool:
        """``c (+)= A @ B`` summed over the batch (``X.T @ delta``), both stored with the
        samples innermost, fused into the loop nest before as sums (:meth:`_fuse_sums`):
        one per entry of ``c``, when that loop runs over one operand's storage and the
        other has at most ``SUMS_UP_TO`` rows. The operands are ``a[x, _b]`` and
        ``b[y, _b]`` in storage whatever their transposes: the batch is their inner axis."""
        sa, sb = self.storage(a), self.storage(b)
        if not (sa[1] == sb[1] == self.batch and sa[0] != self.batch != sb[0]):
            return False
        for big, small, big_left in ((b, a, False), (a, b, True)):
            rows = self.storage(small)[0]
            if not rows.isdigit() or int(rows) > SUMS_UP_TO:
                continue
            sums = []
            for x in range(int(rows)):
                i, j = ("_a", str(x)) if big_left else (str(x), "_a")
                left, right = (big, small) if big_left else (small, big)
                sums.append((self.access(c, i, j),
                             f"{left.name}[{i}, _b]*{right.name}[{j}, _b]"))
            if self._fuse_sums(big, c, sums, {big.name: False, small.name: True}, aug):
                return True
        return False

    def _unrolled_matmul(self, c: _Var, a, b, terms: int, aug: bool) -> list[str]:
        """``c (+)= A @ B`` over a small static inner dimension as an element-wise line,
        ``A[i, 0]*B[0, j] + A[i, 1]*B[1, j] + ...`` (the order of the loops it replaces)."""
        (a, ta), (b, tb) = a, b
        i, j = ("_b", "_a") if c.flip else ("_a", "_b")
        body = " + ".join(f"{self.access(a, i, str(q), swap=ta)}*"
                          f"{self.access(b, str(q), j, swap=tb)}" for q in range(terms))
        reads = {a.name: True, b.name: True}  # read at other entries than c's
        self._fuse(c, body if terms == 1 else f"({body})", reads, aug, self.comment)
        return []

    def _emit_rowsum(self, out: _Var, e, aug: bool) -> list[str]:
        """``sum(a, axis=1)`` and (:meth:`_emit_colsum`) ``sum(a, axis=0)``: a fast-math
        kernel along contiguous memory, else a loop that accumulates along samples."""
        a = self.vars[e.args[0].name]
        R, C = self.logical(a)

        def o(i, j):
            return self.access(out, i, j)

        lines = []
        if isinstance(e, colsum) == a.flip:  # along the inner storage axis: fused or a kernel
            target = self.access(out, "0", "_a") if a.flip else self.access(out, "_a", "0")
            if self._fuse_sums(a, out, [(target, f"{a.name}[_a, _b]")], {a.name: False}, aug):
                return []
        if isinstance(e, colsum) and a.flip:
            return [self.call("rowsums", f"{a.name}, {C}, {R}, {out.name}[0], {aug}")]
        if isinstance(e, rowsum) and not a.flip:
            return [self.call("rowsums", f"{a.name}, {R}, {C}, {out.name}[:, 0], {aug}")]
        if not aug:
            lines += self.each(out, f"{out.name}[_a, _b] = 0.0")
        if a.flip:  # rowsum of a transposed-stored matrix: accumulate along samples
            lines += [f"for _j in range({C}):", f"    for _i in range({R}):",
                      f"        {o('_i', '_j')} += {self.access(a, '_i', '_j')}"]
        else:  # colsum of a row-major matrix
            lines += [f"for _i in range({R}):", f"    for _j in range({C}):",
                      f"        {o('_i', '_j')} += {self.access(a, '_i', '_j')}"]
        return lines

    _emit_colsum = _emit_rowsum

    def work(self, rows: str) -> None:
        """Ask for the per-row work vectors _wm, _wz, _wl (maxima, sums, losses)."""
        self.work_rows.add(rows)

    def _emit_dropout_mask(self, out: _Var, e, aug: bool) -> list[str]:
        """A mask of 0 and 1/(1 - p) entries while training, all ones when evaluating."""
        p = float(e.args[1])
        self.uses_dropout = True
        return self.each(out, f"{out.name}[_a, _b] = (np.random.random() >= {p!r}) * "
                              f"{1.0 / (1.0 - p)!r} if _training else 1.0")

    def transposed_view(self, v: _Var) -> str:
        """``v``'s storage as (columns, rows): what the row-wise kernels take."""
        return v.name if v.flip else f"{v.name}.T"

    def _emit_softmax(self, out: _Var, e, aug: bool) -> list[str]:
        """Row-wise softmax (and, :meth:`_emit_log_softmax`, log-softmax) by kernels over
        samples stored as columns."""
        a = self.vars[e.args[0].name]
        self.work(self.dim(a.shape[0]))
        views = f"{self.transposed_view(a)}, {self.transposed_view(out)}"
        if isinstance(e, softmax) and self.lse_of == a.name:
            at = self.sce_at.get(a.name)
            if at is not None and not aug and out.kind == "buffer":
                # the forward cross-entropy computes these rows' softmax into out as it goes
                k, line = at
                self.blocks[k] = [ln.replace(line, line.replace(
                    "_sce_t(", "_sce_probs_t(")[:-1] + f", {self.transposed_view(out)})")
                    for ln in self.blocks[k]]
                self.kernels.add("sce_probs_t")
                del self.sce_at[a.name]
                return []
            # the forward cross-entropy left log-sum-exp of these rows in _wz: one pass
            return [self.call("softmax_from_lse", f"{views}, _wz[0], {aug}")]
        self.lse_of = None
        kernel = "softmax_t" if isinstance(e, softmax) else "log_softmax_t"
        return [self.call(kernel, f"{views}, _wm[0], _wz[0], {aug}")]

    _emit_log_softmax = _emit_softmax

    # -- reductions to a scalar ---------------------------------------------------------------

    def _emit_softmax_cross_entropy(self, out: _Var, e, aug: bool) -> list[str]:
        """The mean cross-entropy of the rows; leaves their log-sum-exp in _wz for a
        softmax of the same scores in the backward pass."""
        a, y = self.vars[e.args[0].name], self.vars[e.args[1].name]
        self.work(self.dim(a.shape[0]))
        self.lse_of = a.name
        args = (f"{self.transposed_view(a)}, {self.transposed_view(y)}, _wm[0], _wz[0], _wl[0], "
                f"float({self.dim(a.shape[0])})")
        call = self.call("sce_t", args)
        self.sce_at[a.name] = (len(self.blocks), call)  # the block assign() adds next
        return [f"{out.name} {'+=' if aug else '='} {call}"]

    def _emit_total(self, out: _Var, e, aug: bool) -> list[str]:
        """``sum(a)`` and (:meth:`_emit_sqnorm`) ``sum(a**2)``: fast-math kernels."""
        a = self.vars[e.args[0].name]
        kernel = "sum2d" if isinstance(e, total) else "sumsq2d"
        call = self.call(kernel, f"{a.name}, {a.name}.shape[0], {a.name}.shape[1]")
        return [f"{out.name} {'+=' if aug else '='} {call}"]

    _emit_sqnorm = _emit_total

    # -- output -----------------------------------------------------------------------------

    def scalarize(self) -> set[str]:
        """Keep in a local variable each buffer that one loop nest writes and only that loop
        reads, at the entry it wrote (``s4`` in ``s4 = X @ W1; s5 = s4 + b1``, a backward
        line's adjoint read by the next line and the sums fused after it): its values never
        go to memory. The local holds what the buffer would (``np.<dtype>(...)``: a value
        of ``floor`` is an integer in Numba, whose products would wrap around past 2**63,
        and a float32 buffer rounds). Returns the names of the buffers no longer needed."""
        def refs(block) -> str:
            lines = [*block.pre, *block.body, *block.post] if isinstance(block, _Loop) else block
            return "\n".join(lines)

        texts = [refs(b) for b in self.blocks]
        names_of: dict[str, set[str]] = {}  # a buffer -> the names it goes by (its copies)
        for copy, source in self.alias_of.items():
            names_of.setdefault(source, {source}).add(copy)
        gone: set[str] = set()
        for k, block in enumerate(self.blocks):
            if not isinstance(block, _Loop):
                continue
            for name in sorted(block.written):
                if self.vars[name].kind != "buffer" or name in self.alias_of:
                    continue
                names = names_of.get(name, {name})
                used = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
                if any(used.search(t) for m, t in enumerate(texts) if m != k):
                    continue
                entry = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\[_a, _b\]")
                first = next(b for b in block.body if used.search(b))
                if (len(entry.findall(texts[k])) != len(used.findall(texts[k]))
                        or not first.startswith(f"{name}[_a, _b] = ")
                        or used.search(first.split(" = ", 1)[1])):
                    continue  # read at other entries, or before it is written
                if block.bounds[0].startswith(f"{name}."):  # the loop's bounds: another's
                    other = next((m for m in re.findall(r"\b(\w+)\[_a, _b\]", texts[k])
                                  if m not in names and m in self.vars
                                  and self.storage(self.vars[m]) == block.dims), None)
                    if other is None:
                        continue
                    block.bounds = (f"{other}.shape[0]", f"{other}.shape[1]")
                local = f"_v{len(self.locals)}"
                self.locals.append(local)
                at = block.body.index(first)
                block.body = [entry.sub(local, b) for b in block.body]
                block.body[at] = f"{local} = np.{self.dtype}({first.split(' = ', 1)[1]})"
                texts[k] = refs(block)
                gone |= names
        self.aliases = [f"# {a.split('  # ', 1)[1]}, in a local" if a.split(" = ")[0] in gone
                        else a for a in self.aliases]
        return gone

    def lines(self, start: int = 0, stop: int | None = None) -> list[str]:
        """The code of the blocks from ``start`` to ``stop``."""
        out: list[str] = []
        for block in self.blocks[start:stop]:
            if isinstance(block, _Loop):
                out += [f"# {c}" for c in block.comments]
                out += [f"for _a in range({block.bounds[0]}):"]
                out += [f"    {s}" for s in block.pre]
                out += [f"    for _b in range({block.bounds[1]}):"]
                out += [f"        {s}" for s in block.body]
                out += [f"    {s}" for s in block.post]
            else:
                out += block
        return out


def render_arrays(
    graph: Graph,
    program: Program,
    params: Sequence[Node],
    data: Sequence[Node],
    batch: sp.Symbol | None,
    *,
    dtype: str = "float64",
    fast_math: bool = True,
    standalone: bool = False,
) -> ArrayModule:
    """Print the listing of a matrix program and render its compiled module.

    ``standalone`` copies the kernels the module uses into it (see ``math_context``).
    """
    names = NameAllocator(n.name for n in graph.nodes)
    batch_node = next((n for n in graph.inputs if n.symbol == batch), None)
    batch_name = batch_node.name if batch_node is not None else names.take(
        batch.name if batch is not None else "n")
    rename = {batch: sp.Symbol(batch_name)} if batch is not None else {}

    def fix(a):
        return type(a)(a.lhs, a.rhs.xreplace(rename)) if rename else a

    forward = [fix(a) for a in program.forward]
    backward = [fix(a) for a in program.backward]
    listing = ArrayPrinter()
    forward_lines = [listing.doprint(a) for a in forward]
    backward_lines = [listing.doprint(a) for a in backward]

    vars_: dict[str, _Var] = {}
    param_ids = {n.id for n in params}
    data_ids = {n.id for n in data}
    for node in graph.nodes:
        flip = bool(node.shape) and not isinstance(node.shape[0], int)
        if node.id in data_ids and flip and node.shape[1] > FLIP_DATA_UP_TO:
            flip = False  # wide data: whole rows are contiguous, batches are row copies
        kind = ("param" if node.id in param_ids else "data" if node.is_input else
                "buffer" if node.shape else "scalar")
        if node.symbol is not None and node.symbol == batch:
            kind = "size"
        vars_[node.name] = _Var(node.name, node.shape, flip, kind)
        gname = f"grad_{node.name}"
        vars_[gname] = _Var(gname, node.shape, flip,
                            "grad" if node.id in param_ids else "buffer" if node.shape else
                            "scalar")

    working = working_layout([(a.lhs.name, a.rhs) for a in [*forward, *backward]], vars_,
                             [n.name for n in params]) if WORKING_LAYOUT else []
    for name in working:  # stored transposed inside train (the template converts)
        vars_[name].flip = vars_[f"grad_{name}"].flip = True
    printer = FlatCodePrinter()
    kernel = _Kernel(vars_, batch_name, printer, names, fast_math, dtype)
    kernel.augmented = {a.lhs.name for a in backward if isinstance(a, AddAugmentedAssignment)}
    for a, text in zip(forward, forward_lines):
        kernel.assign(a.lhs.name, a.rhs, False, text)
    fwd_blocks = len(kernel.blocks)
    for a, text in zip(backward, backward_lines):
        kernel.assign(a.lhs.name, a.rhs, isinstance(a, AddAugmentedAssignment), text)
    scalars = kernel.scalarize()
    forward_code = kernel.lines(0, fwd_blocks)
    backward_code = kernel.lines(fwd_blocks)

    assigned = {a.lhs.name for a in [*forward, *backward]}
    aliased = {line.split(" = ")[0] for line in kernel.aliases}
    buffers = [v for v in vars_.values()
               if v.kind == "buffer" and v.name in assigned and v.name not in aliased]
    buffers += kernel.temps
    buffers = [v for v in buffers if v.name not in scalars]
    work = _work_width(kernel.work_rows)
    param_vars = [vars_[n.name] for n in params]
    data_vars = [vars_[n.name] for n in data]
    grad_names = [f"grad_{n.name}" for n in params]

    code = "\n".join([*forward_code, *backward_code])
    used = sorted(k for k in kernel.kernels if f"_{k}(" in code)  # sce_t may have become
    kernel_source, kernel_reads = copy_functions("arrays", used)  # sce_probs_t
    offsets, k = [], 0
    for v in param_vars:
        offsets.append((k, k + math.prod(v.shape)))
        k += math.prod(v.shape)
    split = _split_context(forward, backward, vars_, batch_name, program.output.name,
                           grad_names, data_vars, [dict(name=v.name, dims=_dims(v))
                                                   for v in buffers]
                           + [dict(name=w, dims=f"(1, {work})") for w in ("_wm", "_wz", "_wl")
                              if work], code, dtype, kernel.uses_dropout)
    context = dict(
        math_context(printer, graph, fast_math, extra=kernel_reads & _MATH_NAMES,
                     standalone=standalone, loops=True,
                     kernels={"loops": ["DONE", "SUMS", "end_epoch", "permute"]
                              + (["accumulate"] if kernel.uses_accumulate else [])
                              + (["view2d"] if split["split"] == "" else []),
                              "optim": [_update(k)],
                              **({"blas": ["gemm"]} if "gemm(" in code else {})}),
        version=version(),
        output=program.output.name,
        forward_listing=forward_lines,
        backward_listing=backward_lines,
        aliases=kernel.aliases,
        forward_code=forward_code,
        backward_code=backward_code,
        params=[
            dict(name=v.name, shape=_shape_text(v.shape), lo=lo, hi=hi, rows=2 * k, cols=2 * k + 1,
                 flip=v.flip, r=v.shape[0], c=v.shape[1])
            for k, (v, (lo, hi)) in enumerate(zip(param_vars, offsets))
        ],
        grads=grad_names,
        working=[p.name for p in param_vars if p.flip],
        data=[dict(name=v.name, batched=not isinstance(v.shape[0], int), flip=v.flip)
              for v in data_vars],
        first_batched=next(((k, v.flip) for k, v in enumerate(data_vars)
                            if not isinstance(v.shape[0], int)), (0, False)),
        batch=batch_name,
        buffers=[dict(name=v.name, dims=_dims(v)) for v in buffers]
        + [dict(name=w, dims=f"(1, {work})") for w in ("_wm", "_wz", "_wl") if work],
        array_kernels=kernel_source,
        dropout=kernel.uses_dropout,
        dtype=dtype,
        renamed=[(n.name, ascii(n.symbol.name)) for n in [*params, *data]
                 if n.name != n.symbol.name],
        uses_numpy=True,
        n_params=k,
        update=_update(k),
        dims=", ".join(f"{d}" for v in param_vars for d in v.shape),
    )
    context.update(split)
    source = environment().get_template("arrays.py.j2").render(context)
    return ArrayModule(source, forward_lines, backward_lines, [v.name for v in param_vars],
                       [v.name for v in data_vars], program.output.name, context["renamed"],
                       batch_name, tuple(v.flip for v in data_vars))


def _split_context(forward, backward, vars_, batch: str, output: str, grads: list[str],
                   data_vars: list[_Var], buffers: list[dict], code: str, dtype: str,
                   dropout: bool) -> dict:
    """The template's ``split`` (why the program does not split by samples, or "") and, when
    it does, ``chunk_unpack``: the lines of ``chunk`` that lay the chunk's data and buffers
    out in its one work vector (``CHUNK_LAYOUT``, in order; each entry padded to 8 words)."""
    reason = split_reason([*forward, *backward], {k: v.shape for k, v in vars_.items()},
                          batch, [output, *grads])
    if reason:
        reason = f"its program does not split by samples: {reason}"
    if not reason and dtype != "float64":
        reason = f"it is {dtype}; two cores are for float64 models without BLAS products"
    if not reason and ("np.dot(" in code or "gemm(" in code):
        reason = "its products call BLAS, which has threads of its own"
    if not reason and dropout:
        reason = "dropout masks come from one generator for the whole batch"
    if not reason and not any(not isinstance(v.shape[0], int) for v in data_vars):
        reason = "no data matrix has the batch as its rows"
    if reason:
        return dict(split=reason, chunk_unpack=[], chunk_layout=[])
    entries = [(v.name, _dims(v)) for v in data_vars]
    entries += [(b["name"], b["dims"]) for b in buffers]
    lines, layout = ["_o = 0"], []
    for name, dims in entries:
        parts = [d.strip() for d in dims.strip("()").split(",")]
        layout.append(f"({', '.join(parts)})")
        sizes = ["_m" if d == "None" else f"max(_m, {d[1:]})" if d.startswith("-") else d
                 for d in parts]
        words = " * ".join(sizes)
        lines.append(f"{name} = view2d(_w, _o, {', '.join(sizes)})")
        lines.append(f"_o += ({words} + 7) // 8 * 8")
    lines += ["if _o > _w.shape[0]:  # a work vector too short for m (never from fit)",
              "    return math.nan"]
    return dict(split="", chunk_unpack=lines, chunk_layout=layout)


def _update(n_params: int) -> str:
    """The optimizer step train calls: ``update``, or for long parameter vectors
    ``update_halves`` (two halves at once, the same numbers: symgrad.kernels.optim)."""
    return "update_halves" if n_params >= HALVES_FROM else "update"


def _blas_operands(c_flip: bool, a: tuple, b: tuple) -> tuple[tuple, tuple]:
    """The operands of ``gemm(left, right, c)`` for ``c = A @ B``, each as (name,
    transposed), from ``a`` and ``b`` = (name, whether its storage is the transpose of
    the product's operand): a ``c`` stored transposed is computed as ``B^T @ A^T``."""
    (a, sw_a), (b, sw_b) = a, b
    if c_flip:
        return (b, not sw_b), (a, not sw_a)
    return (a, sw_a), (b, sw_b)


def _is_int(d) -> bool:
    return isinstance(d, (int, sp.Integer))


def _blas_product(a_shape: tuple, ta: bool, b_shape: tuple, tb: bool) -> bool:
    """Whether ``_Kernel._emit_matmul`` calls BLAS for a product of operands of these
    shapes (transposed when ``ta``/``tb``), as far as shapes decide it (a sum over the batch
    below FUSE_BELOW may be fused into a loop instead: counted as not BLAS)."""
    ra, ka = (a_shape[1], a_shape[0]) if ta else a_shape
    cb = b_shape[0] if tb else b_shape[1]
    work = 1
    for d in (ra, ka, cb):
        work *= int(d) if _is_int(d) else BLAS_BATCH
    if work < FUSE_BELOW and (not _is_int(ka) or ka <= UNROLL_UP_TO):
        return False
    return work >= BLAS_FROM


def working_layout(assignments, vars_: dict[str, _Var], params: Sequence[str]) -> list[str]:
    """The parameter matrices the compiled ``train`` keeps transposed (its working layout):
    those whose BLAS products (the ones reading the matrix and the one writing its gradient)
    pass fewer transposed operands to BLAS with the matrix stored transposed than as it is.

    A matrix some other whole-array operation reads (a sum, a softmax, ...) keeps its layout
    (their loops would add in another order). ``assignments`` are (target, expression)
    pairs of the program; the matrices' ``flip`` in ``vars_`` is not changed here.
    """
    owner = {}
    for name in params:
        owner[name] = owner[f"grad_{name}"] = name
    excluded: set[str] = set()
    products = []  # (owners involved, c, a, b): each a (name or None, stored flipped, transposed)
    shapes = {sp.Symbol(v.name): v.shape for v in vars_.values() if v.shape}

    def operand(e):
        t = isinstance(e, transpose)
        inner = e.args[0] if t else e
        if isinstance(inner, sp.Symbol) and inner.name in vars_:
            v = vars_[inner.name]
            return v.name, v.flip, t, v.shape
        shape = expr_shape(inner, shapes)  # a temporary of _Kernel.hoist
        return None, not _is_int(shape[0]), t, shape

    for target, rhs in assignments:
        for node in sp.preorder_traversal(rhs):
            if not isinstance(node, ArrayOp) or isinstance(node, transpose):
                continue
            names = {s.name for s in node.free_symbols} | ({target} if node is rhs else set())
            if not isinstance(node, matmul):
                excluded |= {owner[n] for n in names if n in owner}
                continue
            a, b = operand(node.args[0]), operand(node.args[1])
            if not _blas_product(a[3], a[2], b[3], b[2]):
                continue
            if node is rhs:
                c = (target, vars_[target].flip)
            else:
                shape = expr_shape(node, shapes)
                c = (None, not _is_int(shape[0]))
            involved = {owner[n] for n in (a[0], b[0], c[0]) if n in owner}
            products.append((involved, c, a, b))
    chosen: list[str] = []
    flipped = {name: vars_[name].flip for name in vars_}

    def transposed(c, a, b) -> int:
        def f(x):
            return flipped[x[0]] if x[0] is not None else x[1]

        (_, t_left), (_, t_right) = _blas_operands(f(c), (a[0], a[2] ^ f(a)), (b[0], b[2] ^ f(b)))
        return t_left + t_right

    for name in params:
        shape = vars_[name].shape
        if (name in excluded or len(shape) != 2 or not all(_is_int(d) and d > 1 for d in shape)
                or vars_[name].flip):
            continue
        mine = [(c, a, b) for involved, c, a, b in products if name in involved]
        if not mine:
            continue
        cost = []
        for flip in (False, True):
            flipped[name] = flipped[f"grad_{name}"] = flip
            cost.append(sum(transposed(*p) for p in mine))
        keep = cost[1] < cost[0]
        flipped[name] = flipped[f"grad_{name}"] = keep
        if keep:
            chosen.append(name)
    return chosen


def _work_width(rows: set[str]) -> str:
    """Length of the row-wise work vectors as a BUFFERS entry: the most rows any row-wise
    operation has (``None``: the batch size; ``-k``: the larger of the batch size and k)."""
    if not rows:
        return ""
    numbers = [int(r) for r in rows if r.isdigit()]
    if len(numbers) < len(rows):
        return f"-{max(numbers)}" if numbers else "None"
    return str(max(numbers))


def _dims(v: _Var) -> str:
    r, c = v.shape
    dims = (c, r) if v.flip else (r, c)
    return "(" + ", ".join(str(d) if isinstance(d, int) else "None" for d in dims) + ")"


def _shape_text(shape) -> str:
    return f"({shape[0]}, {shape[1]})"



