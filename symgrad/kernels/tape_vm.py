"""The tape interpreter: one fixed Numba kernel that runs any lowered program.

A *tape* is a C-contiguous int32 array of rows ``(op, out, a, b, c)``: each row reads
slots ``a`` (and ``b``, ``c`` where the operation takes them) of a float64 slot array and
writes slot ``out``. An operation reads all of its operands before it writes, so ``out``
may be one of them. ``POWI`` keeps its integer exponent in column ``c`` (not a slot);
``SELECT`` is ``s[a] if s[c] != 0 else s[b]``; comparisons and ``AND``/``OR``/``NOT`` write
1.0 or 0.0. Unused operand columns hold 0 (slot 0 exists and reading it is harmless).

Slot layout, fixed by the lowering (``symgrad.compile.tape``): the inputs first (slot k is
argument k), working slots next, the constants last (``run`` copies ``consts`` into the
tail of ``slots``). Every operation computes exactly what the generated flat code computes
for the same SymPy node: the helpers repeat ``templates/helpers.py.j2`` line for line, and
``POWI`` repeats Numba's exponentiation by squaring for ``x**n`` with a literal integer.

Nothing here depends on a model: the functions compile once per machine and load from
Numba's disk cache afterwards. Keep this module free of symgrad imports.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "ARITY",
    "OPCODES",
    "execute",
    "run",
    "value_and_grad_batch",
    "value_and_grad_point",
    "value_batch",
    "value_point",
]

#: Opcode of each operation, by name; how many slot operands it reads (from columns a, b, c).
_OPS = [
    ("COPY", 1), ("NEG", 1), ("ADD", 2), ("SUB", 2), ("MUL", 2), ("DIV", 2),
    ("POW", 2), ("POWI", 1), ("SQRT", 1), ("EXP", 1), ("LOG", 1), ("SIN", 1), ("COS", 1),
    ("TAN", 1), ("TANH", 1), ("SINH", 1), ("COSH", 1), ("ASIN", 1), ("ACOS", 1),
    ("ATAN", 1), ("ASINH", 1), ("ACOSH", 1), ("ATANH", 1), ("ERF", 1), ("ERFC", 1),
    ("ATAN2", 2), ("ABS", 1), ("FLOOR", 1), ("CEIL", 1), ("SIGMOID", 1), ("RELU", 1),
    ("LEAKY_RELU", 2), ("ELU", 2), ("SOFTPLUS", 1), ("SIGN", 1), ("HEAVISIDE", 2),
    ("MAX", 2), ("MIN", 2), ("LT", 2), ("LE", 2), ("GT", 2), ("GE", 2), ("EQ", 2),
    ("NE", 2), ("AND", 2), ("OR", 2), ("NOT", 1), ("SELECT", 3), ("EXPM1", 1),
    ("LOG1P", 1), ("LOG2", 1), ("LOG10", 1), ("GAMMA", 1), ("LGAMMA", 1),
    ("LOG_SIGMOID", 1), ("LOGADDEXP", 2),
]
OPCODES: dict[str, int] = {name: k for k, (name, _) in enumerate(_OPS)}
ARITY = np.array([n for _, n in _OPS], dtype=np.int32)

# Module-level ints: Numba freezes them into the compiled code as constants.
(COPY, NEG, ADD, SUB, MUL, DIV, POW, POWI, SQRT, EXP, LOG, SIN, COS, TAN, TANH, SINH, COSH,
 ASIN, ACOS, ATAN, ASINH, ACOSH, ATANH, ERF, ERFC, ATAN2, ABS, FLOOR, CEIL, SIGMOID, RELU,
 LEAKY_RELU, ELU, SOFTPLUS, SIGN, HEAVISIDE, MAX, MIN, LT, LE, GT, GE, EQ, NE, AND, OR, NOT,
 SELECT, EXPM1, LOG1P, LOG2, LOG10, GAMMA, LGAMMA, LOG_SIGMOID, LOGADDEXP) = range(len(_OPS))

_FLAGS = dict(cache=True, error_model="numpy")


@njit(**_FLAGS)
def _powi(x, n):
    """``x**n`` for an integer ``n`` exactly as Numba computes it for a literal ``n``."""
    if n > 0x10000 or n < -0x10000:
        return math.pow(x, float(n))
    invert = n < 0
    e = -n if invert else n
    r = 1.0
    while e != 0:
        if e & 1:
            r *= x
        e >>= 1
        x *= x
    return 1.0 / r if invert else r


@njit(**_FLAGS)
def execute(tape, start, stop, s):
    """Run rows ``start:stop`` of ``tape`` on the slot array ``s``."""
    for r in range(start, stop):
        op = tape[r, 0]
        x = s[tape[r, 2]]
        y = s[tape[r, 3]]
        # the most frequent operations first
        if op == MUL:
            v = x * y
        elif op == ADD:
            v = x + y
        elif op == SUB:
            v = x - y
        elif op == COPY:
            v = x
        elif op == NEG:
            v = -x
        elif op == DIV:
            v = x / y
        elif op == SIN:
            v = math.sin(x)
        elif op == COS:
            v = math.cos(x)
        elif op == EXP:
            v = math.exp(x)
        elif op == LOG:
            v = math.log(x)
        elif op == POWI:
            v = _powi(x, tape[r, 4])
        elif op == POW:
            v = x**y
        elif op == SQRT:
            v = math.sqrt(x)
        elif op == SELECT:
            v = x if s[tape[r, 4]] != 0.0 else y
        elif op == GT:
            v = 1.0 if x > y else 0.0
        elif op == LT:
            v = 1.0 if x < y else 0.0
        elif op == GE:
            v = 1.0 if x >= y else 0.0
        elif op == LE:
            v = 1.0 if x <= y else 0.0
        elif op == EQ:
            v = 1.0 if x == y else 0.0
        elif op == NE:
            v = 1.0 if x != y else 0.0
        elif op == TANH:
            v = math.tanh(x)
        elif op == SIGMOID:  # helpers.py.j2: sigmoid
            z = math.exp(-abs(x))
            q = 1.0 / (1.0 + z)
            v = q if x >= 0.0 else z * q
        elif op == RELU:
            v = 0.0 if x <= 0.0 else x
        elif op == LEAKY_RELU:
            v = y * x if x <= 0.0 else x
        elif op == ELU:
            v = y * math.expm1(x) if x <= 0.0 else x
        elif op == SOFTPLUS:
            v = (x if x > 0.0 else 0.0) + math.log1p(math.exp(-abs(x)))
        elif op == LOG_SIGMOID:  # helpers.py.j2: log_sigmoid
            v = (x if x < 0.0 else 0.0) - math.log1p(math.exp(-abs(x)))
        elif op == LOGADDEXP:  # helpers.py.j2: logaddexp (logsumexp is a fold of it)
            d = x - y
            if d != d:
                v = x + y
            else:
                v = (x if x > y else y) + math.log1p(math.exp(-abs(d)))
        elif op == SIGN:
            v = 1.0 if x > 0.0 else (-1.0 if x < 0.0 else x * 0.0)
        elif op == HEAVISIDE:
            v = 1.0 if x > 0.0 else (0.0 if x < 0.0 else (y if x == 0.0 else x))
        elif op == ABS:
            v = abs(x)
        elif op == MAX:
            v = max(x, y)
        elif op == MIN:
            v = min(x, y)
        elif op == TAN:
            v = math.tan(x)
        elif op == SINH:
            v = math.sinh(x)
        elif op == COSH:
            v = math.cosh(x)
        elif op == ASIN:
            v = math.asin(x)
        elif op == ACOS:
            v = math.acos(x)
        elif op == ATAN:
            v = math.atan(x)
        elif op == ASINH:
            v = math.asinh(x)
        elif op == ACOSH:
            v = math.acosh(x)
        elif op == ATANH:
            v = math.atanh(x)
        elif op == ERF:
            v = math.erf(x)
        elif op == ERFC:
            v = math.erfc(x)
        elif op == ATAN2:
            v = math.atan2(x, y)
        elif op == FLOOR:
            v = np.floor(x)
        elif op == CEIL:
            v = np.ceil(x)
        elif op == AND:
            v = 1.0 if (x != 0.0 and y != 0.0) else 0.0
        elif op == OR:
            v = 1.0 if (x != 0.0 or y != 0.0) else 0.0
        elif op == NOT:
            v = 1.0 if x == 0.0 else 0.0
        elif op == EXPM1:
            v = math.expm1(x)
        elif op == LOG1P:
            v = math.log1p(x)
        elif op == LOG2:
            v = math.log2(x)
        elif op == LOG10:
            v = math.log10(x)
        elif op == GAMMA:
            v = math.gamma(x)
        elif op == LGAMMA:
            v = math.lgamma(x)
        else:
            v = math.nan
        s[tape[r, 1]] = v


@njit(**_FLAGS)
def _load_consts(consts, s):
    base = s.shape[0] - consts.shape[0]
    for k in range(consts.shape[0]):
        s[base + k] = consts[k]


@njit(**_FLAGS)
def run(tape, consts, slots):
    """Run all of ``tape`` on ``slots`` (inputs already in place); ``consts`` fill the tail."""
    _load_consts(consts, slots)
    execute(tape, 0, tape.shape[0], slots)


@njit(**_FLAGS)
def value_point(tape, consts, n_slots, x, out_slot):
    """The output slot after running ``tape`` (the forward rows) at the point ``x``."""
    s = np.empty(n_slots)
    s[: x.shape[0]] = x
    run(tape, consts, s)
    return s[out_slot]


@njit(**_FLAGS)
def value_and_grad_point(tape, consts, n_slots, x, out_slot, grad_slots, grad):
    """Run the whole tape at ``x``; ``grad[j] = s[grad_slots[j]]``; return ``s[out_slot]``."""
    s = np.empty(n_slots)
    s[: x.shape[0]] = x
    run(tape, consts, s)
    for j in range(grad_slots.shape[0]):
        grad[j] = s[grad_slots[j]]
    return s[out_slot]


@njit(**_FLAGS)
def value_batch(tape, consts, n_slots, xs, out_slot, values):
    """``values[i]`` = output at the point ``xs[:, i]`` (one row of ``xs`` per input)."""
    value_and_grad_batch(tape, consts, n_slots, xs, out_slot, np.empty(0, dtype=np.int64),
                         values, np.empty((0, values.shape[0])))


@njit(**_FLAGS)
def value_and_grad_batch(tape, consts, n_slots, xs, out_slot, grad_slots, values, grads):
    """``values[i]`` = output at the point ``xs[:, i]`` (one row of ``xs`` per input) and
    ``grads[j, i]`` = gradient slot ``grad_slots[j]`` there (none for ``value_batch``)."""
    s = np.empty(n_slots)
    _load_consts(consts, s)
    n_in = xs.shape[0]
    for i in range(values.shape[0]):
        for k in range(n_in):
            s[k] = xs[k, i]
        execute(tape, 0, tape.shape[0], s)
        values[i] = s[out_slot]
        for j in range(grad_slots.shape[0]):
            grads[j, i] = s[grad_slots[j]]
