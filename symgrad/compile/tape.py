"""A :class:`~symgrad.rules.Program` lowered to a tape for the fixed interpreter kernel.

The flat module costs Numba milliseconds per generated line to compile; a tape costs
nothing to compile: the program becomes rows of opcodes and slot numbers (see
``symgrad.kernels.tape_vm``), run by one interpreter that Numba compiled once per machine.

Lowering walks the SymPy assignments themselves (no printing, no parsing, no ``eval``) and
follows the printer's reading of each expression, so the tape computes what the flat code
computes, rounding included: an n-ary sum or product is evaluated left to right in the
order the printer writes it (it parenthesizes every operand that does not bind tighter),
factors with negative powers become one division (``a*b/c``, ``a/(b*c)``), ``x**n`` with
an integer ``n`` repeats Numba's exponentiation by squaring, ``x**0.5`` is ``sqrt``,
``Piecewise`` selects between its evaluated branches. Signs are carried along and applied
where a value is needed (``a + (-b)`` is ``a - b`` exactly).

Registers are first virtual and in SSA form (``grad_x += e`` makes a new one, so copies
are free aliases); a linear scan then gives every register a slot and reuses the slot of
a value after its last read. Both passes are linear in the size of the program.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import sympy as sp
from sympy.codegen.ast import AddAugmentedAssignment
from sympy.codegen.cfunctions import Sqrt, expm1, log1p, log2, log10
from sympy.core.mul import _keep_coeff
from sympy.logic.boolalg import BooleanAtom

from ..expression.functions import (
    elu,
    leaky_relu,
    log_sigmoid,
    logsumexp,
    relu,
    sigmoid,
    softplus,
)
from ..graph import Identity
from ..kernels import ready
from ..kernels import tape_vm as vm
from ..rules import Program, lookup

__all__ = ["Tape", "compile_tape", "lower"]

ready()  # Numba's cache of the interpreter is checked before anything can load from it

_OP = vm.OPCODES
_UNARY = {
    sp.exp: "EXP", sp.log: "LOG", sp.sin: "SIN", sp.cos: "COS", sp.tan: "TAN",
    sp.tanh: "TANH", sp.sinh: "SINH", sp.cosh: "COSH", sp.asin: "ASIN", sp.acos: "ACOS",
    sp.atan: "ATAN", sp.asinh: "ASINH", sp.acosh: "ACOSH", sp.atanh: "ATANH", sp.erf: "ERF",
    sp.erfc: "ERFC", sp.Abs: "ABS", sp.floor: "FLOOR", sp.ceiling: "CEIL", sp.sign: "SIGN",
    sigmoid: "SIGMOID", relu: "RELU", softplus: "SOFTPLUS", sp.gamma: "GAMMA",
    sp.loggamma: "LGAMMA", expm1: "EXPM1", log1p: "LOG1P", log2: "LOG2", log10: "LOG10",
    Sqrt: "SQRT", log_sigmoid: "LOG_SIGMOID",
}
_UNARY = {cls: _OP[name] for cls, name in _UNARY.items()}
_BINARY = {sp.atan2: _OP["ATAN2"], leaky_relu: _OP["LEAKY_RELU"], elu: _OP["ELU"],
           sp.Heaviside: _OP["HEAVISIDE"], sp.Max: _OP["MAX"], sp.Min: _OP["MIN"],
           sp.And: _OP["AND"], sp.Or: _OP["OR"]}
_RELATIONAL = {"<": "LT", "<=": "LE", ">": "GT", ">=": "GE", "==": "EQ", "!=": "NE"}
_RELATIONAL = {k: _OP[v] for k, v in _RELATIONAL.items()}
_ADD, _SUB, _MULOP, _DIV, _NEG = (_OP[k] for k in ("ADD", "SUB", "MUL", "DIV", "NEG"))


class _Lowering:
    """Assignments -> rows ``(op, out, a, b, c)`` over virtual registers.

    Registers ``0..n_inputs-1`` are the inputs; constants are negative registers
    ``-1, -2, ...`` (index into :attr:`consts`). Every expression lowers to
    ``(negated, register)``: the value is ``-register`` when ``negated``.
    """

    def __init__(self, inputs: Sequence[sp.Symbol]) -> None:
        self.var: dict[sp.Symbol, int] = {s: k for k, s in enumerate(inputs)}
        self.n_regs = len(inputs)
        self.rows: list[int] = []
        self.consts: list[float] = []
        self._const_reg: dict[str, int] = {}
        self._env: dict[sp.Symbol, int] | None = None  # arguments inside a user function
        self._bodies: dict[type, tuple[list[sp.Symbol], sp.Basic]] = {}

    # -- emitting -------------------------------------------------------------------------
    def emit(self, op: int, a: int = 0, b: int = 0, c: int = 0) -> int:
        out = self.n_regs
        self.n_regs += 1
        self.rows.extend((op, out, a, b, c))
        return out

    def const(self, value: float) -> int:
        key = value.hex()
        reg = self._const_reg.get(key)
        if reg is None:
            self.consts.append(value)
            reg = self._const_reg[key] = -len(self.consts)
        return reg

    def assign(self, assignment) -> None:
        neg, reg = self.lower(assignment.rhs)
        if isinstance(assignment, AddAugmentedAssignment):
            reg = self.emit(_SUB if neg else _ADD, self.var[assignment.lhs], reg)
        elif neg:
            reg = self.emit(_NEG, reg)
        self.var[assignment.lhs] = reg

    # -- expressions ----------------------------------------------------------------------
    def value(self, expr: sp.Basic) -> int:
        """A register holding the value of ``expr`` (a negation applied if pending)."""
        neg, reg = self.lower(expr)
        return self.emit(_NEG, reg) if neg else reg

    def lower(self, expr: sp.Basic) -> tuple[bool, int]:
        if isinstance(expr, sp.Symbol):
            return False, self._symbol(expr)
        if expr.is_Number or isinstance(expr, (sp.NumberSymbol, BooleanAtom)):
            return False, self.const(_number(expr))
        if expr.is_Add:
            return self._add(expr)
        if expr.is_Mul:
            return self._mul(expr)
        if expr.is_Pow:
            return False, self._pow(expr)
        cls = type(expr)
        op = _UNARY.get(cls)
        if op is not None and len(expr.args) == 1:
            return False, self.emit(op, self.value(expr.args[0]))
        if isinstance(expr, sp.Piecewise):
            return False, self._piecewise(expr)
        if isinstance(expr, sp.core.relational.Relational):
            op = _RELATIONAL[expr.rel_op]
            return False, self.emit(op, self.value(expr.lhs), self.value(expr.rhs))
        op = _BINARY.get(cls)
        if op is not None:
            args = list(expr.args)
            if cls is sp.Heaviside and len(args) == 1:
                args.append(sp.S.Half)
            if len(args) >= 2 or cls in (sp.Max, sp.Min, sp.And, sp.Or):
                reg = self.value(args[0])
                for arg in args[1:]:
                    reg = self.emit(op, reg, self.value(arg))
                return False, reg
        if isinstance(expr, sp.Not):
            return False, self.emit(_OP["NOT"], self.value(expr.args[0]))
        if cls is logsumexp:  # the helper's fold of logaddexp, from -inf
            reg = self.const(-math.inf)
            for arg in expr.args:
                reg = self.emit(_OP["LOGADDEXP"], reg, self.value(arg))
            return False, reg
        if cls is Identity:
            return self.lower(expr.args[0])
        if isinstance(expr, sp.Function):
            return self._user_function(expr)
        raise NotImplementedError(f"the tape cannot evaluate {cls.__name__} ({expr})")

    def _symbol(self, symbol: sp.Symbol) -> int:
        table = self.var if self._env is None else self._env
        try:
            return table[symbol]
        except KeyError:
            raise ValueError(f"{symbol} is read before it is assigned") from None

    def _add(self, expr: sp.Add) -> tuple[bool, int]:
        """Terms summed left to right in the printer's order; signs folded into ADD/SUB."""
        terms = iter(expr.args)
        neg, acc = self.lower(next(terms))
        for term in terms:
            tneg, t = self.lower(term)
            if tneg == neg:  # a + b, or (-a) + (-b) = -(a + b)
                acc = self.emit(_ADD, acc, t)
            elif tneg:  # a + (-t)
                acc, neg = self.emit(_SUB, acc, t), False
            else:  # (-a) + t
                acc, neg = self.emit(_SUB, t, acc), False
        return neg, acc

    def _mul(self, expr: sp.Mul) -> tuple[bool, int]:
        """The printer's ``a*b*c/d`` (``codeprinter._print_Mul``), left to right.

        A negative coefficient becomes the pending sign; factors with a negative rational
        power form the denominator: one of them divides, several are multiplied first
        (``a/(b*c)``). Every factor prints parenthesized unless it binds tighter than ``*``,
        so each is one value.
        """
        neg = False
        c, e = expr.as_coeff_Mul()
        if c is not sp.S.One and c < 0:
            expr, neg = _keep_coeff(-c, e), True
        numerator, denominator = [], []
        for item in sp.Mul.make_args(expr):
            exp = item.exp if item.is_Pow else None
            if exp is not None and item.is_commutative and exp.is_Rational and exp.is_negative:
                if exp != -1:
                    denominator.append(sp.Pow(item.base, -exp, evaluate=False))
                else:
                    denominator.append(sp.Pow(item.base, -exp))
            else:
                numerator.append(item)
        neg, acc = self._product(numerator or [sp.S.One], neg)
        if denominator:
            neg, below = self._product(denominator, neg)
            acc = self.emit(_DIV, acc, below)
        return neg, acc

    def _product(self, factors: list, neg: bool) -> tuple[bool, int]:
        fneg, acc = self.lower(factors[0])
        neg ^= fneg
        for factor in factors[1:]:
            fneg, reg = self.lower(factor)
            neg ^= fneg
            acc = self.emit(_MULOP, acc, reg)
        return neg, acc

    def _pow(self, expr: sp.Pow) -> int:
        """``PythonCodePrinter._hprint_Pow``: sqrt, 1/sqrt, 1/x, x**n (integer n), x**y."""
        base, exp = expr.args
        if exp == sp.S.Half:
            return self.emit(_OP["SQRT"], self.value(base))
        if expr.is_commutative:
            if -exp is sp.S.Half:
                root = self.emit(_OP["SQRT"], self.value(base))
                return self.emit(_DIV, self.const(1.0), root)
            if exp is sp.S.NegativeOne:
                return self.emit(_DIV, self.const(1.0), self.value(base))
        if exp.is_Integer and -(2**31) <= exp.p < 2**31:  # the code's column is int32
            return self.emit(_OP["POWI"], self.value(base), 0, int(exp))
        return self.emit(_OP["POW"], self.value(base), self.value(exp))

    def _piecewise(self, expr: sp.Piecewise) -> int:
        """``(v1 if c1 else v2 if c2 else nan)``: every branch evaluated, then selected."""
        branches = []
        result = None
        for value, cond in expr.args:
            if cond == sp.true:
                result = self.value(value)
                break
            branches.append((self.value(cond), self.value(value)))
        if result is None:
            result = self.const(math.nan)
        select = _OP["SELECT"]
        for cond, value in reversed(branches):
            result = self.emit(select, value, result, cond)
        return result

    def _user_function(self, expr: sp.Function) -> tuple[bool, int]:
        """A registered function: its ``forward`` expression, inlined on the argument values."""
        cls = type(expr)
        body = self._bodies.get(cls)
        if body is None:
            forward = lookup(cls).forward
            if forward is None:
                raise NotImplementedError(
                    f"{cls.__name__} has a derivative rule but no forward=...; register it with "
                    f"symgrad.rule({cls.__name__}, forward=lambda *args: <its value>)"
                )
            params = [sp.Symbol(f"a{k}") for k in range(len(expr.args))]
            body = self._bodies[cls] = (params, forward(*params))
        params, value = body
        args = [self.value(a) for a in expr.args]
        outer, self._env = self._env, dict(zip(params, args, strict=True))
        try:
            return self.lower(value)
        finally:
            self._env = outer


def _number(expr: sp.Basic) -> float:
    if expr.is_Rational and not expr.is_Integer:
        return expr.p / expr.q  # the printed p/q: a correctly rounded division
    if isinstance(expr, BooleanAtom):
        return 1.0 if expr else 0.0
    return float(expr)


def _allocate(rows: list[int], n_regs: int, n_inputs: int,
              keep: Iterable[int]) -> tuple[int, dict[int, int]]:
    """Linear scan: registers -> slots, in place; a slot is reused after its value's last read.

    Inputs keep slots ``0..n_inputs-1`` until their last read; ``keep`` (the outputs) are
    never reused. Constant registers (negative) are left for the caller. Returns the number
    of working slots and the slot of each kept register.
    """
    arity = vm.ARITY.tolist()
    n = len(rows) // 5
    last = [-1] * n_regs
    for r in range(n):
        base = 5 * r
        for j in range(base + 2, base + 2 + arity[rows[base]]):
            if rows[j] >= 0:
                last[rows[j]] = r
    for reg in keep:
        if reg >= 0:
            last[reg] = n
    slot = list(range(n_inputs)) + [-1] * (n_regs - n_inputs)
    free: list[int] = [k for k in range(n_inputs) if last[k] < 0]
    top = n_inputs
    for r in range(n):
        base = 5 * r
        for j in range(base + 2, base + 2 + arity[rows[base]]):
            reg = rows[j]
            if reg >= 0:
                rows[j] = slot[reg]
                if last[reg] == r:
                    free.append(slot[reg])
                    last[reg] = -2  # freed (the same register may be read twice)
        out = rows[base + 1]
        if free:
            s = free.pop()
        else:
            s = top
            top += 1
        slot[out] = rows[base + 1] = s
        if last[out] == -1:  # never read: the slot is free again at once
            free.append(s)
    return top, {reg: slot[reg] for reg in keep if reg >= 0}


class Tape:
    """A lowered program and the interface of a generated module's kernels.

    ``value(*xs)``, ``value_and_grad(*xs)``, ``value_and_grad_array(x, grad)``,
    ``value_batch(columns, out)`` and ``value_and_grad_batch(columns, values, grads)`` behave
    like the functions of the module ``symgrad.compile`` generates, so a
    :class:`~symgrad.compile.CompiledFunction` can use a Tape in place of that module.
    """

    def __init__(self, code: np.ndarray, n_forward: int, consts: np.ndarray, n_slots: int,
                 out_slot: int, grad_slots: np.ndarray, inputs: Sequence[str],
                 wrt: Sequence[str], output: str) -> None:
        self.code = np.ascontiguousarray(code, dtype=np.int32)
        self.n_forward = n_forward
        self.consts = np.ascontiguousarray(consts, dtype=np.float64)
        self.n_slots = int(n_slots)
        self.out_slot = int(out_slot)
        self.grad_slots = np.ascontiguousarray(grad_slots, dtype=np.int64)
        self.INPUTS = tuple(inputs)
        self.WRT = tuple(wrt)
        self.OUTPUT = output
        self._n = len(self.INPUTS)
        self._check()
        self._forward = self.code[:n_forward]

    def _check(self) -> None:
        """The kernel does not check indices: refuse a tape that would read or write outside."""
        code, n = self.code, self.n_slots
        if code.ndim != 2 or code.shape[1] != 5 or not 0 <= self.n_forward <= code.shape[0]:
            raise ValueError("a tape is an int32 array of rows (op, out, a, b, c)")
        if n < max(1, self._n + self.consts.shape[0]):
            raise ValueError("too few slots for the inputs and constants")
        ops = code[:, 0]
        if ops.size and (ops.min() < 0 or ops.max() >= len(vm.ARITY)):
            raise ValueError("unknown opcode in the tape")
        arity = vm.ARITY[ops]
        for j, used in ((1, np.ones_like(arity, dtype=bool)), (2, arity >= 1), (3, arity >= 2),
                        (4, arity >= 3)):
            col = code[:, j]
            if ((col < 0) | (col >= n))[used].any() or (col[~used & (j != 4)] != 0).any():
                raise ValueError(f"slot index out of range in column {j} of the tape")
        slots = np.append(self.grad_slots, self.out_slot)
        if slots.size and (slots.min() < 0 or slots.max() >= n):
            raise ValueError("output slot out of range")

    def __repr__(self) -> str:
        names = ", ".join(self.INPUTS[:5]) + (", ..." if self._n > 5 else "")
        return (f"<Tape {self.OUTPUT}({names}): {self.code.shape[0]} rows "
                f"({self.n_forward} forward), {self.n_slots} slots, {self.consts.size} constants>")

    # -- the generated module's interface ----------------------------------------------------
    def _point(self, xs: tuple) -> np.ndarray:
        if len(xs) != self._n:
            raise TypeError(f"expected {self._n} numbers, got {len(xs)} arguments")
        for v in xs:  # what Numba's float64 signature takes; NumPy would also parse text
            if type(v) is not float and not isinstance(v, _REAL_SCALARS):
                raise TypeError(f"expected real numbers, got {type(v).__name__}")
        return np.fromiter(xs, np.float64, self._n)  # the fastest conversion of many floats

    def value(self, *xs) -> float:
        value = vm.value_point(self._forward, self.consts, self.n_slots, self._point(xs),
                               self.out_slot)
        return value

    def value_and_grad(self, *xs) -> tuple[float, tuple[float, ...]]:
        grad = np.empty(self.grad_slots.shape[0])
        value = vm.value_and_grad_point(self.code, self.consts, self.n_slots, self._point(xs),
                                        self.out_slot, self.grad_slots, grad)
        return value, tuple(grad.tolist())

    def value_and_grad_array(self, x: np.ndarray, grad: np.ndarray) -> float:
        if not _fits(x, (self._n,)):
            x = np.ascontiguousarray(x, dtype=np.float64)
            if x.shape != (self._n,):
                raise ValueError(f"x must have shape ({self._n},)")
        out = grad if _fits(grad, self.grad_slots.shape) else _writable(grad, self.grad_slots.shape)
        value = vm.value_and_grad_point(self.code, self.consts, self.n_slots, x,
                                        self.out_slot, self.grad_slots, out)
        if out is not grad:
            grad[...] = out
        return value

    def _columns(self, columns: Sequence[np.ndarray], n: int) -> np.ndarray:
        if len(columns) != self._n:
            raise ValueError(f"expected {self._n} input columns, got {len(columns)}")
        xs = np.empty((self._n, n))
        for k, column in enumerate(columns):
            xs[k] = column
        return xs

    def value_batch(self, columns: Sequence[np.ndarray], values: np.ndarray) -> None:
        out = _writable(values, values.shape)
        vm.value_batch(self._forward, self.consts, self.n_slots,
                       self._columns(columns, values.shape[0]), self.out_slot, out)
        if out is not values:
            values[...] = out

    def value_and_grad_batch(self, columns: Sequence[np.ndarray], values: np.ndarray,
                             grads: np.ndarray) -> None:
        n = values.shape[0]
        if grads.shape != (self.grad_slots.shape[0], n):
            raise ValueError(f"grads must have shape ({self.grad_slots.shape[0]}, {n})")
        v, g = _writable(values, (n,)), _writable(grads, grads.shape)
        vm.value_and_grad_batch(self.code, self.consts, self.n_slots, self._columns(columns, n),
                                self.out_slot, self.grad_slots, v, g)
        if v is not values:
            values[...] = v
        if g is not grads:
            grads[...] = g


_F64 = np.dtype(np.float64)
#: Scalars the point kernels take, as the flat module's float64 signature does.
_REAL_SCALARS = (int, float, np.integer, np.float16, np.float32, np.float64, np.bool_)


def _fits(array, shape: tuple) -> bool:
    """True if the kernels take ``array`` as it is (its Numba type is the cached one)."""
    if type(array) is not np.ndarray or array.dtype is not _F64 or array.shape != shape:
        return False
    flags = array.flags
    return flags.c_contiguous and flags.writeable


def _writable(array: np.ndarray, shape: tuple) -> np.ndarray:
    """``array`` itself if the kernel can write into it directly, else a scratch array."""
    if _fits(array, shape):
        return array
    if tuple(np.shape(array)) != shape:
        raise ValueError(f"output must have shape {shape}")
    return np.empty(shape)


def lower(program: Program, inputs: Sequence) -> Tape:
    """Lower ``program`` to a :class:`Tape`; ``inputs`` are the input nodes (or their
    symbols, ``node.var``) in argument order."""
    symbols = [getattr(i, "var", i) for i in inputs]
    lowering = _Lowering(symbols)
    for assignment in program.forward:
        lowering.assign(assignment)
    n_forward = len(lowering.rows) // 5
    for assignment in program.backward:
        lowering.assign(assignment)
    out_reg = lowering.var[program.output]
    grad_regs = [lowering.var[g] for g in program.grads]
    rows = lowering.rows
    n_work, kept = _allocate(rows, lowering.n_regs, len(symbols), [out_reg, *grad_regs])
    code = np.array(rows, dtype=np.int32).reshape(-1, 5)
    consts = np.array(lowering.consts, dtype=np.float64)

    # constants: register -k-1 -> slot n_work + k, in the operand columns that are slots
    arity = vm.ARITY[code[:, 0]]
    for j, used in ((2, arity >= 1), (3, arity >= 2), (4, arity >= 3)):
        col = code[:, j]
        is_const = used & (col < 0)
        col[is_const] = n_work - 1 - col[is_const]

    def slot(reg: int) -> int:
        return kept[reg] if reg >= 0 else n_work - 1 - reg

    return Tape(code, n_forward, consts, n_work + consts.size, slot(out_reg),
                np.array([slot(r) for r in grad_regs], dtype=np.int64),
                [s.name for s in symbols], [g.name[len("grad_"):] for g in program.grads],
                program.output.name)


def compile_tape(expr: sp.Basic, wrt: Iterable[sp.Symbol] | None = None, *,
                 inputs: Iterable[sp.Symbol] | None = None, name: str = "L") -> Tape:
    """``symgrad.compile``'s front end (checks, graph, reverse pass), then :func:`lower`.

    Arguments mean what they mean for :func:`symgrad.compile`; nothing is printed, written
    or compiled.
    """
    from ..expression import as_expression, free_symbols
    from .function import _check_inputs, _check_wrt
    from .pipeline import Pipeline

    expr = as_expression(expr)
    symbols = free_symbols(expr)
    wrt_syms = _check_wrt(wrt, symbols)
    params = _check_inputs(inputs, symbols, wrt_syms)
    pipeline = Pipeline(expr, params, wrt_syms, name=name)
    return lower(pipeline.program, pipeline.param_nodes)
