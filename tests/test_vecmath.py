"""templates/vecmath.py: accuracy against NumPy and against the exact result (x87 long
double, or mpmath where long double is just double), the IEEE special cases, hard trig
reductions, and that loops calling the functions vectorize without calls."""

import ast
import importlib.util
import math
import re
from pathlib import Path

import mpmath
import numba
import numpy as np
import pytest

VECMATH = Path(__file__).resolve().parents[1] / "templates" / "vecmath.py"
NAMES = ["exp", "expm1", "log", "log1p", "tanh", "sin", "cos"]
N = 1_000_000
MAX_ULP = 2


def _load():
    spec = importlib.util.spec_from_file_location("symgrad_templates_vecmath", VECMATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vm = _load()


def _make_loop(f):
    @numba.njit(error_model="numpy")
    def loop(x, out):
        for i in range(x.size):
            out[i] = f(x[i])

    return loop


LOOPS = {name: _make_loop(getattr(vm, "v" + name)) for name in NAMES}


def run(name, x):
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    LOOPS[name](x, out)
    return out


def reference(name, x):
    with np.errstate(all="ignore"):
        return getattr(np, name)(x)


def ulp_distance(a, b):
    """Number of doubles between a and b (+0.0 and -0.0 are equal, two NaNs are 0 apart,
    NaN and a number are 2**62 apart)."""
    ia = a.view(np.int64)
    ib = b.view(np.int64)
    ia = np.where(ia < 0, np.int64(-(2**63)) - ia, ia)
    ib = np.where(ib < 0, np.int64(-(2**63)) - ib, ib)
    d = np.abs(ia - ib)  # wraps only for distances >= 2**53, which stay huge
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    d[nan_a & nan_b] = 0
    d[nan_a ^ nan_b] = 2**62
    return d


def log_uniform(rng, lo, hi, n):
    return 10.0 ** rng.uniform(math.log10(lo), math.log10(hi), n)


def _domains():
    rng = np.random.default_rng(20240611)
    signs = np.where(rng.random(N) < 0.5, -1.0, 1.0)
    return {
        "exp": {
            "[-745, 710]": rng.uniform(-745.0, 710.0, N),
            "[-1, 1]": rng.uniform(-1.0, 1.0, N),
            "subnormal results [-745.2, -708.3]": rng.uniform(-745.2, -708.3, N),
        },
        "expm1": {
            "[-40, 709.8]": rng.uniform(-40.0, 709.8, N),
            "[-1, 1]": rng.uniform(-1.0, 1.0, N),
            "+-[1e-300, 1e-3]": signs * log_uniform(rng, 1e-300, 1e-3, N),
        },
        "log": {
            "[1e-308, 1e308] log-uniform": log_uniform(rng, 1e-308, 1e308, N),
            "subnormals": rng.uniform(0.0, 2.2250738585072014e-308, N),
            "[0.5, 2]": rng.uniform(0.5, 2.0, N),
            "1 +- 1e-6": 1.0 + rng.uniform(-1e-6, 1e-6, N),
        },
        "log1p": {
            "[-1, 10]": rng.uniform(-1.0, 10.0, N),
            "+-[1e-300, 1e-3]": signs * log_uniform(rng, 1e-300, 1e-3, N),
            "[1e-3, 1e308] log-uniform": log_uniform(rng, 1e-3, 1e308, N),
            "(-1, -0.5]": -1.0 + log_uniform(rng, 1e-16, 0.5, N),
        },
        "tanh": {
            "[-30, 30]": rng.uniform(-30.0, 30.0, N),
            "[-1, 1]": rng.uniform(-1.0, 1.0, N),
            "+-[1e-300, 1e-3]": signs * log_uniform(rng, 1e-300, 1e-3, N),
        },
        "sin": {
            "[-1e4, 1e4]": rng.uniform(-1e4, 1e4, N),
            "[-1e6, 1e6]": rng.uniform(-1e6, 1e6, N),
            "+-[1e-8, 1e300] log-uniform": signs * log_uniform(rng, 1e-8, 1e300, N),
        },
        "cos": {
            "[-1e4, 1e4]": rng.uniform(-1e4, 1e4, N),
            "[-1e6, 1e6]": rng.uniform(-1e6, 1e6, N),
            "+-[1e-8, 1e300] log-uniform": signs * log_uniform(rng, 1e-8, 1e300, N),
        },
    }


DOMAINS = _domains()
CASES = [(name, label) for name in NAMES for label in DOMAINS[name]]


EXTENDED = np.finfo(np.longdouble).nmant >= 63


def error_in_ulps(name, x, got):
    """|got - exact| in units of the last place of the exact result rounded to double,
    where that and got are finite: all points against long double, 3000 against mpmath."""
    if EXTENDED:
        with np.errstate(all="ignore"):
            exact = getattr(np, name)(x.astype(np.longdouble))
            rounded = exact.astype(np.float64)
        keep = np.isfinite(rounded) & np.isfinite(got)
        spacing = np.spacing(np.abs(rounded[keep])).astype(np.longdouble)
        return np.abs(got[keep].astype(np.longdouble) - exact[keep]) / spacing, x[keep]
    pick = np.random.default_rng(0).choice(x.size, 3000, replace=False)
    mpmath.mp.prec = 1300 if name in ("sin", "cos") else 120
    err, kept = [], []
    for v, g in zip(x[pick].tolist(), got[pick].tolist()):
        exact = getattr(mpmath, name)(v)
        rounded = float(exact)
        if math.isfinite(rounded) and math.isfinite(g):
            err.append(float(abs(g - exact) / math.ulp(rounded)))
            kept.append(v)
    return np.array(err), np.array(kept)


@pytest.mark.parametrize("name,label", CASES, ids=[f"{n}:{d}" for n, d in CASES])
def test_random_points(name, label):
    x = DOMAINS[name][label]
    got = run(name, x)
    d = ulp_distance(got, reference(name, x))
    worst = int(np.argmax(d))
    assert d[worst] <= MAX_ULP, f"v{name}({x[worst]!r}) is {d[worst]} ulp from numpy"
    err, kept = error_in_ulps(name, x, got)
    worst = int(np.argmax(err))
    assert err[worst] < 1.0, f"v{name}({kept[worst]!r}) is {float(err[worst]):.3f} ulp off"


_EDGES = [
    0.0, 5e-324, 1e-323, 2.225073858507201e-308, 2.2250738585072014e-308, 1e-300, 1e-100,
    1e-30, 1e-17, 5.551115123125783e-17, 1.1102230246251565e-16, 2.220446049250313e-16,
    1e-12, 3.725290298461914e-09, 7.450580596923828e-09, 1e-8, 1e-5, 1e-3, 0.1, 0.25,
    0.34657359027997264, 0.5, 0.6931471805599453, 0.7853981633974483, 0.9999999999999999,
    1.0, 1.0000000000000002, 1.5707963267948966, 2.0, 3.141592653589793, 10.0, 19.0, 22.0,
    36.0, 37.5, 40.0, 50.0, 100.0, 708.3964185322641, 708.3964185322642, 709.782712893384,
    709.7827128933841, 710.0, 745.1332191019411, 745.1332191019412, 746.0, 1e4, 1e6,
    2.0**31, 2.0**52, 2.0**53, 1e22, 1e100, 1e300, 1.7976931348623157e308, math.inf,
]
EDGES = np.array(_EDGES + [-v for v in _EDGES] + [math.nan, -math.nan])
EDGES = np.concatenate([EDGES, EDGES - 1.0, EDGES + 1.0])  # around log1p's -1 too


@pytest.mark.parametrize("name", NAMES)
def test_edge_cases(name):
    got, ref = run(name, EDGES), reference(name, EDGES)
    d = ulp_distance(got, ref)
    worst = int(np.argmax(d))
    assert d[worst] <= MAX_ULP, f"v{name}({EDGES[worst]!r}) = {got[worst]!r}, numpy {ref[worst]!r}"
    special = ~np.isfinite(ref) | (ref == 0.0) | ~np.isfinite(got) | (got == 0.0)
    for x, g, r in zip(EDGES[special], got[special], ref[special]):
        assert (math.isnan(g) and math.isnan(r)) or g.tobytes() == r.tobytes(), (
            f"v{name}({x!r}) = {g!r}, want {r!r}"
        )


@pytest.mark.parametrize(
    "name,x,want",
    [
        ("exp", -math.inf, 0.0), ("exp", math.inf, math.inf), ("exp", -0.0, 1.0),
        ("exp", 709.782712893384, 1.7976931348622732e308), ("exp", 709.79, math.inf),
        ("exp", -745.1332191019411, 5e-324), ("exp", -745.1332191019412, 0.0),
        ("expm1", -0.0, -0.0), ("expm1", -math.inf, -1.0), ("expm1", math.inf, math.inf),
        ("log", 0.0, -math.inf), ("log", -0.0, -math.inf), ("log", -1.0, math.nan),
        ("log", math.inf, math.inf), ("log", -math.inf, math.nan), ("log", 1.0, 0.0),
        ("log", 5e-324, -744.4400719213812),
        ("log1p", -1.0, -math.inf), ("log1p", -1.5, math.nan), ("log1p", -0.0, -0.0),
        ("log1p", math.inf, math.inf), ("log1p", 5e-324, 5e-324),
        ("tanh", math.inf, 1.0), ("tanh", -math.inf, -1.0), ("tanh", -0.0, -0.0),
        ("tanh", -5e-324, -5e-324),
        ("sin", math.inf, math.nan), ("sin", -0.0, -0.0), ("sin", -5e-324, -5e-324),
        ("cos", -math.inf, math.nan), ("cos", -0.0, 1.0), ("cos", 5e-324, 1.0),
    ]
    + [(name, math.nan, math.nan) for name in NAMES],
)
def test_ieee_special_values(name, x, want):
    got = run(name, np.array([x]))[0]
    assert (math.isnan(got) and math.isnan(want)) or got.tobytes() == np.float64(want).tobytes()


def _hard_trig_arguments():
    """Doubles nearest to k*pi/2 (the reduction cancels up to ~60 bits), every magnitude,
    and the classic worst case 6381956970095103 * 2**797 (|x mod pi/2| ~ 2**-61)."""
    mpmath.mp.prec = 1300
    rng = np.random.default_rng(7)
    xs = [math.ldexp(6381956970095103, 797)]
    for e in list(range(1, 64)) + [int(v) for v in rng.integers(64, 1021, 200)]:
        if e <= 53:
            k = int(rng.integers(1, 2**e))
        else:
            k = int(rng.integers(2**52, 2**53)) << (e - 53)
        xs.append(float(mpmath.mpf(k) * mpmath.pi / 2))
    x = np.array(xs)
    x = np.concatenate([x, -x, np.nextafter(x, 0.0)])
    want_sin = np.array([float(mpmath.sin(v)) for v in x])
    want_cos = np.array([float(mpmath.cos(v)) for v in x])
    return x, {"sin": want_sin, "cos": want_cos}


HARD_X, HARD_WANT = _hard_trig_arguments()


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_hard_trig_reductions_within_1_ulp_of_exact(name):
    # glibc (and so NumPy) is 8 ulp off for cos(6381956970095103 * 2**797); mpmath is exact
    d = ulp_distance(run(name, HARD_X), HARD_WANT[name])
    worst = int(np.argmax(d))
    assert d[worst] <= 1, f"v{name}({HARD_X[worst]!r}) is {d[worst]} ulp from the exact value"


PACKED = re.compile(r"\bv?(?:fn?m(?:add|sub)\d{3}|mul|add|sub)pd\b")
CALL = re.compile(r"\bcall")


@pytest.mark.parametrize("name", NAMES)
def test_loop_vectorizes_without_calls(name):
    loop = LOOPS[name]
    run(name, np.ones(8))
    asm = loop.inspect_asm(loop.signatures[0]).split(".Lfunc_end0")[0]  # the loop, not its wrapper
    assert len(PACKED.findall(asm)) >= 10, "no packed double arithmetic: the loop did not vectorize"
    assert not CALL.findall(asm), "the loop still calls a function"


def test_module_imports_only_math_numpy_numba():
    imported = set()
    for node in ast.walk(ast.parse(VECMATH.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported == {"math", "numpy", "numba"}
