"""Checking training data before anything is compiled: one column per data symbol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import sympy as sp

from ..compile.inputs import real_array
from ..errors import InputError

__all__ = ["columns", "match_columns"]


def columns(data, symbols: Sequence[sp.Symbol], what: str = "data") -> np.ndarray:
    """Stack ``data[symbol]`` for every symbol into a (len(symbols), N) float64 array.

    ``data`` maps symbols (or their names) to 1-D arrays of one length. Missing or unknown
    columns, other shapes, NaN and inf are refused with the column named, and so is anything
    that is not a real number (text is never parsed, complex values are not cut to their real
    part, ``None`` is named as such: :func:`symgrad.compile.inputs.real_array`).
    """
    arrays = [_column(s, v, what) for s, v in zip(symbols, match_columns(data, symbols, what))]
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        sizes = ", ".join(f"{s.name}: {len(a)}" for s, a in zip(symbols, arrays))
        raise InputError(f"{what} columns have different lengths ({sizes}); every column "
                         "needs one value per sample.")
    if not arrays:
        return np.empty((0, 0))
    n = lengths.pop()
    if n == 0:
        raise InputError(f"{what} has no samples.")
    return np.ascontiguousarray(np.vstack(arrays), dtype=np.float64)


def match_columns(data, symbols: Sequence[sp.Symbol], what: str = "data") -> list:
    """``data``'s value of every symbol, in the order of ``symbols``; a missing or unknown
    column is refused with its name."""
    if not isinstance(data, Mapping):
        raise InputError(
            f"{what} must be a dict from data symbols to arrays, e.g. {{x: X, y: Y}}; "
            f"got {type(data).__name__}."
        )
    by_name: dict = {}
    for s in symbols:
        by_name[s] = s
        by_name.setdefault(s.name, s)
    found: dict = {}
    for key, value in data.items():
        s = by_name.get(key)
        if s is None:
            expected = ", ".join(s.name for s in symbols)
            raise InputError(f"{what} has a column {key!r} that is not a data symbol of the "
                             f"model (expected {expected}).")
        found[s] = value
    missing = [s.name for s in symbols if s not in found]
    if missing:
        raise InputError(f"{what} lacks the column(s) {', '.join(missing)}; give one array "
                         "per data symbol.")
    return [found[s] for s in symbols]


def _column(symbol: sp.Symbol, value, what: str) -> np.ndarray:
    a = real_array(f"{what} column {symbol.name}", value)
    if a.ndim != 1:
        raise InputError(f"{what} column {symbol.name} has shape {a.shape}; each column must be "
                         "1-D (one value per sample).")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        kind = "NaN" if np.isnan(a[bad[0]]) else "inf"
        raise InputError(f"{what} column {symbol.name} holds {kind} at index {bad[0]} "
                         f"({bad.size} non-finite values); remove or fill them before training.")
    return a
