"""Stable rewrites: the plain forms that overflow, replaced by symgrad's stable functions.

Written out by hand, a sigmoid, a log-sigmoid, a softplus or a log-sum-exp computes
``exp`` of its argument, which overflows past |x| ~ 709: ``1/(1 + exp(-x))`` at x = -1000
is 0, but its gradient is ``inf*0 = NaN``; ``log(1 + exp(x))`` at x = 1000 is inf. The
stable functions give finite values and gradients for every finite input.
:func:`stabilize` finds these forms in whatever shape SymPy stored them and rewrites them:

===========================================  ================================================
plain form (and scaled/shifted variants)     stable form
===========================================  ================================================
``1/(1 + exp(-u))``, ``1/(c + k*exp(-u))``   ``sigmoid(u)`` (shifted, scaled)
``exp(u)/(1 + exp(u))``                      ``sigmoid(u)``
``1 - sigmoid(u)``                           ``sigmoid(-u)``
``log(sigmoid(u))``                          ``log_sigmoid(u)``
``log(1 + exp(u))``                          ``softplus(u)``
``log(c1*exp(u1) + ... + cn*exp(un) + c0)``  ``logsumexp(u1 + log(c1), ..., log(c0))``
``log(exp(u))``                              ``u``
``log(sum(exp(Z), axis=1))`` (matrix Z)      ``sum(softmax(Z)*(Z - log_softmax(Z)), axis=1)``
===========================================  ================================================

(``c``, ``ci`` positive numbers; a log of a product or power of such sums becomes a sum of
their logs.) Everything else is returned as it is, node for node. The walk is iterative
(post-order, memoized on SymPy nodes), so deep expressions are fine, and children are
rewritten before their parents: ``log(1/(1 + exp(-x)))`` becomes ``sigmoid(x)`` inside,
then ``log_sigmoid(x)``. Matrix models' lowered expressions are plain SymPy too, so the
same rewrites apply to them entry by entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .arrays import log_softmax, rowsum, softmax
from .functions import log_sigmoid, logsumexp, sigmoid, softplus
from .validate import _small

__all__ = ["Rewrite", "rewrites", "stabilize"]


@dataclass(frozen=True)
class Rewrite:
    """One plain form found: the ``original`` subexpression, its ``stable`` replacement, and
    ``advice`` for a user who writes it by hand (``"write sg.softplus(x) instead of ..."``)."""

    original: sp.Basic
    stable: sp.Basic
    advice: str


def stabilize(expr: sp.Basic) -> sp.Basic:
    """``expr`` with every plain unstable form replaced by its stable form (see the module
    docstring); an expression without one comes back unchanged (the same object)."""
    return rewrites(expr)[0]


def rewrites(expr: sp.Basic) -> tuple[sp.Basic, list[Rewrite]]:
    """The stabilized expression and the rewrites made, innermost first."""
    found: list[Rewrite] = []
    memo: dict[sp.Basic, sp.Basic] = {}
    stack: list[tuple[sp.Basic, bool]] = [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if e in memo:
            continue
        if not e.args:
            memo[e] = e
        elif not ready:
            stack.append((e, True))
            stack.extend((a, False) for a in reversed(e.args) if a not in memo)
        else:
            args = [memo[a] for a in e.args]
            rebuilt = e if all(a is b for a, b in zip(args, e.args)) else e.func(*args)
            rule = _RULES.get(type(rebuilt))
            match = rule(rebuilt) if rule is not None else None
            if match is None:
                memo[e] = rebuilt
            else:
                stable, helper, plain = match
                memo[e] = stable
                found.append(Rewrite(e, stable, _advice(e, stable, helper, plain)))
    return memo[expr], found


#: A rule takes a node whose children are done and returns None (not a plain form) or
#: ``(stable form, the symgrad function it uses, the plain form in words)``.
Match = tuple[sp.Basic, str | None, str] | None


def _positive_exp(term: sp.Basic) -> sp.Basic | None:
    """``u`` with ``term == exp(u)``, for ``term`` a positive number times exponentials."""
    c, rest = term.as_coeff_Mul()
    factors = sp.Mul.make_args(rest)
    if not c.is_positive:
        return None
    if rest is sp.S.One:
        u = sp.S.Zero
    elif all(isinstance(f, sp.exp) for f in factors):
        u = sp.Add(*[f.args[0] for f in factors])
    else:
        return None
    return u if c == 1 else u + sp.log(c)


def _one_plus_exp(e: sp.Basic) -> tuple[sp.Basic, sp.Basic] | None:
    """``(c, u)`` if ``e == c*(1 + exp(u))``: ``e`` is a number ``c > 0`` plus a positive
    multiple of exponentials (``c + k*exp(v)``, so ``u = v + log(k/c)``); else None."""
    if not isinstance(e, sp.Add) or len(e.args) != 2:
        return None
    c, other = e.as_coeff_Add()
    if not (c.is_positive and other.has(sp.exp)):
        return None
    u = _positive_exp(other)
    return None if u is None else (c, u - sp.log(c))


def _reciprocal(e: sp.Pow) -> Match:
    """``(c*(1 + exp(u)))**k`` with a number k < 0: ``sigmoid(-u)**(-k) * c**k``."""
    base, k = e.args
    if not (k.is_Number and k.is_negative):
        return None
    match = _one_plus_exp(base)
    if match is None:
        return None
    c, u = match
    return sigmoid(-u) ** (-k) * c**k, "sigmoid", "sg.sigmoid(x) instead of 1/(1 + exp(-x))"


def _ratio(e: sp.Mul) -> Match:
    """``exp(u)*sigmoid(-u)`` (what ``exp(u)/(1 + exp(u))`` became): ``sigmoid(u)``."""
    factors = list(e.args)
    exps = {f.args[0]: k for k, f in enumerate(factors) if isinstance(f, sp.exp)}
    for k, f in enumerate(factors):
        if isinstance(f, sigmoid) and -f.args[0] in exps:
            u = -f.args[0]
            j = exps[u]
            rest = [g for i, g in enumerate(factors) if i not in (j, k)]
            return (sp.Mul(sigmoid(u), *rest), "sigmoid",
                    "sg.sigmoid(x) instead of exp(x)/(1 + exp(x))")
    return None


def _complement(e: sp.Add) -> Match:
    """``c*(1 - sigmoid(u))``: ``c*sigmoid(-u)`` (1 - sigmoid(u) rounds to 0 for u > 37)."""
    if len(e.args) != 2:
        return None
    c, rest = e.primitive()
    if not (c.is_positive and isinstance(rest, sp.Add) and sp.S.One in rest.args):
        return None
    (other,) = [a for a in rest.args if a is not sp.S.One]
    coeff, term = other.as_coeff_Mul()
    if coeff != -1 or not isinstance(term, sigmoid):
        return None
    return c * sigmoid(-term.args[0]), "sigmoid", "sg.sigmoid(-x) instead of 1 - sigmoid(x)"


def _log(e: sp.log) -> Match:
    """log of a sigmoid, of sums of exponentials, and of products and powers of them."""
    (arg,) = e.args
    parts = _log_parts(arg)
    if parts is None:
        return None
    stable = sp.Add(*parts)
    if stable == e:
        return None
    kinds = {type(part.as_coeff_Mul()[1]) for part in parts}  # each part is c*function
    for cls, plain in _LOG_ADVICE:
        if cls in kinds:
            return stable, None if cls is rowsum else cls.__name__, plain
    return stable, "", "x instead of log(exp(x))"


def _row_logsumexp(u: sp.Basic) -> sp.Basic:
    """``log(sum(exp(u), axis=1))`` of a matrix ``u``, from the stable row-wise softmax and
    log-softmax: each entry of ``u - log_softmax(u)`` is its row's log-sum-exp, so their
    softmax-weighted row sum is too (the weights sum to 1), and so is its derivative."""
    return rowsum(softmax(u) * (u - log_softmax(u)))


_LOG_ADVICE = (
    (log_sigmoid, "sg.log_sigmoid(x) instead of log(sigmoid(x))"),
    (softplus, "sg.softplus(x) instead of log(1 + exp(x))"),
    (logsumexp, "sg.logsumexp(a, b, ...) instead of log(exp(a) + exp(b) + ...)"),
    (rowsum, "sg.log_softmax(Z) or sg.softmax_cross_entropy instead of "
             "log(sum(exp(Z), axis=1))"),
)


def _log_parts(arg: sp.Basic) -> list[sp.Basic] | None:
    """``log(arg)`` as a sum of stable terms, if ``arg`` is a product of (powers of) positive
    numbers, ``exp(u)``, sigmoids, positive sums of exponentials and row sums of an
    exponential (in a matrix model); else None."""
    parts: list[sp.Basic] = []
    for factor in sp.Mul.make_args(arg):
        power = sp.S.One
        if isinstance(factor, sp.Pow) and factor.exp.is_Number:
            factor, power = factor.base, factor.exp
        if factor.is_Number and factor.is_positive:
            parts.append(power * sp.log(factor))
        elif isinstance(factor, sp.exp):
            parts.append(power * factor.args[0])
        elif isinstance(factor, sigmoid):
            parts.append(power * log_sigmoid(factor.args[0]))
        elif isinstance(factor, rowsum) and isinstance(factor.args[0], sp.exp):
            parts.append(power * _row_logsumexp(factor.args[0].args[0]))
        elif isinstance(factor, sp.Add) and factor.has(sp.exp):
            exponents = [_positive_exp(t) for t in factor.args]
            if any(u is None for u in exponents):
                return None
            parts.append(power * _sum_of_exps(exponents))
        else:
            return None
    return parts


def _sum_of_exps(exponents: list[sp.Basic]) -> sp.Basic:
    """``log(exp(u1) + ... + exp(un))``: softplus for ``1 + exp(u)``, else logsumexp."""
    if len(exponents) == 2 and sp.S.Zero in exponents:
        (u,) = [v for v in exponents if v != 0]
        return softplus(u)
    return logsumexp(*exponents)


_RULES = {sp.Pow: _reciprocal, sp.Mul: _ratio, sp.Add: _complement, sp.log: _log}


def _advice(original: sp.Basic, stable: sp.Basic, helper: str | None, plain: str) -> str:
    """``plain`` made concrete when both forms print short: ``softplus(2*x) instead of
    log(exp(2*x) + 1)`` (symgrad's functions prefixed ``sg.``); ``helper=None``: ``plain``."""
    a, b = _short(stable), _short(original)
    if a is None or b is None or helper is None:
        return f"write {plain}"
    if helper:
        a = a.replace(f"{helper}(", f"sg.{helper}(")
    return f"write {a} instead of {b}"


def _short(e: sp.Basic, budget: int = 40, limit: int = 60) -> str | None:
    """``e`` printed, or None if it is large (a swollen DAG prints exponentially)."""
    if not _small(e, budget):
        return None
    text = sp.sstr(e)
    return text if len(text) <= limit else None
