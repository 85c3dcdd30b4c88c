"""Safe, deterministic identifiers for the names users give their symbols.

Symbol names end up as Python identifiers in generated code, so they are untrusted input:
anything that is not a plain ASCII identifier is rewritten, keywords and every name the
generated module itself uses get a trailing ``_``, and two symbols that would end up with
the same identifier are told apart with ``_2``, ``_3``, ... A name longer than
:data:`MAX_LENGTH` keeps its first characters and gets a short hash of the whole name
(Numba's LLVM argument names break on very long identifiers: two 1,500-character names that
share a prefix were a "redefinition of argument"). The generated code reserves
``s<k>`` for intermediates, ``grad_<name>`` for adjoints and ``dot_<name>`` for tangents
(second order); user names never take those
shapes, so no generated name can collide with a user's.
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
import re
import unicodedata
from collections.abc import Iterable

__all__ = ["GENERATED_CODE_NAMES", "MAX_LENGTH", "NameAllocator", "identifier"]

#: Names the generated module binds or calls: math functions, helpers, module-level names,
#: and the public names of symgrad.kernels (a saved module carries a copy of them).
GENERATED_CODE_NAMES = frozenset(
    """
    acos acosh asin asinh atan atan2 atanh ceil copysign cos cosh erf erfc exp expm1 fabs
    floor gamma inf isinf isnan lgamma log log10 log1p log2 nan pi sin sinh sqrt tan tanh
    sigmoid relu leaky_relu elu softplus sign heaviside log_sigmoid logsumexp logaddexp
    literal_unroll
    math np numpy numba njit cfunc prange value value_and_grad gradient INPUTS WRT OUTPUT
    KIND block exact HAS_EXACT
    vexp vexp_fast vexpm1 vtanh vlog vlog1p vsin vcos vsin_fast vcos_fast SIN_FAST_LIMIT
    finite permute accumulate claim view2d cgutils impl_ret_borrowed chunk CHUNK_LAYOUT
    SUMS KINDS update end_epoch DONE DIVERGED EARLY_STOPPING relayout
    BLOCK BLOCK_SIZE CHUNKS block_sums loss_and_grad_sum loss_sum train float64 int64 uint64
    gemm SPLIT_FROM update_halves HALVES_FROM
    types
    hvp_array hessian_array hvp_block hvp_exact
    """.split()
)

_RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(
    dir(builtins)
) | GENERATED_CODE_NAMES
_INTERMEDIATE = re.compile(r"s\d+")

#: Longest identifier made from a user's name: its first characters, ``_`` and 12 hex
#: digits of the name's SHA-256 (so names that share a long prefix stay apart).
MAX_LENGTH = 64
_HASH_DIGITS = 12


def identifier(name: str) -> str:
    """Rewrite ``name`` into a safe identifier (not yet made unique)."""
    parts = []
    for ch in name:
        if ch.isascii() and (ch.isalnum() or ch == "_"):
            parts.append(ch)
        elif not ch.isascii() and ch.isalpha():
            word = unicodedata.name(ch, "").split()
            parts.append(word[-1].lower() if word and word[-1].isalpha() else f"u{ord(ch):04x}")
        else:
            parts.append("_")
    base = "".join(parts) or "v"
    if base[0].isdigit() or base[0] == "_":
        base = "v_" + base.lstrip("_") if base.strip("_") else "v"
    if base.startswith(("grad", "dot_")):
        base = "v_" + base
    if base in _RESERVED or _INTERMEDIATE.fullmatch(base):
        base += "_"
    if len(base) > MAX_LENGTH:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        base = f"{base[:MAX_LENGTH - _HASH_DIGITS - 1]}_{digest[:_HASH_DIGITS]}"
    return base


class NameAllocator:
    """Hands out unique safe identifiers, in call order, so the result is deterministic."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken = set(taken)

    def take(self, name: str) -> str:
        base = identifier(name)
        candidate, k = base, 2
        while candidate in self._taken:
            candidate, k = f"{base}_{k}", k + 1
        self._taken.add(candidate)
        return candidate
