"""Saved models: ``save_model(model, path)`` writes one file, ``load_model(path)`` reads it.

The container is safetensors-like, not Keras's zip: a small fixed preamble, a JSON header,
the arrays as raw little-endian bytes, and a SHA-256 of everything before it::

    b"\\x93SYMGRAD" | header length (uint64 LE) | header (JSON, UTF-8, space-padded to 8 bytes)
    | arrays (raw, little-endian, one after another) | SHA-256 of all preceding bytes (32 bytes)

Why this one: reading it takes ``json.loads`` and ``numpy.frombuffer`` only, and every size
in it is checked against the file's own length before anything is allocated; a zip brings a
second directory structure to validate, compression (zip bombs) and members to reconcile,
for a model that is one header and a handful of arrays. The checksum turns accidental damage
(a truncated copy, a flipped bit) into one clear error; a deliberately edited file (checksum
recomputed) still meets the checks of every field below.

The header holds the model as data, never as code: its expressions (loss, prediction,
target, parameter and data symbols, matrix shapes) as a table of nodes, each a node type
from the allow-list :data:`NODE_TYPES` (SymPy's core classes, SymPy's functions symgrad
differentiates, symgrad's functions and array operations) with the indices of its children,
or an atom (symbols with their assumptions, integers as decimal strings, rationals as
numerator and denominator, floats as decimal strings with their precision). Functions users
registered with ``@symgrad.rule`` are saved by name and loaded only when a rule of that name
is registered. Nothing is pickled, ``sympify``'d or executed; the optimizer is one of
``symgrad.optim``'s classes by name with its dataclass fields. Loading is lazy: it rebuilds
the model as ``symgrad.Model(...)`` does (graph and program as SymPy data), and generates and
compiles nothing before the first ``fit``/``evaluate``/``predict``.

Besides the expressions a file holds the parameters (one array each, in the model's dtype),
the settings (``name``, ``dtype``, ``fast_math``), the optimizer's state arrays and step
count, the last History and what decides the next epoch's shuffle and dropout masks
(``seed`` and ``epochs_trained``): so ``load_model(path).fit(...)`` continues a run exactly.
A history's NaN or infinite losses are written as Python's ``json`` writes them (``NaN``,
``Infinity``), which it reads back.

``pickle`` uses the same format: ``Model.__reduce__`` gives ``(model_from_bytes, (bytes,))``,
so a pickled model carries this file, not its internals (unpickling is still unpickling:
load models from others with :func:`load_model`, never with ``pickle``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import warnings
from dataclasses import fields
from pathlib import Path

import mpmath
import numpy as np
import sympy as sp
from sympy.functions.elementary.piecewise import ExprCondPair
from sympy.matrices.expressions import (
    HadamardPower,
    HadamardProduct,
    Identity,
    MatAdd,
    MatMul,
    MatrixSymbol,
    OneMatrix,
    Transpose,
    ZeroMatrix,
)

from .._version import __version__
from ..errors import ExpressionError, InputError, ModelFileError
from ..expression import arrays as _arrays
from ..expression import functions as _functions
from ..rules import registered
from ..trust import atomic_write
from . import optim as _optim
from .arrays import ArrayModel, SymmetryWarning
from .history import History
from .model import Model

__all__ = ["FORMAT_VERSION", "NODE_TYPES", "Checkpoints", "load_model", "model_bytes",
           "model_from_bytes", "save_model"]

#: The version this symgrad writes; it reads this one and older ones.
FORMAT_VERSION = 1
MAGIC = b"\x93SYMGRAD"
_DIGEST = 32
#: The array dtypes a file may hold (little-endian).
_DTYPES = {"<f8": np.float64, "<f4": np.float32}
#: Bounds on what a header may ask for: float precision (bits), digits of a number, epochs.
_MAX_PREC, _MAX_DIGITS, _MAX_EPOCHS = 4096, 4000, 10_000_000
_INTEGER = re.compile(rf"-?\d{{1,{_MAX_DIGITS}}}")
_DECIMAL = re.compile(r"-?(\d+\.?\d*|\.\d+)(e[-+]?\d{1,7})?", re.IGNORECASE)


def _table(classes) -> dict[str, type]:
    table = {}
    for cls in classes:
        if cls.__name__ in table:
            raise RuntimeError(f"two allowed node types are named {cls.__name__}")
        table[cls.__name__] = cls
    return table


#: Node types a saved expression may contain (by class name), besides the atoms.
NODE_TYPES: dict[str, type] = _table([
    sp.Add, sp.Mul, sp.Pow, sp.Tuple, sp.Lambda, sp.Piecewise, ExprCondPair,
    sp.exp, sp.log, sp.sin, sp.cos, sp.tan, sp.tanh, sp.sinh, sp.cosh, sp.asin, sp.acos,
    sp.atan, sp.atan2, sp.asinh, sp.acosh, sp.atanh, sp.erf, sp.erfc, sp.Abs, sp.sign,
    sp.Max, sp.Min, sp.Heaviside, sp.floor, sp.ceiling,
    sp.And, sp.Or, sp.Not, sp.StrictLessThan, sp.LessThan, sp.StrictGreaterThan,
    sp.GreaterThan, sp.Equality, sp.Unequality,
    MatrixSymbol, MatAdd, MatMul, Transpose, HadamardProduct, HadamardPower, OneMatrix,
    ZeroMatrix, Identity,
    *(getattr(_functions, n) for n in _functions.__all__),
    _arrays.matmul, _arrays.transpose, _arrays.rowsum, _arrays.colsum, _arrays.total,
    _arrays.sqnorm, _arrays.softmax, _arrays.log_softmax, _arrays.softmax_cross_entropy,
    _arrays.dropout_mask, _arrays.Softmax, _arrays.LogSoftmax, _arrays.RowSum, _arrays.ColSum,
    _arrays.Dropout, _arrays.Elementwise,
])
_NAME_OF = {cls: name for name, cls in NODE_TYPES.items()}
#: SymPy's singleton numbers and truth values, by name.
_SINGLETONS = {"Zero": sp.S.Zero, "One": sp.S.One, "NegativeOne": sp.S.NegativeOne,
               "Half": sp.S.Half, "Pi": sp.pi, "Exp1": sp.E, "Infinity": sp.oo,
               "NegativeInfinity": -sp.oo, "true": sp.true, "false": sp.false,
               "EulerGamma": sp.EulerGamma}
_SINGLETON_NAME = {v: k for k, v in _SINGLETONS.items()}
#: The optimizers a file may name.
_OPTIMIZERS = {name: getattr(_optim, name) for name in _optim.__all__
               if name not in ("KINDS", "Optimizer")}


# -- writing -------------------------------------------------------------------------------

def save_model(model, path: str | os.PathLike) -> Path:
    """Write ``model`` (a ``symgrad.Model`` or matrix ``ArrayModel``) to ``path``, one file,
    atomically (a temporary file in the same folder, then ``os.replace``): its expressions,
    parameters, settings, optimizer with its state, last History, ``seed`` and
    ``epochs_trained``. ``symgrad.load_model(path)`` reads it back."""
    path = Path(path)
    data = model_bytes(model)
    atomic_write(path, data, durable=True)
    return path


def model_bytes(model) -> bytes:
    """The saved-model file of ``model`` as bytes (what :func:`save_model` writes)."""
    values = model._values
    if not np.all(np.isfinite(values)):
        raise InputError("the model's parameters hold NaN or inf (training diverged before a "
                         "finite epoch); set finite parameters (model.params = ...) to save it.")
    nodes = _Nodes()
    matrix = isinstance(model, ArrayModel)
    dtype = model.dtype if matrix else "float64"
    arrays: dict[str, np.ndarray] = {}
    shapes = [tuple(int(d) for d in s.shape) if matrix else () for s in model._param_syms]
    lo = 0
    for k, shape in enumerate(shapes):
        size = math.prod(shape)
        arrays[f"params.{k}"] = values[lo:lo + size].reshape(shape)
        lo += size
    header = {
        "format": "symgrad-model", "version": FORMAT_VERSION, "symgrad": __version__,
        "model": {
            "kind": "ArrayModel" if matrix else "Model", "name": model.name,
            "dtype": dtype, "fast_math": bool(model.fast_math),
            "loss": nodes.add(model.loss),
            "prediction": None if model.prediction is None else nodes.add(model.prediction),
            "target": None if model.target is None else nodes.add(model.target),
            "params": [nodes.add(s) for s in model._param_syms],
            "data": [nodes.add(s) for s in model._data_syms],
            "epochs_trained": int(model.epochs_trained), "seed": int(model.seed),
        },
        "optimizer": _optimizer_header(model.optimizer, values, arrays),
        "history": _history_header(model.history, shapes, values.dtype, arrays),
        "expression": {"nodes": nodes.table, "rules": nodes.rules},
    }
    offsets, lo = {}, 0
    for name, a in arrays.items():
        a = np.array(a, dtype=a.dtype.newbyteorder("<"), order="C")
        arrays[name] = a
        offsets[name] = {"dtype": a.dtype.str, "shape": list(a.shape),
                         "offsets": [lo, lo + a.nbytes]}
        lo += a.nbytes
    header["arrays"] = offsets
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    body = b"".join([MAGIC, struct.pack("<Q", len(text)), text,
                     *(a.tobytes() for a in arrays.values())])
    return body + hashlib.sha256(body).digest()


def _optimizer_header(opt, values: np.ndarray, arrays: dict) -> dict:
    state = opt.state
    usable = (state is not None and state.shape == (max(opt.n_state, 1), values.size)
              and state.dtype == values.dtype)
    if usable:
        arrays["optimizer.state"] = state
    return {"class": type(opt).__name__,
            "fields": {f.name: float(getattr(opt, f.name)) for f in fields(opt)},
            "step": int(opt.step[0]) if usable else 0, "state": usable}


def _history_header(history: History | None, shapes, dtype, arrays: dict) -> dict | None:
    if history is None:
        return None
    if history.best_params:
        for k, v in enumerate(history.best_params.values()):
            arrays[f"best.{k}"] = np.asarray(v, dtype=dtype).reshape(shapes[k])
    return {"epoch": list(history.epoch), "loss": list(history.loss),
            "val_loss": list(history.val_loss), "metrics": history.metrics,
            "val_metrics": history.val_metrics, "time": list(history.time),
            "engine": list(history.engine), "best_epoch": history.best_epoch,
            "best_loss": history.best_loss, "stop_reason": history.stop_reason,
            "best_params": bool(history.best_params)}


class _Nodes:
    """The node table of a file's expressions: each distinct node once, children first."""

    def __init__(self) -> None:
        self.table: list[list] = []
        self.rules: list[dict] = []
        self._index: dict[int, int] = {}  # id(node) -> row, for compound nodes
        self._atoms: dict[tuple, int] = {}  # (type, atom) -> row
        self._keep: list = []  # the nodes indexed by id stay alive while the table is built

    def add(self, root: sp.Basic) -> int:
        if not isinstance(root, sp.Basic):
            raise ExpressionError(f"cannot save {root!r}: not a SymPy expression.")
        stack = [(root, False)]
        while stack:
            node, ready = stack.pop()
            if self._row(node) is not None:
                continue
            if node.is_Atom or not node.args:
                self._put(node, self._atom(node))
            elif ready:
                self._put(node, [self._type(node), *(self._row(a) for a in node.args)])
            else:
                stack.append((node, True))
                stack.extend((a, False) for a in reversed(node.args))
        return self._row(root)

    def _row(self, node):
        if node.is_Atom or not node.args:
            return self._atoms.get((type(node), node))
        return self._index.get(id(node))

    def _put(self, node, entry) -> None:
        if node.is_Atom or not node.args:
            self._atoms[(type(node), node)] = len(self.table)
        else:
            self._index[id(node)] = len(self.table)
            self._keep.append(node)
        self.table.append(entry)

    def _atom(self, node) -> list:
        if node in _SINGLETON_NAME and type(node) is type(_SINGLETONS[_SINGLETON_NAME[node]]):
            return ["S", _SINGLETON_NAME[node]]
        if type(node) is sp.Symbol:
            return ["Symbol", node.name, _assumptions(node)]
        if type(node) is sp.Dummy:
            return ["Dummy", node.name, _assumptions(node)]
        if type(node) is sp.core.symbol.Str:
            return ["Str", node.name]
        if type(node) is sp.Integer:
            return ["Integer", str(int(node))]
        if type(node) is sp.Rational:
            return ["Rational", str(node.p), str(node.q)]
        if type(node) is sp.Float:
            prec = node._prec
            text = mpmath.libmp.to_str(node._mpf_, mpmath.libmp.repr_dps(prec))
            return ["Float", text, prec]
        if not node.args and type(node) in _NAME_OF:
            return [self._type(node)]
        raise ExpressionError(f"cannot save the {type(node).__name__} {node}: a saved model "
                              "holds symbols, numbers and the functions symgrad differentiates "
                              "(symgrad.train.persist.NODE_TYPES).")

    def _type(self, node):
        cls = type(node)
        if cls in _NAME_OF:
            return _NAME_OF[cls]
        if cls in registered():
            rule = {"name": cls.__qualname__, "module": cls.__module__}
            if rule not in self.rules:
                self.rules.append(rule)
            return self.rules.index(rule)
        raise ExpressionError(f"cannot save the {cls.__name__} {_short(node)}: a saved model "
                              "holds the functions symgrad differentiates "
                              "(symgrad.train.persist.NODE_TYPES) and functions registered with "
                              "@symgrad.rule.")


def _assumptions(symbol) -> dict:
    """The assumptions the symbol was made with (SymPy >= 1.12 keeps them apart from the
    derived ones; either way the rebuilt symbol is equal)."""
    given = getattr(symbol, "_assumptions_orig", None)
    given = symbol.assumptions0 if given is None else given
    return {k: v for k, v in sorted(given.items()) if isinstance(v, bool)}


def _short(node, limit: int = 60) -> str:
    text = str(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- reading -------------------------------------------------------------------------------

def load_model(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None):
    """Read a model written by :func:`save_model`: a ``Model`` (or ``ArrayModel``) ready to
    ``fit`` (continuing where it stopped), ``evaluate`` and ``predict``.

    Nothing in the file is executed or unpickled, and nothing is generated or compiled here
    (that happens on first use, as for a new Model). A damaged, truncated or edited file, one
    written by a newer symgrad, or one whose model uses a function registered with
    ``@symgrad.rule`` that is not registered now raises :class:`symgrad.ModelFileError`
    saying which. ``cache_dir`` is the new model's code cache (as for ``symgrad.Model``).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            start = f.read(len(MAGIC))
            if start != MAGIC:  # not even read further: it may be any file, of any size
                _fail(f"{path} is not a symgrad model file (it does not start as one: write "
                      "it with symgrad.save_model).")
            data = start + f.read()
    except OSError as e:
        raise ModelFileError(f"cannot read the model file {path}: {e.strerror or e}.") from e
    return model_from_bytes(data, cache_dir=cache_dir, source=str(path))


def model_from_bytes(data: bytes, *, cache_dir=None, source: str = "the model bytes"):
    """A model from the bytes of a saved-model file (see :func:`load_model`)."""
    try:
        header, arrays = _parse(data)
        return _build(header, arrays, cache_dir)
    except ModelFileError as e:
        raise ModelFileError(f"{source}: {e}") from None


def _fail(message: str):
    raise ModelFileError(message)


def _parse(data) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and the arrays of a file's bytes, every size checked before it is used."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail(f"expected the bytes of a model file, got {type(data).__name__}.")
    data = bytes(data)
    lead = len(MAGIC) + 8
    if len(data) < lead + _DIGEST or not data.startswith(MAGIC):
        _fail("not a symgrad model file (it does not start as one: write it with "
              "symgrad.save_model).")
    if hashlib.sha256(data[:-_DIGEST]).digest() != data[-_DIGEST:]:
        _fail("the file is damaged or truncated (its SHA-256 checksum does not match); "
              "save the model again or use an intact copy.")
    (size,) = struct.unpack("<Q", data[len(MAGIC):lead])
    body = len(data) - _DIGEST
    if size > body - lead:
        _fail(f"the header claims {size} bytes, more than the file holds.")
    try:
        header = json.loads(data[lead:lead + size].decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise ModelFileError(f"the header is not valid JSON ({type(e).__name__}).") from None
    _check(isinstance(header, dict), "the header is not a JSON object.")
    _check(header.get("format") == "symgrad-model", "not a symgrad model file (wrong format).")
    version = header.get("version")
    _check(_is_int(version) and version >= 1, "the file's format version is missing or invalid.")
    if version > FORMAT_VERSION:
        _fail(f"the file has format version {version}, written by a newer symgrad "
              f"({header.get('symgrad')!s:.20}); this symgrad ({__version__}) reads versions up "
              f"to {FORMAT_VERSION}. Upgrade symgrad to load it.")
    return header, _arrays_of(header.get("arrays"), memoryview(data)[lead + size:body])


def _arrays_of(table, data: memoryview) -> dict[str, np.ndarray]:
    _check(isinstance(table, dict), "the header's array table is missing.")
    out, end = {}, 0
    for name, entry in table.items():
        _check(isinstance(entry, dict) and set(entry) == {"dtype", "shape", "offsets"},
               f"array {name!r}: its entry must have dtype, shape and offsets.")
        dtype = _DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        _check(dtype is not None, f"array {name!r}: dtype {entry['dtype']!r} is not one of "
               f"{', '.join(_DTYPES)}.")
        shape, offsets = entry["shape"], entry["offsets"]
        _check(isinstance(shape, list) and len(shape) <= 2 and all(
            _is_int(d) and 0 <= d <= len(data) for d in shape),
            f"array {name!r}: invalid shape {shape!r:.60}.")
        _check(isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets)),
               f"array {name!r}: invalid offsets {offsets!r:.60}.")
        lo, hi = offsets
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        _check(lo == end and hi - lo == nbytes and hi <= len(data),
               f"array {name!r}: offsets {offsets} do not fit its shape and dtype ({nbytes} "
               f"bytes from byte {end} of {len(data)}).")
        end = hi
        out[name] = np.frombuffer(data[lo:hi], dtype=np.dtype(dtype).newbyteorder("<")).astype(
            dtype).reshape(shape)
    _check(end == len(data), f"the arrays cover {end} of the file's {len(data)} data bytes.")
    return out


def _check(ok: bool, message: str) -> None:
    if not ok:
        _fail(message)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    """A float, or an int that converts to one (JSON integers are unbounded)."""
    return isinstance(v, float) or _is_int(v) and abs(v) < 2**63


def _build(header: dict, arrays: dict[str, np.ndarray], cache_dir):
    spec = _section(header, "model", {"kind", "name", "dtype", "fast_math", "loss", "prediction",
                                      "target", "params", "data", "epochs_trained", "seed"})
    expression = _section(header, "expression", {"nodes", "rules"})
    nodes = _decode(expression["nodes"], expression["rules"])
    kind, dtype = spec["kind"], spec["dtype"]
    _check(kind in ("Model", "ArrayModel"), f"unknown model kind {kind!r:.40}.")
    _check(dtype in (("float64", "float32") if kind == "ArrayModel" else ("float64",)),
           f"invalid dtype {dtype!r:.40} for a {kind}.")
    _check(isinstance(spec["name"], str) and isinstance(spec["fast_math"], bool),
           "the model's name or fast_math setting is invalid.")
    _check(_is_int(spec["epochs_trained"]) and 0 <= spec["epochs_trained"] <= _MAX_EPOCHS,
           f"epochs_trained must be an integer in 0..{_MAX_EPOCHS}.")
    _check(_is_int(spec["seed"]) and 0 <= spec["seed"] < 2**63, "the seed is invalid.")

    def node(ref, what):
        _check(_is_int(ref) and 0 <= ref < len(nodes), f"the model's {what} is not a node.")
        return nodes[ref]

    refs = {what: spec[what] for what in ("params", "data")}
    _check(all(isinstance(v, list) for v in refs.values()), "params and data must be lists.")
    params = [node(r, "parameter") for r in refs["params"]]
    data = [node(r, "data symbol") for r in refs["data"]]
    values = [arrays.get(f"params.{k}") for k in range(len(params))]
    _check(all(a is not None and a.dtype == np.dtype(dtype) for a in values),
           "a parameter has no array in the model's dtype.")
    optimizer = _optimizer(header.get("optimizer"), arrays, sum(a.size for a in values), dtype)
    settings = dict(
        prediction=None if spec["prediction"] is None else node(spec["prediction"], "prediction"),
        target=None if spec["target"] is None else node(spec["target"], "target"),
        optimizer=optimizer, name=spec["name"], fast_math=spec["fast_math"], cache_dir=cache_dir)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SymmetryWarning)  # warned when it was created
            if kind == "ArrayModel":
                model = ArrayModel(node(spec["loss"], "loss"), dict(zip(params, values)), data,
                                   dtype=dtype, **settings)
            else:
                _check(all(a.shape == () for a in values), "a scalar parameter is not a scalar.")
                model = Model(node(spec["loss"], "loss"),
                              {p: float(a) for p, a in zip(params, values)}, data, **settings)
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001  (what symgrad.Model refuses, or SymPy on the way)
        raise ModelFileError(f"the saved model is invalid: {type(e).__name__}: "
                             f"{str(e):.300}") from None
    _check(type(model).__name__ == kind, f"the file says {kind}, its loss makes a "
           f"{type(model).__name__}.")
    model.epochs_trained = spec["epochs_trained"]
    model.seed = spec["seed"]
    model.history = _history(header.get("history"), arrays, model)
    return model


def _section(header: dict, key: str, keys: set) -> dict:
    part = header.get(key)
    _check(isinstance(part, dict) and set(part) == keys,
           f"the header's {key!r} section must have exactly the keys {', '.join(sorted(keys))}.")
    return part


def _decode(table, rules) -> list[sp.Basic]:
    """The node table back into SymPy objects (children precede parents; built with SymPy's
    automatic evaluation off, so each node is rebuilt as it was saved)."""
    _check(isinstance(table, list) and isinstance(rules, list), "the node table is invalid.")
    funcs = [_registered_rule(r) for r in rules]
    nodes: list[sp.Basic] = []
    for k, entry in enumerate(table):
        _check(isinstance(entry, list) and entry, f"node {k} is not a list.")
        kind, rest = entry[0], entry[1:]
        try:
            with sp.evaluate(False):
                if isinstance(kind, str) and kind in _ATOMS:
                    nodes.append(_ATOMS[kind](rest))
                    continue
                if _is_int(kind) and 0 <= kind < len(funcs):
                    cls = funcs[kind]
                elif isinstance(kind, str) and kind in NODE_TYPES:
                    cls = NODE_TYPES[kind]
                else:
                    _fail(f"node {k} has the type {kind!r:.60}, which is not in symgrad's "
                          "allow-list of node types.")
                _check(all(_is_int(c) and 0 <= c < k for c in rest),
                       f"node {k} ({cls.__name__}) refers to a node not defined before it.")
                nodes.append(cls(*(nodes[c] for c in rest)))
        except ModelFileError:
            raise
        except Exception as e:  # noqa: BLE001  (SymPy refusing the arguments: a bad file)
            raise ModelFileError(f"node {k} ({kind!s:.40}) cannot be rebuilt: "
                                 f"{type(e).__name__}: {str(e):.200}") from None
    return nodes


def _registered_rule(entry) -> type:
    _check(isinstance(entry, dict) and set(entry) == {"name", "module"}
           and all(isinstance(v, str) for v in entry.values()),
           "a user-rule entry must have a name and a module.")
    named = [c for c in registered() if c.__qualname__ == entry["name"]]
    same = [c for c in named if c.__module__ == entry["module"]]
    if len(same) == 1 or len(named) == 1:
        return (same or named)[0]
    if not named:
        _fail(f"the model uses the function {entry['name']!r:.80} (from {entry['module']!r:.80}),"
              f" whose derivative rule was registered with @symgrad.rule when it was saved; "
              "define the function and register the same rule before symgrad.load_model.")
    _fail(f"several functions named {entry['name']!r:.80} have rules; keep only the one the "
          "model was saved with registered.")


def _string(rest, n: int = 1) -> list:
    _check(len(rest) >= n and all(isinstance(v, str) and len(v) <= _MAX_DIGITS * 4
                                  for v in rest[:n]), "an atom's text is invalid.")
    return rest


def _integer(text) -> int:
    _check(isinstance(text, str) and _INTEGER.fullmatch(text) is not None,
           f"invalid integer {text!r:.40}.")
    return int(text)


def _symbol(cls):
    def make(rest):
        _check(len(rest) == 2 and isinstance(rest[0], str) and isinstance(rest[1], dict)
               and all(isinstance(v, bool) for v in rest[1].values()),
               "a symbol must have a name and its assumptions.")
        return cls(rest[0], **rest[1])
    return make


def _float(rest):
    _check(len(rest) == 2 and isinstance(rest[0], str) and _is_int(rest[1])
           and 1 <= rest[1] <= _MAX_PREC and len(rest[0]) <= _MAX_DIGITS
           and _DECIMAL.fullmatch(rest[0]) is not None, "invalid Float.")
    return sp.Float(rest[0], precision=rest[1])


def _rational(rest):
    _check(len(rest) == 2, "a Rational has a numerator and a denominator.")
    p, q = _integer(rest[0]), _integer(rest[1])
    _check(q > 0, "a Rational's denominator must be positive.")
    return sp.Rational(p, q)


def _singleton(rest):
    _check(len(rest) == 1 and isinstance(rest[0], str) and rest[0] in _SINGLETONS,
           f"unknown constant {rest!r:.40}.")
    return _SINGLETONS[rest[0]]


_ATOMS = {
    "Symbol": _symbol(sp.Symbol), "Dummy": _symbol(sp.Dummy),
    "Str": lambda rest: sp.core.symbol.Str(_string(rest)[0]),
    "Integer": lambda rest: sp.Integer(_integer(rest[0] if len(rest) == 1 else None)),
    "Rational": _rational, "Float": _float, "S": _singleton,
}


def _optimizer(spec, arrays, n_params: int, dtype: str):
    _check(isinstance(spec, dict) and set(spec) == {"class", "fields", "step", "state"},
           "the optimizer section is invalid.")
    cls = _OPTIMIZERS.get(spec["class"]) if isinstance(spec["class"], str) else None
    _check(cls is not None, f"unknown optimizer {spec['class']!r:.40}; symgrad.optim has "
           f"{', '.join(_OPTIMIZERS)}.")
    given = spec["fields"]
    names = {f.name for f in fields(cls)}
    _check(isinstance(given, dict) and set(given) == names
           and all(_is_number(v) for v in given.values()),
           f"{cls.__name__}'s fields must be the numbers {', '.join(sorted(names))}.")
    try:
        opt = cls(**given)
    except ValueError as e:
        raise ModelFileError(f"the optimizer is invalid: {e}") from None
    _check(_is_int(spec["step"]) and 0 <= spec["step"] < 2**62, "the optimizer step is invalid.")
    if spec["state"] is True:
        state = arrays.get("optimizer.state")
        want = (max(opt.n_state, 1), n_params)
        _check(state is not None and state.shape == want
               and state.dtype == np.dtype(dtype),
               f"the optimizer state must be a {dtype} array of shape {want}.")
        opt.state = state.copy()
        opt.step[0] = spec["step"]
    else:
        _check(spec["state"] is False, "the optimizer's state flag is invalid.")
    return opt


def _history(spec, arrays, model) -> History | None:
    if spec is None:
        return None
    keys = {"epoch", "loss", "val_loss", "metrics", "val_metrics", "time", "engine",
            "best_epoch", "best_loss", "stop_reason", "best_params"}
    _check(isinstance(spec, dict) and set(spec) == keys, "the history section is invalid.")
    lists = {k: spec[k] for k in ("loss", "val_loss", "time")}
    _check(all(isinstance(v, list) and all(map(_is_number, v)) for v in lists.values()),
           "the history's losses and times must be lists of numbers.")
    _check(isinstance(spec["epoch"], list) and all(map(_is_int, spec["epoch"])),
           "the history's epochs must be integers.")
    _check(isinstance(spec["engine"], list) and all(isinstance(v, str) for v in spec["engine"]),
           "the history's engines must be strings.")
    for key in ("metrics", "val_metrics"):
        _check(isinstance(spec[key], dict) and all(
            isinstance(v, list) and all(map(_is_number, v)) for v in spec[key].values()),
            f"the history's {key} must map names to lists of numbers.")
    _check(spec["best_epoch"] is None or _is_int(spec["best_epoch"]), "invalid best_epoch.")
    _check(_is_number(spec["best_loss"]) and isinstance(spec["stop_reason"], str)
           and isinstance(spec["best_params"], bool), "invalid best_loss or stop_reason.")
    history = History(epoch=list(spec["epoch"]), loss=[float(v) for v in spec["loss"]],
                      val_loss=[float(v) for v in spec["val_loss"]],
                      metrics={k: [float(x) for x in v] for k, v in spec["metrics"].items()},
                      val_metrics={k: [float(x) for x in v]
                                   for k, v in spec["val_metrics"].items()},
                      time=[float(v) for v in spec["time"]], engine=list(spec["engine"]),
                      best_epoch=spec["best_epoch"], best_loss=float(spec["best_loss"]),
                      stop_reason=spec["stop_reason"])
    if spec["best_params"]:
        best = [arrays.get(f"best.{k}") for k in range(len(model._param_syms))]
        current = list(model.params.values())
        _check(all(b is not None and b.shape == np.shape(c) for b, c in zip(best, current)),
               "the history's best parameters do not match the model's.")
        history.best_params = {s: (b.copy() if b.shape else float(b))
                               for s, b in zip(model._param_syms, best)}
    return history


# -- checkpoints ---------------------------------------------------------------------------

class Checkpoints:
    """``fit``'s checkpoint: the model saved to ``path`` every ``every`` epochs (counted as
    ``epochs_trained``, so a resumed run keeps the same schedule) and when the fit ends."""

    def __init__(self, path: str | os.PathLike, every) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {every!r}")
        self.path, self.every = Path(path), every

    def limit(self, epoch: int, count: int) -> int:
        """``count`` epochs from ``epoch``, cut at the next checkpoint."""
        return min(count, self.every - epoch % self.every)

    def due(self, epoch: int) -> bool:
        return epoch % self.every == 0

    def save(self, model, consistent: bool = True) -> None:
        """Save ``model``, unless its parameters are not finite or not ``consistent`` with
        its ``epochs_trained`` (a run stopped inside a chunk of epochs): then the last
        checkpoint stays, with a warning."""
        why = ("the parameters are not finite" if not np.all(np.isfinite(model._values)) else
               None if consistent else "the run stopped inside a chunk of epochs")
        if why:
            warnings.warn(f"the checkpoint {self.path} was not updated: {why}; it keeps the "
                          "last complete state.", RuntimeWarning, stacklevel=3)
            return
        save_model(model, self.path)
