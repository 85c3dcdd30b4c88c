"""The annotated listing: every line of the flat code with its value at one point.

The program behind the listing (its SymPy assignments, one per line) is run as data, one
assignment after the other (``symgrad.emit.interpret`` computes each right-hand side as its
printed line does; no text is parsed or executed), which gives every intermediate and every
adjoint, including the partial sums of a fan-out's ``+=`` lines. A division by zero or the
log of a negative number gives inf or NaN as in the compiled code instead of a Python
exception; the trace then points at the first line that stopped being finite.
"""

from __future__ import annotations

import html
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import TYPE_CHECKING

import numpy as np
import sympy as sp
from sympy.codegen.ast import AddAugmentedAssignment

from ..emit import evaluate_line
from ..errors import InputError
from ..expression.evaluate import resolved, stored
from .source import Source, expression_text, source_of

__all__ = ["Trace", "TraceLine", "align_decimals", "execute", "format_number", "run", "trace"]

if TYPE_CHECKING:
    from ..compile import CompiledFunction
    from ..train import Model


@dataclass(frozen=True)
class TraceLine:
    """One line of the listing and the value its target holds after it ran.

    ``term`` is the value added by a ``+=`` line (a fan-out's contribution), else None.
    ``consumer`` is, for a backward line, the node whose adjoint it passes on (the line reads
    ``grad_<consumer>``), else None.
    """

    section: str
    code: str
    target: str
    value: float | bool
    term: float | None = None
    consumer: str | None = None


@dataclass(frozen=True)
class Trace:
    """The listing annotated with values at one point; ``str()`` is the terminal table.

    ``trace["s2"]`` or ``trace["grad_w0"]`` is a name's final value; :attr:`value` and
    :attr:`gradient` are the output and the gradient (keyed by the ``wrt`` symbols).
    """

    expr: sp.Expr
    point: dict[str, float]
    output: str
    wrt: dict[sp.Symbol, str]
    forward: tuple[TraceLine, ...]
    backward: tuple[TraceLine, ...]
    values: Mapping[str, float | bool] = field(repr=False)
    digits: int = 4

    def __getitem__(self, name: str) -> float | bool:
        return self.values[name]

    @property
    def value(self) -> float:
        return float(self.values[self.output])

    @property
    def gradient(self) -> dict[sp.Symbol, float]:
        return {s: float(self.values[f"grad_{name}"]) for s, name in self.wrt.items()}

    @property
    def lines(self) -> tuple[TraceLine, ...]:
        return self.forward + self.backward

    @property
    def first_nonfinite(self) -> TraceLine | None:
        """The first line whose value is NaN or infinite (where a NaN loss comes from)."""
        for line in self.lines:
            finite = getattr(line.value, "finite", None)
            if finite is None:
                finite = isinstance(line.value, bool) or math.isfinite(line.value)
            if not finite:
                return line
        return None

    def contributions(self) -> dict[tuple[str, str], float]:
        """``(consumer, input) ->`` the gradient that flows from ``consumer`` into ``input``.

        Every backward line adds ``grad_out * local`` of one consumer to one input's adjoint;
        for an input used once this is its whole adjoint, at a fan-out one term of the sum.
        """
        out: dict[tuple[str, str], float] = {}
        for line in self.backward:
            if line.consumer is None:
                continue
            key = (line.consumer, line.target[len("grad_"):])
            out[key] = out.get(key, 0.0) + (line.value if line.term is None else line.term)
        return out

    def header(self) -> str:
        at = ", ".join(f"{k}={_short(v)}" for k, v in self.point.items())
        return f"{self.output} = {expression_text(self.expr, 100)}  at  {_clip(at, 200)}"

    def format(self, digits: int | None = None, columns: bool = False) -> str:
        """The annotated listing: code, value (decimal points aligned), ``+=`` terms.

        ``columns=True`` puts forward and backward side by side, as on the slides.
        """
        digits = self.digits if digits is None else check_digits("digits", digits, 1)
        bad = self.first_nonfinite
        forward = [("# forward", None), *((line.code, line) for line in self.forward)]
        backward = [("# backward", None), *((line.code, line) for line in self.backward)]
        head = f"# {self.header()}"
        if not columns:
            return "\n".join([head, *_block([*forward, ("", None), *backward], digits, bad)]) + "\n"
        left, right = _block(forward, digits, bad), _block(backward, digits, bad)
        width = max(map(len, left)) + 4
        rows = zip_longest(left, right, fillvalue="")
        return "\n".join([head, *(f"{a:<{width}}{b}".rstrip() for a, b in rows)]) + "\n"

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return (f"<Trace {self.header()}: {len(self.forward)} forward, {len(self.backward)} "
                "backward lines>")

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(self.format())

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.format())}</pre>"


def trace(
    obj: CompiledFunction | Model, *args, sample: int | None = None, digits: int = 4, **kwargs
) -> Trace:
    """Run the flat code of a CompiledFunction or a Model at one point and keep every value.

    The point is given like a call of the function: positionally, by keyword (the symbols'
    names) or as one dict. For a Model the values are one sample's data (positionally in
    the order of its data columns) and the parameters default to the model's current ones
    (give them by name to override). ``sample=k`` takes entry ``k`` of data arrays instead.
    A symbol named ``sample`` or ``digits`` is given in the dict form.
    """
    check_digits("digits", digits, 1)
    source = source_of(obj)
    if source.matrix:
        from .arrays import run_arrays

        return run_arrays(source, args, kwargs, digits)
    return run(source, source.bind(args, kwargs, sample), digits)


def run(source: Source, point: dict[sp.Symbol, float], digits: int = 4) -> Trace:
    """Run ``source``'s program at ``point`` (a value for every input)."""
    safe = source.safe
    env = {sp.Symbol(safe[s]): np.float64(v) for s, v in point.items()}
    forward, backward = execute(source, env, evaluate_line, lambda value, section: _plain(value))
    values = {line.target: line.value for line in (*forward, *backward)}
    values.update({safe[s]: v for s, v in point.items()})
    return Trace(source.expr, {s.name: v for s, v in point.items()}, source.output,
                 {s: safe[s] for s in source.wrt}, forward, backward, values, digits)


def execute(source: Source, env: dict, evaluate, shown,
            rows: float | None = None) -> tuple[tuple[TraceLine, ...], ...]:
    """Run the program's assignments in order on ``env`` (symbol -> value, updated).

    ``evaluate(rhs, env)`` computes a right-hand side; ``shown(value, section)`` is what a
    :class:`TraceLine` keeps of a value. A matrix name keeps its shape (``program.shapes``,
    ``rows`` the batch size): a smaller value assigned to it is broadcast. Returns the
    forward and the backward lines.
    """
    program = source.program
    sections = []
    with np.errstate(all="ignore"):
        for section, assignments, codes in (("forward", program.forward, source.forward),
                                            ("backward", program.backward, source.backward)):
            done = []
            for a, code in zip(assignments, codes, strict=True):
                term = evaluate(a.rhs, env)
                added = isinstance(a, AddAugmentedAssignment)
                value = env[a.lhs] + term if added else term
                if program.shapes.get(a.lhs):
                    value = stored(value, resolved(program.shapes[a.lhs], rows))
                env[a.lhs] = value
                done.append(TraceLine(section, code, a.lhs.name, shown(value, section),
                                      shown(term, section) if added else None, _consumer(a)))
            sections.append(tuple(done))
    return sections[0], sections[1]


def _consumer(assignment) -> str | None:
    """The node whose adjoint a backward line reads (``grad_<node>``: no input is named so)."""
    grads = sorted(s.name for s in assignment.rhs.free_symbols if s.name.startswith("grad_"))
    return grads[0][len("grad_"):] if grads else None


def check_digits(name: str, digits, low: int) -> int:
    """``digits`` as an int in ``[low, 17]`` (17 significant digits show any float64)."""
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or not (
            low <= digits <= 17):
        raise InputError(f"{name} must be a whole number from {low} to 17, got {digits!r:.40}.")
    return int(digits)


def format_number(value: float | bool, digits: int = 4) -> str:
    """``digits`` significant digits, no trailing zeros: ``-2``, ``0.7311``, ``1.5e-08``."""
    if isinstance(value, bool):
        return str(value)
    if hasattr(value, "summary"):
        return value.summary(digits)
    text = f"{value:.{digits}g}"
    return "0" if text == "-0" else text


def _plain(value) -> float | bool:
    return value if isinstance(value, bool) else float(value)


def align_decimals(texts: list[str]) -> list[str]:
    """Pad numbers so that their decimal points (or last digits) line up."""
    split = [re.match(r"([^.e]*)(.*)", t).groups() for t in texts]
    left = max(len(a) for a, _ in split)
    right = max(len(b) for _, b in split)
    return [f"{a:>{left}}{b:<{right}}" if a or b else " " * (left + right) for a, b in split]


def _block(rows: list[tuple[str, TraceLine | None]], digits: int, bad: TraceLine | None):
    """Code, then the value with decimal points aligned, then notes (``+=`` term, first NaN)."""
    numbers = align_decimals([format_number(li.value, digits) if li else "" for _, li in rows])
    width = max(len(code) for code, _ in rows) + 3
    return [f"{code:<{width}}{number}{_note(li, digits, bad)}".rstrip()
            for (code, li), number in zip(rows, numbers)]


def _note(line: TraceLine | None, digits: int, bad: TraceLine | None) -> str:
    note = ""
    if line is None:
        return note
    if line.term is not None:
        note += f"   (+= {format_number(line.term, digits)})"
    if line is bad:
        note += "   <- first non-finite value"
    return note


def _short(value: float) -> str:
    return f"{value:.6g}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
