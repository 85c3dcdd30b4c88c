"""What counts as a real number: one rule for every value a user passes in.

A compiled function's scalar calls (``f(...)``, ``value_and_grad``), its array and batch
calls, the show layer's points and a model's data columns all convert their inputs here,
so they accept and refuse the same things. Accepted: bools (as 0 and 1, as NumPy does),
ints that fit a float64, floats, ``fractions.Fraction`` and other ``numbers.Real``, NumPy
bool/integer/floating scalars and arrays, SymPy's real numbers and constants
(``sympy.pi``, ``sympy.oo``). Refused with an :class:`~symgrad.errors.InputError` that
names the argument: text (never parsed as a number, whatever it holds), complex values
(their imaginary part would be lost), ``None`` (named as ``None``, not reported as NaN),
numbers too large for a float64, and anything else that is not a number (a
``decimal.Decimal`` too, which Python's number tower keeps apart from floats: convert it
with ``float()``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import sympy as sp

from ..errors import InputError

__all__ = ["nan_input", "real_array", "real_number"]

_FLOAT64 = np.dtype(np.float64)
_FLOAT_MAX = float(np.finfo(np.float64).max)


def real_number(name: str, value, nan_ok: bool = False) -> float:
    """``value`` as a float, or an InputError naming ``name``; NaN is refused too unless
    ``nan_ok``."""
    out = _to_float(name, value)
    if out != out and not nan_ok:
        raise nan_input(name)
    return out


def real_array(name: str, value) -> np.ndarray:
    """``value`` (an array, a list or a number) as a float64 array of the same shape.

    Refuses what :func:`real_number` refuses, naming the first offending entry and its
    index. NaN entries pass (callers decide where NaN matters).
    """
    try:
        a = np.asarray(value)
    except (ValueError, TypeError, OverflowError):  # ragged nesting, or a strange object
        raise InputError(f"{name} must be an array of real numbers of one shape; got "
                         f"{_show(value)}, which NumPy cannot turn into an array.") from None
    kind = a.dtype.kind
    if kind in "biuf":
        return a if a.dtype == _FLOAT64 else _converted(name, a)
    if kind == "O":
        out = np.empty(a.shape)
        for index, item in np.ndenumerate(a):
            out[index] = _to_float(_at(name, index, a.ndim), item)
        return out
    flat = a.reshape(-1)
    first = _show(flat[0].item()) if flat.size else "nothing"
    if kind == "c":
        raise InputError(f"{name} holds complex numbers (dtype {a.dtype}, first {first}); "
                         "symgrad works with real numbers and would lose the imaginary part. "
                         "Pass np.real(...) if the imaginary parts are zero.")
    if kind in "US":
        raise InputError(f"{name} holds text (dtype {a.dtype}, first {first}); symgrad never "
                         "parses text as numbers. Convert it yourself (e.g. "
                         "np.asarray(..., dtype=float)) if it holds numbers.")
    raise InputError(f"{name} has dtype {a.dtype}; it must hold real numbers.")


def nan_input(name: str) -> InputError:
    return InputError(
        f"input {name} is NaN; symgrad refuses NaN inputs: the results would be NaN, or "
        "meaningless where the code hides it (Max(1, NaN) is 1). Check the data or the "
        "computation that produced it."
    )


def _to_float(name: str, value) -> float:
    """One value as a float (NaN allowed), or an InputError saying what it is."""
    if type(value) is float:
        return value
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (numbers.Real, np.bool_)) or _sympy_real(value):
        try:
            out = float(value)
        except OverflowError:
            out = math.inf
        if math.isinf(out) and not value == out:  # e.g. 10**400: a finite value lost
            raise _too_large(name, value)
        return out
    if value is sp.nan:
        return math.nan
    shape = getattr(value, "shape", None)
    if shape not in (None, ()):
        raise InputError(f"{name} must be a real number, got an array of shape {shape}; this "
                         "takes one number per input.")
    if isinstance(value, numbers.Complex) or isinstance(value, sp.Expr) and value.is_number:
        raise InputError(f"{name} must be a real number, got the complex number "
                         f"{_show(value)}; symgrad would lose the imaginary part.")
    if isinstance(value, (str, bytes, bytearray, np.str_, np.bytes_)):
        raise InputError(f"{name} must be a real number, got the text {_show(value)}; "
                         "symgrad never parses text as a number. Pass float(...) of it if it "
                         "holds one.")
    if value is None:
        raise InputError(f"{name} must be a real number, got None.")
    raise InputError(f"{name} must be a real number, got {type(value).__name__} "
                     f"{_show(value)}.")


def _sympy_real(value) -> bool:
    return isinstance(value, sp.Expr) and value.is_number and value.is_extended_real is True


def _converted(name: str, a: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = a.astype(np.float64)
    if a.dtype.itemsize > 8 and a.dtype.kind == "f":  # long double: finite values may overflow
        lost = np.isinf(out) & np.isfinite(a)
        if lost.any():
            index = tuple(int(i) for i in np.argwhere(lost)[0])
            raise _too_large(_at(name, index, a.ndim), a[index])
    return out


def _at(name: str, index: tuple, ndim: int) -> str:
    if ndim == 0:
        return name
    if ndim == 1:
        return f"{name} at index {index[0]}"
    return f"{name} at {list(index)}"


def _too_large(name: str, value) -> InputError:
    return InputError(f"{name} is too large for a float64 (largest {_FLOAT_MAX:.4g}): got "
                      f"{_show(value)}; rescale the problem.")


def _show(value, limit: int = 40) -> str:
    if isinstance(value, int) and value.bit_length() > 64:  # repr may be slow or refused
        digits = int(value.bit_length() * math.log10(2)) + 1
        return f"an integer of about {digits} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
