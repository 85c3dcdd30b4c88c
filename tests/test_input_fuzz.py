"""Property tests over call-time inputs: random Python, NumPy and SymPy values of many kinds
fed to ``f(...)``, ``value_and_grad``, ``value_and_grad_batch`` and
``value_and_grad_array(out=...)`` on both backends.

Every call either returns the right numbers (checked against the expression written out
in NumPy, whose derivatives are checked against ``sympy.diff``) or raises a symgrad error;
any other exception is a crash and fails the test. Beyond that, a value that is a real
number must be accepted and anything else must be refused (accepting a string that NumPy
can parse is silent garbage, refusing a NumPy float32 is a bug): the oracle below says which
is which, from the kinds of values alone. The counts of inputs tried, clear errors and
crashes are printed at the end of the module (the issue's note needs them).
"""

import math
import os
import warnings
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp

import symgrad as sg

hypothesis = pytest.importorskip("hypothesis", reason="needs the 'test' extra: hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

w, x, y = sp.symbols("w x y")
L = w * sp.sin(x) + sp.exp(-w**2) * x + y / (1 + x**2)
# The gradient written out by hand (the NumPy reference below transcribes these), checked
# against sympy.diff in test_the_reference_is_sympys_derivative.
DL_DW = sp.sin(x) - 2 * w * sp.exp(-w**2) * x
DL_DX = w * sp.cos(x) + sp.exp(-w**2) - 2 * x * y / (1 + x**2) ** 2

REFUSE = object()
MODERATE = 1e70  # below this no intermediate of L or its gradient can overflow
COUNTS: dict[str, Counter] = {}
#: Examples per property and backend; $SYMGRAD_FUZZ_EXAMPLES raises it for a longer hunt.
EXAMPLES = int(os.environ.get("SYMGRAD_FUZZ_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(scope="module", params=["flat", "tape"])
def f(request):
    return sg.compile(L, wrt=[w, x], backend=request.param)


@pytest.fixture(scope="module", autouse=True)
def report(request):
    yield
    lines = ["", "input fuzz (issue 14): inputs tried / right numbers / clear errors / crashes"]
    total = Counter()
    for api, c in sorted(COUNTS.items()):
        total.update(c)
        lines.append(f"  {api:<32} {c['tried']:>5} / {c['correct']:>5} / {c['clear']:>5} / "
                     f"{c['crash']:>2}")
    lines.append(f"  {'all':<32} {total['tried']:>5} / {total['correct']:>5} / "
                 f"{total['clear']:>5} / {total['crash']:>2}")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown in a normal run, not only with -s
        print("\n".join(lines))


def test_the_reference_is_sympys_derivative():
    assert sp.simplify(sp.diff(L, w) - DL_DW) == 0
    assert sp.simplify(sp.diff(L, x) - DL_DX) == 0


def reference(wv, xv, yv):
    """Value and gradient in NumPy, with the size of the terms each one sums (for a
    tolerance that allows rounding, also where terms cancel)."""
    wv, xv, yv = (np.asarray(v, dtype=np.float64) for v in (wv, xv, yv))
    with np.errstate(all="ignore"):
        e, s, c, q = np.exp(-wv * wv), np.sin(xv), np.cos(xv), 1 + xv * xv
        terms = {
            "value": (wv * s, e * xv, yv / q),
            "dw": (s, -2 * wv * e * xv),
            "dx": (wv * c, e, -2 * xv * yv / q**2),
        }
        return {k: (sum(t), sum(np.abs(u) for u in t)) for k, t in terms.items()}


def agrees(got, want, scale, moderate: bool) -> bool:
    got, want, scale = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                             for v in (got, want, scale)))
    finite = np.isfinite(got) & np.isfinite(want)
    with np.errstate(invalid="ignore"):  # inf - inf where both overflowed
        close = np.abs(got - want) <= 1e-12 * scale + 1e-300
    if moderate:  # no overflow possible: both finite, and equal up to rounding
        return bool(np.all(finite & close))
    return bool(np.all(close | ~finite))  # overflow may turn up in a different order


# -- the oracle: what is a real number ---------------------------------------------------------

def as_real(v, nan_ok: bool = False):
    """The float a value stands for, or REFUSE; NaN is refused (every result would be NaN)
    unless ``nan_ok`` (the batch calls refuse NaN where it reaches a point)."""
    if isinstance(v, np.ndarray):
        if v.ndim != 0 or v.dtype.kind not in "biuf":
            return REFUSE
        v = v[()]
    if isinstance(v, (bool, np.bool_, np.integer, np.float16, np.float32, np.float64)):
        out = float(v)
    elif isinstance(v, (int, Fraction)):
        try:
            out = float(v)
        except OverflowError:
            return REFUSE
    elif isinstance(v, float):
        out = v
    elif v is sp.nan:  # SymPy's NaN is a NaN like float("nan"): refused where it is used
        out = math.nan
    elif isinstance(v, sp.Basic) and v.is_number and v.is_extended_real:
        out = float(v)
        if math.isinf(out) and v.is_finite:
            return REFUSE
    else:  # text, bytes, None, complex, Decimal, containers, symbols, sympy.zoo/I
        return REFUSE
    return REFUSE if math.isnan(out) and not nan_ok else out


def as_column(v):
    """A batch argument: a float, a 1-D float64 array (NaN kept), or REFUSE."""
    if isinstance(v, np.ndarray) and v.ndim == 1:
        return v.astype(np.float64) if v.dtype.kind in "biuf" else REFUSE
    if isinstance(v, (list, tuple)):
        items = [as_real(e, nan_ok=True) for e in v]
        return REFUSE if any(e is REFUSE for e in items) else np.array(items, dtype=np.float64)
    return as_real(v, nan_ok=True)


def as_columns(values):
    """``(n, columns)`` for the batch calls, or REFUSE (NaN at a point is refused: for L
    every result there would be NaN)."""
    cols = [as_column(v) for v in values]
    if any(c is REFUSE for c in cols):
        return REFUSE
    lengths = {c.shape[0] for c in cols if isinstance(c, np.ndarray)}
    if len(lengths) > 1:
        return REFUSE
    n = lengths.pop() if lengths else 1
    cols = [c if isinstance(c, np.ndarray) else np.full(n, c) for c in cols]
    return REFUSE if any(np.isnan(c).any() for c in cols) else (n, cols)


# -- strategies: many kinds of values ---------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
moderate = st.floats(-1e6, 1e6)
NUMPY_FLOATS = [np.float16, np.float32, np.float64]
NUMPY_INTS = [np.int8, np.int32, np.int64, np.uint8, np.uint64]

def _numpy_float(value: float, kind: type):
    with np.errstate(over="ignore"):
        return kind(value)


real_scalars = st.one_of(
    moderate, moderate, finite,
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1.7976931348623157e308]),
    st.integers(-10**6, 10**6),
    st.integers(-(10**400), 10**400),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 2**1023 * 3, 10**400]),
    st.booleans(),
    st.builds(_numpy_float, moderate, st.sampled_from(NUMPY_FLOATS)),  # float16 may be inf
    st.builds(lambda t: t("nan"), st.sampled_from(NUMPY_FLOATS)),
    st.builds(lambda v, t: t(v % 100), st.integers(0, 99), st.sampled_from(NUMPY_INTS)),
    st.just(np.uint64(2**64 - 1)), st.just(np.bool_(True)),
    st.builds(np.array, moderate),  # 0-d arrays
    st.fractions(max_denominator=1000),
    st.sampled_from([sp.pi, sp.E, sp.Integer(3), sp.Rational(1, 3), sp.Float(2.5), sp.oo,
                     -sp.oo, sp.sqrt(2)]),
)
other_values = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.text(max_size=4), st.sampled_from(["1.5", "nan", "inf", "1e400", " 2 ", "0x10"]),
    st.binary(max_size=3), st.none(),
    st.complex_numbers(max_magnitude=1e6), st.builds(np.complex128, moderate),
    st.sampled_from([sp.nan, sp.zoo, sp.I, sp.Integer(10) ** 400, y + 1]),
    st.just({}), st.just(set()), st.builds(lambda v: (v,), moderate),
    st.builds(lambda v: [v], moderate), st.builds(lambda v: np.array([v]), moderate),
)
scalars = st.one_of(real_scalars, other_values)

ARRAY_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int8, np.uint64, np.bool_,
                np.complex128, np.dtype("<U3"), np.dtype("S2")]


@st.composite
def arrays(draw, max_dims: int = 2):
    a = draw(hnp.arrays(st.sampled_from(ARRAY_DTYPES),
                        hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=4)))
    if a.ndim == 1 and a.size > 1 and draw(st.booleans()):
        a = a[::2]  # not contiguous
    if draw(st.booleans()):
        a.flags.writeable = False
    return a


def lists_of(elements):
    return st.lists(elements, max_size=4)


batch_values = st.one_of(scalars, arrays(), lists_of(moderate), lists_of(scalars),
                         lists_of(lists_of(moderate)))
REAL_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int8, np.uint64, np.bool_]


@st.composite
def real_column(draw, n: int):
    """``n`` real values as a list of mixed kinds or an array of a real dtype (maybe strided
    or read-only)."""
    if draw(st.booleans()):
        return draw(st.lists(real_scalars, min_size=n, max_size=n))
    a = draw(hnp.arrays(st.sampled_from(REAL_DTYPES), 2 * n if draw(st.booleans()) else n))
    a = a[::2] if a.shape[0] == 2 * n else a
    if draw(st.booleans()):
        a.flags.writeable = False
    return a


@st.composite
def mutated(draw, valid: list, anything):
    """``valid`` as it is (half the time), else with one or more entries replaced by
    ``anything``: most inputs are then near a valid call, and both outcomes are common."""
    values = list(valid)
    if draw(st.booleans()):
        for k in draw(st.lists(st.integers(0, len(values) - 1), min_size=1, max_size=2)):
            values[k] = draw(anything)
    return values


@st.composite
def scalar_calls(draw):
    return draw(mutated(draw(st.lists(real_scalars, min_size=3, max_size=3)), scalars))


@st.composite
def batch_calls(draw, width: int = 3, least: int = 0):
    n = draw(st.integers(least, 4))
    valid = [draw(st.one_of(real_scalars, real_column(n))) if least == 0 else draw(real_column(n))
             for _ in range(width)]
    return draw(mutated(valid, batch_values))


# -- the properties ----------------------------------------------------------------------------

def run(api: str, call, expect_refusal: bool, check):
    """Call; count; a symgrad error is clear, anything else raised is a crash."""
    counts = COUNTS.setdefault(api, Counter())
    counts["tried"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "NaN at this point" where inputs are inf
            result = call()
    except sg.SymgradError as exc:
        counts["clear"] += 1
        assert isinstance(exc, sg.InputError), exc
        assert expect_refusal, f"refused a valid input: {exc}"
        return
    except Exception:
        counts["crash"] += 1
        raise
    assert not expect_refusal, f"accepted an input that is not a real number: {result!r:.80}"
    check(result)
    counts["correct"] += 1


@SETTINGS
@given(scalar_calls(), st.booleans())
def test_scalar_calls(f, values, by_keyword):
    reals = [as_real(v) for v in values]
    refuse = any(r is REFUSE for r in reals)
    ref = None if refuse else reference(*reals)
    moderate_ = not refuse and all(abs(r) <= MODERATE for r in reals)
    kwargs = dict(zip("wxy", values)) if by_keyword else {}
    args = () if by_keyword else tuple(values)

    def value_only(got):
        assert isinstance(got, float) and agrees(got, *ref["value"], moderate_), (got, ref)

    def with_grad(got):
        value, grad = got
        assert isinstance(grad, tuple) and len(grad) == 2
        assert agrees(value, *ref["value"], moderate_), (got, ref)
        assert agrees(grad[0], *ref["dw"], moderate_) and agrees(grad[1], *ref["dx"], moderate_)

    run(f"{f.backend} f(...)", lambda: f(*args, **kwargs), refuse, value_only)
    run(f"{f.backend} value_and_grad", lambda: f.value_and_grad(*args, **kwargs), refuse,
        with_grad)


@SETTINGS
@given(batch_calls(), st.data())
def test_batch_calls(f, values, data):
    bound = as_columns(values)
    refuse = bound is REFUSE
    n = 0 if refuse else bound[0]
    out_kind = data.draw(st.sampled_from(["none"] * 4 + ["good"] * 4 + [
        "read-only", "list", "float32", "short", "one"]))
    out = _batch_out(out_kind, n)
    refuse_out = refuse or out_kind not in ("none", "good")

    def check(got):
        value, grad = got
        assert value.shape == (n,) and grad.shape == (2, n)
        if out is not None:
            assert value is out[0] and grad is out[1]
        cols = bound[1]
        ref = reference(*cols)
        moderate_ = all(np.all(np.abs(c) <= MODERATE) for c in cols)
        assert agrees(value, *ref["value"], moderate_)
        assert agrees(grad[0], *ref["dw"], moderate_) and agrees(grad[1], *ref["dx"], moderate_)

    run(f"{f.backend} value_and_grad_batch", lambda: f.value_and_grad_batch(*values, out=out),
        refuse_out, check)

    def check_values(got):
        ref = reference(*bound[1])
        moderate_ = all(np.all(np.abs(c) <= MODERATE) for c in bound[1])
        assert got.shape == (n,) and agrees(got, *ref["value"], moderate_)

    keywords = dict(zip("wxy", values))
    run(f"{f.backend} value_batch", lambda: f.value_batch(**keywords), refuse, check_values)


def _batch_out(kind: str, n: int):
    if kind == "none":
        return None
    values, grads = np.empty(n), np.empty((2, n))
    if kind == "read-only":
        grads.flags.writeable = False
    return {"good": (values, grads), "read-only": (values, grads),
            "list": [values.tolist(), grads], "float32": (np.zeros(n, np.float32), grads),
            "short": (values[:-1] if n else np.empty(1), grads), "one": (values,)}[kind]


@SETTINGS
@given(st.one_of(real_column(3), st.lists(moderate, min_size=3, max_size=3),
                 arrays(max_dims=1), lists_of(scalars), scalars,
                 st.builds(lambda c: c[:2], real_column(3))),
       st.sampled_from(["none", "none", "good", "good", "strided", "read-only", "list",
                        "float32", "2-d", "short"]))
def test_array_call(f, x_in, out_kind):
    column = as_column(x_in)
    refuse_x = (not isinstance(column, np.ndarray) or column.shape != (3,)
                or np.isnan(column).any())
    out = {"none": None, "good": np.empty(2), "strided": np.empty(4)[::2],
           "read-only": np.empty(2), "list": [0.0, 0.0], "float32": np.empty(2, np.float32),
           "2-d": np.empty((1, 2)), "short": np.empty(1)}[out_kind]
    if out_kind == "read-only":
        out.flags.writeable = False

    def check(got):
        value, grad = got
        assert grad.shape == (2,) and (out is None or grad is out)
        ref = reference(*column)
        moderate_ = bool(np.all(np.abs(column) <= MODERATE))
        assert agrees(value, *ref["value"], moderate_)
        assert agrees(grad[0], *ref["dw"], moderate_) and agrees(grad[1], *ref["dx"], moderate_)

    run(f"{f.backend} value_and_grad_array", lambda: f.value_and_grad_array(x_in, out=out),
        refuse_x or out_kind not in ("none", "good", "strided"), check)


@SETTINGS
@given(batch_calls(width=2, least=1))
def test_model_data_columns(values):
    """A Model's data columns follow the same rule (refused before anything compiles)."""
    cols = [as_column(v) for v in values]  # data must also be finite
    ok = all(isinstance(c, np.ndarray) and c.size for c in cols) and len(
        {c.shape[0] for c in cols}) == 1 and all(np.isfinite(c).all() for c in cols)
    model = _MODEL

    def check(got):
        with np.errstate(over="ignore"):
            want = np.mean((0.5 * cols[0] - cols[1]) ** 2)  # positive terms: no cancellation
        assert got == want or abs(got - want) <= 1e-12 * want, (got, want)

    run("Model.evaluate data", lambda: model.evaluate({x: values[0], y: values[1]}), not ok,
        check)


_MODEL = sg.Model(loss=(w * x - y) ** 2, params={w: 0.5}, data=[x, y])
