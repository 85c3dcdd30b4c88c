"""The one registry of derivative rules, keyed by node type.

A rule receives the node (``node.args``: the SymPy symbols or constants standing for its
inputs; ``node.shape``, ``node.dtype``), ``out`` (the symbol holding the node's own value, so
``exp`` and ``sigmoid`` reuse it) and ``grad_out`` (the symbol of the upstream gradient), and
returns one local adjoint per input: a SymPy expression, or ``None`` where no gradient flows.
Rules run with SymPy's automatic evaluation switched off, so an adjoint prints as written
(``grad_out*(1 - out)*out``); trivial factors are tidied away afterwards.

A user adds a rule for their own function in a few lines::

    class swish(sympy.Function):
        nargs = 1

    @symgrad.rule(swish, forward=lambda x: x * symgrad.sigmoid(x))
    def _swish(node, out, grad_out):
        (x,) = node.args
        s = symgrad.sigmoid(x)
        return (grad_out * (s + out * (1 - s)),)

``forward`` (an expression in supported functions) tells the emitter how to compute the
function itself; SymPy's own functions and symgrad's activations do not need one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sympy as sp

from ..errors import UnsupportedFunctionError

__all__ = ["NodeView", "Rule", "lookup", "registered", "rule"]


@dataclass(frozen=True)
class NodeView:
    """What a rule sees of a node: its operation, input symbols/constants, shape and dtype,
    and the shapes of its inputs (``()`` for scalars; rows may be the batch-size symbol)."""

    op: type
    args: tuple[sp.Basic, ...]
    shape: tuple = ()
    dtype: str = "float64"
    arg_shapes: tuple = ()


RuleFn = Callable[[NodeView, sp.Symbol, sp.Symbol], Sequence[sp.Expr | None]]


@dataclass(frozen=True)
class Rule:
    op: type
    fn: RuleFn
    forward: Callable[..., sp.Expr] | None = None


_RULES: dict[type, Rule] = {}


def rule(op: type, *, forward: Callable[..., sp.Expr] | None = None) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn(node, out, grad_out) -> adjoints`` as the derivative rule of ``op``.

    ``op`` is a SymPy class (``sympy.sin``, or a ``sympy.Function`` subclass of your own);
    registering again replaces the previous rule. ``forward`` builds the function's value from
    its arguments for functions the code printer does not know (your own ones).
    """
    if not (isinstance(op, type) and issubclass(op, sp.Basic)):
        raise TypeError(
            f"rule() takes a SymPy class such as sympy.sin or a sympy.Function subclass, got {op!r}"
        )

    def register(fn: RuleFn) -> RuleFn:
        _RULES[op] = Rule(op, fn, forward)
        return fn

    return register


def lookup(op: type) -> Rule:
    """The rule for ``op`` (or its nearest registered base class), else a helpful error."""
    for cls in op.__mro__:
        found = _RULES.get(cls)
        if found is not None:
            return found
        if cls in (sp.Function, sp.Expr, sp.Basic):
            break
    raise UnsupportedFunctionError(_missing_message(op))


def registered() -> list[type]:
    """The operations that currently have a rule."""
    return list(_RULES)


def _missing_message(op: type) -> str:
    name = getattr(op, "__name__", str(op))
    return (
        f"symgrad has no derivative rule for {name!r}. Register one (with how to compute the "
        f"function itself if SymPy cannot print it):\n\n"
        f"    @symgrad.rule({name}, forward=lambda x: <value of {name}(x) in known functions>)\n"
        f"    def _{name.lower()}(node, out, grad_out):\n"
        f"        (x,) = node.args\n"
        f"        return (grad_out * <d{name}/dx>,)\n\n"
        f"or rewrite the expression with supported functions (symgrad.rules.registered() "
        f"lists them)."
    )
