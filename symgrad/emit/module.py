"""Program (assignment data) -> the source text of a standalone Python module.

The printer turns each assignment into one line; the templates give the module its
structure: ``module.py.j2`` for a compiled function (``value``, ``value_and_grad``, their
batched forms, a command-line entry point), ``trainer.py.j2`` for a compiled training loop.
Templates receive only printed lines and safe identifiers; original user names reach the
module only inside comments, escaped with ``ascii()`` so they cannot end the comment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sympy as sp
from sympy.codegen.ast import AddAugmentedAssignment, Assignment

from .._version import __version__
from ..graph import Graph, NameAllocator, Node
from ..kernels import fingerprint
from ..kernels import standalone as kernel_source
from ..rules import Program, Tangent, lookup
from .printer import FLOAT_ROUNDING, FlatCodePrinter
from .templates import environment

__all__ = ["FAST_MATH_NAMES", "GeneratedModule", "math_context", "render", "render_trainer"]

#: Math functions replaced by vectorizable pure-arithmetic versions, exact over their domain.
FAST_MATH_NAMES = ("exp", "log", "sin", "cos", "tanh", "log1p", "expm1")
#: Replaced in loops over samples only, by versions that return NaN past a range limit; a
#: block whose sums come out NaN is recomputed with libm (the ``exact`` lines).
FAST_RANGE_NAMES = ("sin", "cos")
#: Replaced in loops over samples only, by cheaper versions for the whole domain (within 1 ulp
#: too, a little less close than the others): a loop over samples is bound by instructions.
FAST_LOOP_NAMES = ("exp",)
#: Block kernels carry a factor the same for every sample (see ``_scaled_sums``) while it is
#: a product of at most this many parameters: a deep chain of layers (``grad_h = grad_s*w``,
#: layer after layer) would otherwise carry the product of all its weights, one name per
#: layer, each printed in full before the loop (quadratic in the depth) and able to overflow
#: where the per-sample products it was split from do not.
FACTOR_PARAMS_UP_TO = 4
_HELPER_MATH = {"sigmoid": {"exp"}, "softplus": {"exp", "log1p"}, "elu": {"expm1"},
                "log_sigmoid": {"exp", "log1p"}, "logsumexp": {"exp", "log1p"}}


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
    tangent: list[str] = ()  # second order: the tangent lines (rendered with ``tangent=``)


@dataclass(frozen=True)
class _UserFunction:
    name: str
    params: list[str]
    body: str


def version() -> str:
    """What a generated module's first line says made it: symgrad's version and the
    fingerprint of the kernels it imports (so its content hash changes with them)."""
    return f"{__version__} (kernels {fingerprint()})"


def _printed(
    graph: Graph, program: Program, inputs: Sequence[Node], fast_math: bool, ranged: bool = False,
    kernels: dict[str, list[str]] | None = None, standalone: bool = False,
    tangent: Tangent | None = None,
) -> dict:
    """Print the program and collect what every template needs around the lines.

    With ``ranged``, sin/cos become range-limited fast versions too, and the lines are also
    printed with ``math.``-qualified names (``exact_forward``/``exact_backward``) for the
    libm fallback. ``kernels`` and ``standalone``: see :func:`math_context`. ``tangent``
    adds the second-order lines (``tangent``, ``tangent_inputs``, ``tangent_outputs``).
    """
    printer = FlatCodePrinter()
    forward = [printer.doprint(a) for a in program.forward]
    backward = [printer.doprint(a) for a in program.backward]
    tangent_lines = [printer.doprint(a) for a in tangent.lines] if tangent else []
    context = math_context(printer, graph, fast_math, ranged, kernels=kernels,
                           standalone=standalone)
    exact = (FlatCodePrinter({"fully_qualified_modules": True})
             if context["fast_range_names"] else None)
    return dict(
        context,
        version=version(),
        output=program.output.name,
        grads=[g.name for g in program.grads],
        forward=forward,
        backward=backward,
        renamed=[(n.name, ascii(n.symbol.name)) for n in inputs if n.name != n.symbol.name],
        exact_forward=[exact.doprint(a) for a in program.forward] if exact else [],
        exact_backward=[exact.doprint(a) for a in program.backward] if exact else [],
        tangent=tangent_lines,
        exact_tangent=[exact.doprint(a) for a in tangent.lines] if exact and tangent else [],
        tangent_inputs=[s.name for s in tangent.inputs] if tangent else [],
        tangent_outputs=[s.name for s in tangent.outputs] if tangent else [],
    )


def math_context(printer: FlatCodePrinter, graph: Graph, fast_math: bool, ranged: bool = False,
                 extra: set[str] = frozenset(), kernels: dict[str, list[str]] | None = None,
                 standalone: bool = False, loops: bool = False) -> dict:
    """What the prelude needs after ``printer`` printed a module's code: math imports,
    helpers, user functions, which math names become vectorizable versions, and the names
    the module takes from symgrad's kernel library.

    ``loops`` (a module of loops over samples, such as a matrix model's) takes the cheaper
    versions of ``FAST_LOOP_NAMES`` too (``ranged`` implies it).
    ``extra`` adds math names used by template code the printer did not print; ``kernels``
    maps kernel modules to the names the template uses from them. The module imports them
    from ``symgrad.kernels``, or with ``standalone`` carries a copy of their source, so that
    it runs with NumPy and Numba alone.
    """
    user_functions = _user_functions(printer, graph)  # first: their bodies use math names too
    math_names = set(printer.math_names) | set(extra)
    for helper in printer.helpers:
        math_names |= _HELPER_MATH.get(helper, set())
    fast = sorted(math_names & set(FAST_MATH_NAMES)) if fast_math else []
    fast_range = sorted(set(fast) & set(FAST_RANGE_NAMES)) if ranged else []
    loop_names = FAST_LOOP_NAMES if ranged or loops else ()
    fast_loop = sorted(set(fast) & set((FAST_RANGE_NAMES if ranged else ()) + loop_names))
    imports = dict(kernels or {})
    vectorized = [f"v{n}" for n in fast if n not in fast_loop] + [f"v{n}_fast" for n in fast_loop]
    if vectorized:
        imports = {"vecmath": vectorized, **imports}
    return dict(
        math_names=sorted(math_names - set(fast) - set(FLOAT_ROUNDING)),
        numpy_names=sorted(math_names & set(FLOAT_ROUNDING)),
        helpers=printer.helpers,
        user_functions=user_functions,
        fast_math=bool(fast),
        fast_math_names=[n for n in fast if n not in fast_loop],
        fast_range_names=fast_range,
        fast_loop_names=fast_loop,
        numba_names=["njit"],  # what the prelude imports from numba; a template may add
        kernel_imports=list(imports.items()),
        kernel_source=kernel_source(tuple(imports)) if standalone and imports else "",
    )


def render(
    graph: Graph,
    program: Program,
    params: Sequence[Node],
    wrt: Sequence[Node],
    fast_math: bool = False,
    standalone: bool = False,
    tangent: Tangent | None = None,
) -> GeneratedModule:
    """Print ``program`` and render the compiled-function module around it; with
    ``tangent`` (see ``symgrad.rules.linearize``) it also has the second-order kernels
    ``hvp_array`` and ``hessian_array``."""
    context = _printed(graph, program, params, fast_math, standalone=standalone,
                       tangent=tangent)
    source = environment().get_template("module.py.j2").render(
        context,
        params=[n.name for n in params],
        wrt=[n.name for n in wrt],
        uses_numpy=False,
    )
    return GeneratedModule(source, context["forward"], context["backward"],
                           [n.name for n in params], [n.name for n in wrt],
                           context["output"], context["renamed"], context["tangent"])


def render_trainer(
    graph: Graph,
    program: Program,
    params: Sequence[Node],
    data: Sequence[Node],
    fast_math: bool = False,
    standalone: bool = False,
    tangent: Tangent | None = None,
) -> GeneratedModule:
    """Render the training module: the per-sample flat code as the block kernel of
    ``symgrad.kernels.trainer``'s loop (which is the same for every model). With ``tangent``
    it also has ``hvp_block``/``hvp_exact``: blocks whose parameter array is the parameters
    followed by the direction ``v`` and which sum loss, gradient and ``H v`` over samples."""
    context = _printed(graph, program, [*params, *data], fast_math, ranged=True,
                       kernels={"loops": ["accumulate"], "trainer": ["BLOCK"]},
                       standalone=standalone, tangent=tangent)
    lines, factors, scales = _scaled_sums(program, params)
    printer = FlatCodePrinter()
    exact = FlatCodePrinter({"fully_qualified_modules": True})  # the libm fallback block
    source = environment().get_template("trainer.py.j2").render(
        context,
        params=[n.name for n in params],
        data=[n.name for n in data],
        uses_numpy=False,
        numba_names=["cfunc", "njit", "uint64"],
        block_backward=[printer.doprint(a) for a in lines],
        exact_block_backward=[exact.doprint(a) for a in lines] if context["exact_forward"] else [],
        factors=[(n, printer.doprint(f)) for n, f in factors],
        scales=scales,
    )
    return GeneratedModule(source, context["forward"], context["backward"],
                           [n.name for n in params], [n.name for n in params],
                           context["output"], context["renamed"], context["tangent"])


def _scaled_sums(program: Program, params: Sequence[Node]):
    """The backward lines of a block kernel with constant factors taken out of its sums.

    A factor of an adjoint that is the same for every sample (numbers and parameters:
    ``grad_s10 = 2*grad_loss*s10``, ``grad_s7 = grad_s10*a``) is carried along instead of
    multiplied in, through every line that only multiplies that adjoint by more factors,
    and multiplies the sample sum once after the loop: W4's per-sample ``2*s10`` and
    ``*a`` go. A line that adds adjoints (or an adjoint accumulated with ``+=``) gets the
    factors back in, as the names computed before the loop, and so does a line that would
    make a factor a product of more than ``FACTOR_PARAMS_UP_TO`` parameters (its adjoint
    then starts afresh, unscaled). Returns the lines, the
    factors before the loop as (name, expression) and each sum's factor name or None
    (the loss's first, then the gradient's in ``program.grads`` order); the sums equal
    the plain program's up to rounding (a product of sums for a sum of products)."""
    names = {n.name for n in params}
    augmented = {a.lhs for a in program.backward if isinstance(a, AddAugmentedAssignment)}
    scale: dict[sp.Symbol, sp.Expr] = {}
    named: dict[sp.Expr, sp.Symbol] = {}

    def name(factor: sp.Expr) -> sp.Symbol:
        if factor not in named:
            named[factor] = sp.Symbol(f"_scale{len(named)}")
        return named[factor]

    def split(rhs: sp.Expr):
        if rhs.is_Number:
            return None
        factor, kept = sp.Integer(1), []
        for arg in (rhs.args if rhs.is_Mul else (rhs,)):
            if arg.is_Number or (arg.is_Symbol and arg.name in names):
                factor *= arg
            elif arg in scale:
                factor *= scale[arg]
                kept.append(arg)
            elif arg.free_symbols & scale.keys():
                return None
            else:
                kept.append(arg)
        if len(factor.free_symbols) > FACTOR_PARAMS_UP_TO:
            return None
        return factor, (sp.Mul(*kept) if kept else sp.Float(1.0))

    lines = []
    for a in program.backward:
        parts = None if a.lhs in augmented else split(a.rhs)
        if parts is None:  # the factors go back in
            back = {g: name(f) * g for g, f in scale.items() if g in a.rhs.free_symbols}
            lines.append(type(a)(a.lhs, a.rhs.xreplace(back)))
            continue
        factor, rest = parts
        if factor != 1:
            scale[a.lhs] = factor
        lines.append(Assignment(a.lhs, rest))
    sums = [None] + [name(scale[g]) if g in scale else None for g in program.grads]
    return (lines, [(s.name, f) for f, s in named.items()],
            [None if s is None else s.name for s in sums])


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
