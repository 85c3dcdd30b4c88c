"""Whether a matrix program splits by samples: the question behind the two-core loop.

A program *splits* when running it on any chunk of the batch's samples (its columns, the
batch size ``n`` still the whole batch's) gives a loss and a gradient that are, for every
chunk, the same parameter-only part plus a sum over the chunk's samples. Then the whole
batch's loss and gradient are the chunks' results added up, less the parameter-only part
counted once too often per extra chunk; that part is the program run on no samples at all
(``symgrad.kernels.split`` does this, the same for every model).

Decided line by line from the graph, by giving every value one of three kinds:

- ``P``: parameters only (parameters, unbatched data, the batch size, numbers);
- ``S``: per sample: has the batch axis, and each sample's entries depend on that sample
  alone (element-wise arithmetic, products not contracting the batch, row-wise softmax of
  samples' rows, sums over a non-batch axis);
- ``R``: a sum over the batch's samples (``sum``, the batch-axis ``rowsum``/``colsum``, a
  product contracting the batch, the cross-entropy's mean, which divides by ``n``), or an
  affine function of such sums with parameter-only coefficients.

A program does not split (the reason is returned) when a per-sample value reads a batch sum
(a batch statistic used by later per-sample lines), a sum enters non-linearly (``log`` of a
mean, a product of two sums), a softmax runs across the samples, or a product pairs the
samples of two batched operands without summing them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sympy as sp
from sympy.codegen.ast import AddAugmentedAssignment

from ..expression.arrays import (
    ArrayOp,
    colsum,
    dropout_mask,
    log_softmax,
    matmul,
    rowsum,
    softmax,
    softmax_cross_entropy,
    sqnorm,
    total,
    transpose,
)

__all__ = ["NotSplit", "split_reason"]


class NotSplit(Exception):
    """The program does not split by samples; the message says which line and why."""


def split_reason(assignments: Iterable, shapes: Mapping[str, tuple], batch: str,
                 outputs: Iterable[str]) -> str:
    """"" if the program (``Assignment``s, forward then backward) splits by samples, else why
    not. ``shapes``: every name's logical shape (a dimension that is not an int is the
    batch); ``outputs``: the loss and the parameters' gradients."""
    kinds: dict[str, tuple[str, frozenset]] = {}

    def batch_axes(name: str) -> frozenset:
        shape = shapes.get(name, ())
        axes = frozenset(k for k, d in enumerate(shape) if not isinstance(d, (int, sp.Integer)))
        if len(axes) > 1:  # batch x batch: every pair of samples, whatever made it
            raise NotSplit(f"{name} pairs samples (the batch is both its rows and its columns)")
        return axes

    def symbol(name: str) -> tuple[str, frozenset]:
        if name in kinds:
            return kinds[name]
        axes = batch_axes(name)
        return ("S" if axes else "P", axes)

    try:
        for a in assignments:
            name = a.lhs.name
            got = _kind(a.rhs, symbol, batch)
            if isinstance(a, AddAugmentedAssignment):
                got = _join("+=", [symbol(name), got])
            batch_axes(name)
            kinds[name] = got
        for name in outputs:
            if symbol(name)[0] == "S":
                raise NotSplit(f"{name} keeps the batch axis")
    except NotSplit as e:
        return str(e)
    return ""


def _join(what: str, parts: list) -> tuple[str, frozenset]:
    """The kind of an element-wise combination (sum) of parts."""
    ks = {k for k, _ in parts}
    if "S" in ks and "R" in ks:
        raise NotSplit(f"{what} combines per-sample values with a sum over the batch")
    axes = frozenset().union(*(ax for _, ax in parts))
    return ("S" if "S" in ks else "R" if "R" in ks else "P", axes)


def _kind(e: sp.Basic, symbol, batch: str) -> tuple[str, frozenset]:
    if isinstance(e, sp.Symbol) or getattr(e, "is_symbol", False) and hasattr(e, "name"):
        return ("P", frozenset()) if e.name == batch else symbol(e.name)
    if isinstance(e, sp.Number) or not e.args:
        return ("P", frozenset())
    if isinstance(e, ArrayOp):
        return _array_op(e, [_kind(a, symbol, batch) for a in e.args])
    parts = [_kind(a, symbol, batch) for a in e.args]
    ks = [k for k, _ in parts]
    if "R" in ks:
        if isinstance(e, sp.Add):
            return _join(str(e), parts)
        if isinstance(e, sp.Mul) and ks.count("R") == 1 and "S" not in ks:
            return ("R", frozenset().union(*(ax for _, ax in parts)))
        if isinstance(e, sp.Pow) and ks[0] == "R" and e.args[1] == 1:
            return parts[0]
        raise NotSplit(f"{e} is not linear in the sums over the batch it reads")
    return _join(str(e), parts)


def _array_op(e: ArrayOp, parts: list) -> tuple[str, frozenset]:
    ks = [k for k, _ in parts]
    axes = [ax for _, ax in parts]
    if isinstance(e, dropout_mask):
        raise NotSplit("dropout masks come from one generator for the whole batch")
    if all(k == "P" for k in ks):
        return ("P", frozenset())
    if "S" in ks and "R" in ks:
        raise NotSplit(f"{e} combines per-sample values with a sum over the batch")
    if isinstance(e, transpose):
        return (ks[0], frozenset(1 - a for a in axes[0]))
    if isinstance(e, matmul):
        (ka, xa), (kb, xb) = parts
        if "R" in ks:
            if ka == kb == "R":
                raise NotSplit(f"{e} multiplies two sums over the batch")
            return ("R", frozenset())
        if 1 in xa or 0 in xb:  # the product sums over the batch
            if 0 in xa or 1 in xb:
                raise NotSplit(f"{e} pairs samples of two batched operands")
            return ("R", frozenset())
        return ("S", frozenset(({0} & xa) | ({1} & xb)))
    if isinstance(e, (rowsum, colsum)):
        summed = 1 if isinstance(e, rowsum) else 0
        if ks[0] == "R":
            return ("R", frozenset())
        if summed not in axes[0]:
            return ("S", axes[0])
        if axes[0] != {summed}:
            raise NotSplit(f"{e} sums across the samples of each sample")
        return ("R", frozenset())
    if isinstance(e, total):
        return ("R", frozenset())
    if isinstance(e, sqnorm):
        if ks[0] == "R":
            raise NotSplit(f"{e} squares a sum over the batch")
        return ("R", frozenset())
    if isinstance(e, (softmax, log_softmax, softmax_cross_entropy)):
        if "R" in ks:
            raise NotSplit(f"{e} is not linear in the sums over the batch it reads")
        if any(1 in ax for ax in axes):
            raise NotSplit(f"{e} runs across the samples (the batch is its columns)")
        if isinstance(e, softmax_cross_entropy):
            return ("R", frozenset())  # a sum over the rows (the samples) divided by n
        return ("S", axes[0])
    raise NotSplit(f"{type(e).__name__} is not known to work sample by sample")
