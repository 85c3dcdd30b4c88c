"""Program (assignment data) -> the source text of a standalone Python module.

The printer turns each assignment into one line; the template gives the module its
structure (imports, helpers, ``value``, ``value_and_grad``, a command-line entry point).
The template receives only printed lines and safe identifiers; original user names reach
the module only inside comments, escaped with ``ascii()`` so they cannot end the comment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sympy as sp

from .. import __version__
from ..graph import Graph, NameAllocator, Node
from ..rules import Program, lookup
from .printer import FlatCodePrinter
from .templates import environment

__all__ = ["GeneratedModule", "render"]


@dataclass(frozen=True)
class GeneratedModule:
    """The generated source and the pieces the listing is made of."""

    source: str
    forward: list[str]
    backward: list[str]
    params: list[str]
    wrt: list[str]
    output: str
    renamed: list[tuple[str, str]]


@dataclass(frozen=True)
class _UserFunction:
    name: str
    params: list[str]
    body: str


def render(
    graph: Graph, program: Program, params: Sequence[Node], wrt: Sequence[Node]
) -> GeneratedModule:
    """Print ``program`` and render the module template around it."""
    printer = FlatCodePrinter()
    forward = [printer.doprint(a) for a in program.forward]
    backward = [printer.doprint(a) for a in program.backward]
    user_functions = _user_functions(printer, graph)
    param_names = [n.name for n in params]
    wrt_names = [n.name for n in wrt]
    renamed = [(n.name, ascii(n.symbol.name)) for n in params if n.name != n.symbol.name]
    f64s = ", ".join("float64" for _ in params)
    source = environment().get_template("module.py.j2").render(
        version=__version__,
        output=program.output.name,
        params=param_names,
        wrt=wrt_names,
        grads=[g.name for g in program.grads],
        forward=forward,
        backward=backward,
        renamed=renamed,
        math_names=sorted(printer.math_names),
        helpers=printer.helpers,
        user_functions=user_functions,
        value_signature=f"float64({f64s})",
        value_and_grad_signature=(
            f"Tuple((float64, UniTuple(float64, {len(wrt)})))({f64s})"
        ),
    )
    return GeneratedModule(source, forward, backward, param_names, wrt_names,
                           program.output.name, renamed)


def _user_functions(printer: FlatCodePrinter, graph: Graph) -> list[_UserFunction]:
    """Helpers for user-registered functions, printed from their ``forward`` expressions."""
    if not printer.user_functions:
        return []
    done: dict[str, _UserFunction] = {}
    names = NameAllocator(n.name for n in graph.nodes)
    while len(done) < len(printer.user_functions):
        for name, (cls, arity) in list(printer.user_functions.items()):
            if name in done:
                continue
            if names.take(name) != name:
                raise ValueError(
                    f"the function name {name!r} is not a safe identifier or collides with a "
                    "symbol name; give the sympy.Function class a plain, distinct name"
                )
            args = [sp.Symbol(f"a{k}") for k in range(arity)]
            body = printer.doprint(lookup(cls).forward(*args))
            done[name] = _UserFunction(name, [a.name for a in args], body)
    return list(done.values())
