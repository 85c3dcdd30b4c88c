"""Checking training data before anything is compiled: one column per data symbol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import sympy as sp

from ..compile.inputs import real_array
from ..errors import InputError

__all__ = ["PreparedData", "all_finite", "columns", "match_columns"]


class PreparedData:
    """Data checked and laid out once, for many calls: what ``model.prepare(data)`` returns.

    ``fit`` (``data`` and ``validation``), ``evaluate``, ``predict``, ``value_and_grad``,
    ``hvp`` and ``hessian`` take it wherever they take a dict, and skip the checks and the
    copies they would make of a dict on every call. It holds its own copy of the data in the
    model's layout (dtype, samples innermost where the model stores them so), taken when it
    was prepared: changing the arrays it was made from afterwards does not change it; prepare
    again to train on new values. It serves any model with the same data symbols, dtype and
    layout (a new ``Model`` of the same loss, for one); another model refuses it.
    """

    __slots__ = ("_layout", "_arrays", "samples")

    def __init__(self, layout: tuple, arrays, samples: int) -> None:
        self._layout = layout
        self._arrays = arrays
        #: Number of samples.
        self.samples = samples

    def arrays_for(self, layout: tuple, what: str):
        """The stored arrays, if they were prepared in ``layout``; an InputError if not."""
        if layout != self._layout:
            raise InputError(
                f"{what} was prepared for a model with other data or another layout "
                f"({_describe(self._layout)}; this model: {_describe(layout)}); prepare it "
                "with this model: model.prepare(data).")
        return self._arrays

    def __len__(self) -> int:
        return self.samples

    def __repr__(self) -> str:
        return f"<PreparedData {self.samples} samples: {_describe(self._layout)}>"


def by_symbol(data: Mapping, symbols: Sequence) -> dict:
    """``data`` keyed by the symbols themselves: a key that is a symbol's name becomes the
    symbol; other keys stay as they are (another symbol of the same name, e.g. with other
    assumptions, is not the model's, as for ``match_columns``)."""
    names = {s.name: s for s in symbols}
    return {(names.get(k, k) if isinstance(k, str) else k): v for k, v in data.items()}


def _describe(layout: tuple) -> str:
    return layout[0]


def refuse_prepared(data, what: str) -> None:
    """A clear error for prepared data where only a dict of arrays will do (Dask)."""
    if isinstance(data, PreparedData):
        raise InputError(f"{what} is prepared data (model.prepare), which lives in this "
                         "process; with client= pass a dict of dask arrays instead.")


def all_finite(a: np.ndarray) -> bool:
    """Whether every entry of ``a`` is finite, in one pass without temporaries when it is:
    a sum of IEEE numbers is finite only if every term is (NaN and inf propagate), and only a
    non-finite sum (or an overflowing one) pays for the entry-by-entry check."""
    if a.dtype.kind in "biu":
        return True
    with np.errstate(over="ignore", invalid="ignore"):  # inf + -inf, an overflowing sum
        if np.isfinite(a.sum()):
            return True
    return bool(np.isfinite(a).all())


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
        refuse_prepared(data, what)
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
    if all_finite(a):
        return a
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        kind = "NaN" if np.isnan(a[bad[0]]) else "inf"
        raise InputError(f"{what} column {symbol.name} holds {kind} at index {bad[0]} "
                         f"({bad.size} non-finite values); remove or fill them before training.")
    return a
