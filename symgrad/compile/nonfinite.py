"""Why a result is not finite: the first listing line that overflowed, and the stable form.

A compiled function checks only that the numbers it returns are finite (one ``sum`` of
them, on the hot path). When they are not although every input is, :func:`explain` runs
the program as data (``symgrad.emit.evaluate_line``: the value each printed line computes,
no text is run) to find the first line whose value became inf or NaN, and looks for plain
unstable forms in the expression (``symgrad.expression.rewrites``) whose value or whose
``exp`` overflows at this point, to name the stable function to write instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import sympy as sp
from sympy.codegen.ast import AddAugmentedAssignment

from ..emit import evaluate_line
from ..errors import SymgradError
from ..expression import rewrites
from ..expression.validate import walk

__all__ = ["NonFiniteWarning", "explain"]

#: What evaluating an expression as data may raise (an unknown form, a very deep tree): the
#: warning then says less, it never fails the call that triggered it.
_CANNOT = (SymgradError, RecursionError, KeyError, TypeError, ValueError)


class NonFiniteWarning(RuntimeWarning):
    """A compiled function returned inf or NaN (value or gradient) at finite inputs.

    Given once per compiled function; the message names the first listing line that became
    non-finite and, where the expression has one, the stable form to write instead (or
    ``sg.compile(..., stabilize=True)``, which rewrites it).
    """


def explain(f, point: Sequence[float], value: float, grads: Sequence[float] | None,
            where: str = "") -> str:
    """The warning text for ``f`` (a CompiledFunction) at ``point`` (its inputs' values),
    where it returned ``value`` and ``grads`` (None: the value alone was computed)."""
    output = f.generated.output
    if not math.isfinite(value):
        head = f"{output} is {_word(value)} {where or 'at this point'}"
    else:
        bad = [s.name for s, g in zip(f.wrt, grads or ()) if not math.isfinite(g)]
        head = (f"the gradient of {output} is not finite (for {', '.join(bad)}) "
                f"{where or 'at this point'}")
    head += " although every input is finite"
    try:
        line = _first_nonfinite_line(f, point, grads is not None)
    except _CANNOT:
        line = None
    if line is not None:
        head += f": line `{line[0]}` is the first that became {_word(line[1])}"
    advice = _advice(f.expr, dict(zip(f.inputs, point)))
    if advice:
        return f"{head}; {advice}, or compile with stabilize=True."
    return (f"{head} (e.g. an exp that overflows, log of 0 or of a negative value, 0/0 or "
            "inf - inf); check the inputs' domain.")


def _word(value: float) -> str:
    return "NaN" if value != value else ("inf" if value > 0 else "-inf")


def _first_nonfinite_line(f, point: Sequence[float], backward: bool) -> tuple[str, float] | None:
    """The first printed line whose value is not finite, and that value."""
    program, printed = f.program, f.generated
    env = {sp.Symbol(name): np.float64(v) for name, v in zip(f.generated.params, point)}
    sections = [(program.forward, printed.forward)]
    if backward:
        sections.append((program.backward, printed.backward))
    with np.errstate(all="ignore"):
        for assignments, codes in sections:
            for a, code in zip(assignments, codes, strict=True):
                value = evaluate_line(a.rhs, env)
                if isinstance(a, AddAugmentedAssignment):
                    value = env[a.lhs] + value
                env[a.lhs] = value
                if not isinstance(value, bool) and not math.isfinite(value):
                    return code, float(value)
    return None


def _advice(expr: sp.Basic, point: dict) -> str:
    """What to write instead, for the plain forms in ``expr`` that misbehave at ``point``."""
    _, found = rewrites(expr)
    values = {s: np.float64(v) for s, v in point.items()}
    advice = []
    with np.errstate(all="ignore"):
        for r in found:
            probes = [r.original, *(e for e in walk(r.original) if isinstance(e, sp.exp))]
            try:
                bad = any(not math.isfinite(evaluate_line(p, values)) for p in probes)
            except _CANNOT:  # a form the line interpreter cannot evaluate: no advice from it
                bad = False
            if bad and r.advice not in advice:
                advice.append(r.advice)
    return "; ".join(advice)
