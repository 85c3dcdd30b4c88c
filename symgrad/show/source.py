"""What the show layer reads of a compiled function or a model, kept in one place.

Trace, picture, gradient check and notebook display need the same few things: the
expression, its graph and program (the assignments the listing prints), the flat lines, the
safe name of every input and the values at one point. A :class:`~symgrad.CompiledFunction`
and a :class:`~symgrad.Model` keep them in different places (a model's per-sample code lives
in its trainer module); this module is the only one that knows where, so everything else in
``symgrad.show`` treats both alike. It reads only their public attributes, and uses the
graph and program they hold (nothing is rebuilt).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from ..compile import CompiledFunction
from ..compile.inputs import real_number
from ..errors import InputError
from ..graph import Graph
from ..rules import Program
from ..train import ArrayModel, Model

__all__ = ["Source", "expression_text", "source_of"]


@dataclass(eq=False)
class Source:
    """A compiled function or a model, seen through what the show layer needs.

    ``inputs`` are every symbol a point gives a value to, in positional order (a model's
    data columns first, then its parameters); ``names`` their safe identifiers in the
    listing. ``wrt`` are the differentiated symbols (a model's parameters). ``defaults``
    holds values that a point may omit (a model's current parameters).
    """

    kind: str
    obj: object
    expr: sp.Expr
    forward: list[str]
    backward: list[str]
    output: str
    output_name: str
    inputs: tuple[sp.Symbol, ...]
    names: tuple[str, ...]
    wrt: tuple[sp.Symbol, ...]
    graph: Graph
    program: Program
    defaults: dict[sp.Symbol, float] = field(default_factory=dict)
    matrix: bool = False

    @property
    def safe(self) -> dict[sp.Symbol, str]:
        return dict(zip(self.inputs, self.names))

    @property
    def dtype(self) -> str:
        return self.graph.output.dtype

    def bind(
        self, args: tuple, kwargs: dict, sample: int | None = None
    ) -> dict[sp.Symbol, float]:
        """The point's value of every input, in :attr:`inputs` order.

        Values come positionally (in :attr:`inputs` order), by keyword (the symbols' names),
        or as one mapping keyed by symbols or names; :attr:`defaults` fill what is left.
        With ``sample=k`` the values are arrays (data columns) and entry ``k`` is used.
        """
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            args, kwargs = (), dict(args[0])
        signature = f"{self.output}({', '.join(s.name for s in self.inputs)})"
        if len(args) > len(self.inputs):
            raise InputError(f"{signature} takes {len(self.inputs)} values, got {len(args)}.")
        given: dict[sp.Symbol, object] = dict(zip(self.inputs, args))
        by_key = _keys(self.inputs, self.names)
        for key, value in kwargs.items():
            s = by_key.get(key)
            if s is None:
                raise InputError(f"unexpected argument {_label(key)}; {signature} takes "
                                 f"{', '.join(s.name for s in self.inputs)}.")
            if s in given:
                raise InputError(f"{_label(key)} was given twice.")
            given[s] = value
        missing = [s.name for s in self.inputs if s not in given and s not in self.defaults]
        if missing:
            raise InputError(f"missing value for {', '.join(missing)}; {signature} needs a "
                             "number for every input.")
        out = {}
        for s in self.inputs:
            out[s] = _scalar(s, _pick(s, given[s], sample) if s in given else self.defaults[s])
        return out


def source_of(obj: object) -> Source:
    """The :class:`Source` of a CompiledFunction or a Model (else a TypeError)."""
    if isinstance(obj, CompiledFunction):
        g = obj.generated
        return Source("function", obj, obj.expr, g.forward, g.backward, g.output, g.output,
                      obj.inputs, tuple(g.params), obj.wrt, obj.ir, obj.program)
    if isinstance(obj, ArrayModel):
        from .arrays import array_source  # it builds on this module

        return array_source(obj)
    if isinstance(obj, Model):
        return _model_source(obj)
    raise TypeError(f"expected a symgrad CompiledFunction or Model, got {type(obj).__name__}; "
                    "compile an expression first with symgrad.compile(expr, wrt=[...]).")


def _model_source(model: Model) -> Source:
    # A model's per-sample lines are those of its trainer for the current optimizer.
    generated = model.generated
    nodes = (*model.data_nodes, *model.param_nodes)
    return Source("model", model, model.loss, generated.forward, generated.backward,
                  generated.output, model.name, tuple(n.symbol for n in nodes),
                  tuple(n.name for n in nodes), tuple(n.symbol for n in model.param_nodes),
                  model.ir, model.program, defaults=model.params)


def _keys(inputs: Sequence[sp.Symbol], names: Sequence[str]) -> dict:
    keys: dict = {}
    for s, safe in zip(inputs, names):
        keys[s] = s
        for key in {s.name, safe}:
            keys.setdefault(key, s)
    return keys


def _label(key) -> str:
    return repr(key.name) if isinstance(key, sp.Symbol) else repr(key)


def _pick(symbol: sp.Symbol, value, sample: int | None):
    if sample is None:
        return value
    a = np.asarray(value)
    if a.ndim != 1:
        return value
    if not -a.shape[0] <= sample < a.shape[0]:
        raise InputError(f"sample {sample} is out of range: {symbol.name} has {a.shape[0]} "
                         "values.")
    return a[sample]


def _scalar(symbol: sp.Symbol, value) -> float:
    shape = getattr(value, "shape", None)
    if shape:
        raise InputError(f"{symbol.name} got an array of shape {shape}; give one number "
                         "(or pass sample=k to pick entry k of data arrays).")
    return real_number(symbol.name, value)  # the compiled function's rule for numbers


def expression_text(expr: sp.Basic, limit: int = 100) -> str:
    """``str(expr)`` clipped to ``limit`` characters, without printing a huge tree first.

    A shared expression can be exponentially larger as a tree than as a graph, so the tree
    is counted (up to a bound) before SymPy prints it.
    """
    size = 0
    for _ in sp.preorder_traversal(expr):
        size += 1
        if size > 4 * limit:
            return f"<expression of more than {4 * limit} terms>"
    text = str(expr)
    return text if len(text) <= limit else text[: limit - 3] + "..."
