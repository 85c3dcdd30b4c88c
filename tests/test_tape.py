"""The tape (one fixed interpreter kernel) computes what the flat compiled module computes.

Every check runs the same expression both ways: ``sg.compile`` (printed code, compiled by
Numba per model) and ``compile_tape`` (the same program lowered to opcodes for
``symgrad.kernels.tape_vm``), and wants agreement to 1e-12 relative.
"""

import math

import numpy as np
import pytest
import sympy as sp
from conftest import expression_trees
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from numba import njit
from sympy.codegen.cfunctions import expm1, log1p

import symgrad as sg
from symgrad.compile import CompiledFunction
from symgrad.compile.tape import Tape, compile_tape, lower
from symgrad.kernels import tape_vm as vm

x, y, z = sp.symbols("x y z")
RTOL = 1e-12


def assert_close(actual, desired, rtol=RTOL):
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=0, equal_nan=True)


def both(expr, wrt=None, **kwargs):
    return sg.compile(expr, wrt=wrt, **kwargs), compile_tape(expr, wrt=wrt, **kwargs)


def assert_same(f, tape, args):
    """Value, value-and-gradient and the array form agree between module and tape."""
    want_v, want_g = f.module.value_and_grad(*args)
    got_v, got_g = tape.value_and_grad(*args)
    assert isinstance(got_v, float) and isinstance(got_g, tuple)
    assert_close(got_v, want_v)
    assert_close(got_g, want_g)
    assert_close(tape.value(*args), f.module.value(*args))
    grad = np.empty(len(f.wrt))
    assert_close(tape.value_and_grad_array(np.array(args, dtype=float), grad), want_v)
    assert_close(grad, want_g)


def test_lecture_neuron():
    w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
    wrt = [w0, x0, w1, x1, w2]
    f, tape = both(sg.sigmoid(w0 * x0 + w1 * x1 + w2), wrt)
    point = (2.0, -1.0, -3.0, -2.0, -3.0)
    value, grad = tape.value_and_grad(*point)
    assert value == pytest.approx(0.7310585786300049, rel=RTOL)
    assert grad == pytest.approx((-0.19661193324148185, 0.3932238664829637, -0.3932238664829637,
                                  -0.5898357997244456, 0.19661193324148185), rel=RTOL)
    assert_same(f, tape, point)


# One small expression per primitive the printer supports, at points away from kinks.
FUNCTIONS = [
    (sg.sigmoid(x * y), (0.7, -2.0)),
    (sg.sigmoid(x * y), (0.7, 2.0)),
    (sg.relu(x) * y, (0.7, 2.0)),
    (sg.relu(x) * y, (-0.7, 2.0)),
    (sg.leaky_relu(x) + sg.leaky_relu(y), (0.7, -2.0)),
    (sg.leaky_relu(x, y), (-0.7, 0.2)),
    (sg.elu(x) + sg.elu(y, 0.5), (0.7, -2.0)),
    (sg.elu(x, y), (-0.7, 0.2)),
    (sg.softplus(x) + sg.softplus(y), (0.7, -2.0)),
    (sp.Max(x, y, z), (-0.4, 0.8, 0.3)),
    (sp.Min(x * y, z), (-0.4, 0.8, 0.3)),
    (sp.Heaviside(x) * y + sp.Heaviside(y, 0) * x, (0.7, -2.0)),
    (sp.sign(x) * y + sp.sign(y) * x, (0.7, -2.0)),
    (sp.floor(x) * y + sp.ceiling(y) * x, (1.7, -2.3)),
    (sp.Abs(x) * y + sp.Abs(y), (-0.7, 2.0)),
    (sp.erf(x) + sp.erfc(x * y), (0.3, -0.8)),
    (sp.atan2(y, x), (-0.4, 0.8)),
    (x**3 + y**2, (0.7, -2.5)),
    (x**-2 + y**-3 + x**-1, (0.7, -2.5)),
    (sp.sqrt(x) + 1 / sp.sqrt(y), (0.7, 2.5)),
    (x ** sp.Rational(1, 3) + y ** sp.Rational(-1, 3), (0.7, 2.5)),
    (x ** sp.Rational(3, 2) + y ** sp.Float(2.5), (0.7, 2.5)),
    (x**y + 2**x, (1.3, 0.6)),
    (sp.exp(x) * sp.log(y), (0.4, 3.0)),
    (sp.sin(x) * sp.cos(y) + sp.tan(x * y), (0.4, -0.8)),
    (sp.tanh(x) + sp.sinh(y) * sp.cosh(x), (0.4, -0.8)),
    (sp.asin(x) + sp.acos(y) + sp.atan(x * y), (0.4, -0.8)),
    (sp.asinh(x) + sp.acosh(y) + sp.atanh(x / 2), (0.4, 1.8)),
    (sp.pi * x + sp.E * y - sp.Rational(2, 3) * x * y + 0.25 * y / x, (0.4, 1.8)),
    (sp.exp(-((x - y) ** 2) / (2 * z**2)) / z, (0.2, -0.1, 0.9)),
    (3 * x * y * z - x / (y * z) + 2 * x / 3, (0.2, -0.1, 0.9)),
]


@pytest.mark.parametrize("expr, point", FUNCTIONS, ids=[str(e) for e, _ in FUNCTIONS])
def test_every_function_matches_the_flat_module(expr, point):
    wrt = [x, y, z][: len(point)]
    f, tape = both(expr, wrt)
    assert_same(f, tape, point)


PIECEWISE = sp.Piecewise(
    (x * y, sp.And(x > 0, y <= 1)),
    (x + y, sp.Or(sp.Eq(x, 1), sp.Ne(y, 2))),
    (z, sp.Not(sp.And(x > 0, z > 0.5))),
    (x - z, True),
)


@pytest.mark.parametrize("point", [(0.5, 0.5, 0.1), (-0.5, 2.0, 0.9), (0.5, 2.0, 0.9),
                                   (1.0, 2.0, 0.1), (0.5, 3.0, 0.1), (-0.5, 3.0, 0.1)])
def test_piecewise_with_relations_and_boolean_conditions(point):
    f, tape = both(PIECEWISE, [x, y, z])
    assert_same(f, tape, point)


def test_piecewise_without_a_default_branch_is_nan_outside():
    f, tape = both(sp.Piecewise((x**2, x > 0)), [x])
    assert_same(f, tape, (0.5,))
    assert math.isnan(tape.value(-0.5))
    assert_same(f, tape, (-0.5,))


@pytest.mark.parametrize("point", [(0.0, 0.0, 0.0), (0.0, 1.0, -1.0), (1.0, 1.0, 0.0)])
def test_kinks_take_the_same_conventions(point):
    """At a kink both paths take the same subgradient (max/min ties split, sign(0) = 0)."""
    expr = (sp.Max(x, y) + sp.Min(y, z) + sp.Abs(z) + sg.relu(x) + sp.sign(x) * y
            + sp.Heaviside(z) * x + sg.leaky_relu(z) + sg.elu(x))
    f, tape = both(expr, [x, y, z])
    assert_same(f, tape, point)


class tape_swish(sp.Function):
    nargs = 1


@sg.rule(tape_swish, forward=lambda a: a * sg.sigmoid(a))
def _tape_swish(node, out, grad_out):
    (a,) = node.args
    s = sg.sigmoid(a)
    return (grad_out * (s + out * (1 - s)),)


class tape_blend(sp.Function):
    nargs = 2


@sg.rule(tape_blend, forward=lambda a, b: log1p(expm1(a) ** 2) + b * tape_swish(a * b))
def _tape_blend(node, out, grad_out):
    a, b = node.args
    e = sp.exp(a)
    s = sg.sigmoid(a * b)
    dswish = s + a * b * s * (1 - s)
    da = 2 * (e - 1) * e / (1 + (e - 1) ** 2) + b * b * dswish
    return (grad_out * da, grad_out * (tape_swish(a * b) + a * b * dswish))


def test_user_registered_functions():
    f, tape = both(tape_swish(x * y) + 3 * tape_swish(y), [x, y])
    assert_same(f, tape, (0.7, -1.3))
    g, tape2 = both(tape_blend(sp.sin(x), y), [x, y])  # a user function inside another
    assert_same(g, tape2, (0.4, 1.5))


def test_user_function_without_forward_is_refused():
    class tape_mystery(sp.Function):
        nargs = 1

    @sg.rule(tape_mystery)
    def _tape_mystery(node, out, grad_out):
        return (grad_out,)

    with pytest.raises(NotImplementedError, match="forward="):
        compile_tape(tape_mystery(x), [x])


def _real(expr):
    return expr.xreplace({s: sp.Symbol(s.name, real=True) for s in expr.free_symbols})


@pytest.mark.parametrize("expr, point", [
    (sp.sin(x * y) * sp.exp(-x) + sp.log(1 + y**2) / (1 + x**2), (0.3, -1.2)),
    (sg.sigmoid(x * y + 1) * sp.atan(x) - sp.sqrt(1 + x**2 * y**2), (0.3, -1.2)),
])
def test_gradient_equals_sympy_diff(expr, point):
    tape = compile_tape(expr, [x, y])
    value, grad = tape.value_and_grad(*point)
    real = _real(expr)
    subs = dict(zip(sorted(real.free_symbols, key=lambda s: s.name), point))
    assert value == pytest.approx(float(real.evalf(30, subs=subs)), rel=1e-13)
    want = [float(sp.diff(real, s).evalf(30, subs=subs)) for s in subs]
    assert grad == pytest.approx(want, rel=1e-12)


UNARY = [
    sp.sin, sp.cos, sp.tanh, sp.atan, sg.sigmoid, sg.softplus, sp.Abs, sg.relu, sp.erf,
    lambda e: sp.exp(sp.tanh(e)),
    lambda e: sp.log(1 + e**2),
    lambda e: sp.sqrt(1 + e**2),
    lambda e: (2 + e**2) ** sp.Rational(-1, 3),
    lambda e: -e,
    lambda e: e**2,
    lambda e: (1 + e**2) ** -3,  # (a bare e**-3 at e = 0 raises in the flat module)
    lambda e: sp.Rational(2, 7) * e,
    lambda e: -0.37 * e,
]
BINARY = [
    lambda a, b: a + b,
    lambda a, b: a - b,
    lambda a, b: a * b,
    lambda a, b: a / (1 + b**2),
    lambda a, b: sp.Max(a, b),
    lambda a, b: sp.Min(a, b),
    lambda a, b: sp.atan2(a, 1 + b**2),
    lambda a, b: 3 * a * b - a / (2 + b**2),
    lambda a, b: sp.Piecewise((a, a > b), (a * b, b < 0.3), (a - b, True)),
]
leaves = st.sampled_from([x, y, z, sp.Integer(2), sp.Rational(1, 3), sp.Float(0.75), -x])
trees = expression_trees(leaves, UNARY, BINARY)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=trees, point=st.tuples(*[st.floats(-2, 2, allow_nan=False) for _ in range(3)]))
def test_random_trees_match_the_flat_module(expr, point):
    syms = [s for s in (x, y, z) if s in expr.free_symbols]
    if not syms:
        return
    try:
        f = sg.compile(expr, wrt=syms)
    except sg.UnsupportedFunctionError:  # SymPy folded nested Piecewise into ITE conditions
        assume(False)
    tape = compile_tape(expr, wrt=syms)
    args = [dict(zip((x, y, z), point))[s] for s in syms]
    assert_same(f, tape, args)


def test_batched_forms_match_the_flat_module():
    expr = sg.sigmoid(x * y - z) * sp.sin(x) + sp.Piecewise((y**2, y > 0), (z, True))
    f, tape = both(expr, [y, x], inputs=[x, y, z])
    rng = np.random.default_rng(1)
    columns = tuple(rng.uniform(-2, 2, 50) for _ in range(3))
    want_v, got_v = np.empty(50), np.empty(50)
    f.module.value_batch(columns, want_v)
    tape.value_batch(columns, got_v)
    assert_close(got_v, want_v)
    want_g, got_g = np.empty((2, 50)), np.empty((2, 50))
    f.module.value_and_grad_batch(columns, want_v, want_g)
    tape.value_and_grad_batch(columns, got_v, got_g)
    assert_close(got_v, want_v)
    assert_close(got_g, want_g)
    for i in (0, 17, 49):
        assert_same(f, tape, [c[i] for c in columns])


def test_compiled_function_runs_on_a_tape():
    """CompiledFunction takes a Tape where it takes the generated module."""
    expr = sp.exp(-x * y) + sg.softplus(z) * x
    f, tape = both(expr, [x, y])
    cf = sg.compile(expr, wrt=[x, y], backend="tape")
    assert isinstance(cf, CompiledFunction) and type(cf.module) is type(tape)
    assert_close(cf(0.3, -0.2, 1.1), f(0.3, -0.2, 1.1))
    assert_close(cf(y=-0.2, x=0.3, z=1.1), f(0.3, -0.2, 1.1))
    value, grad = cf.value_and_grad(0.3, -0.2, 1)
    assert_close(value, f.value_and_grad(0.3, -0.2, 1)[0])
    assert_close(grad, f.value_and_grad(0.3, -0.2, 1)[1])
    value, out = cf.value_and_grad_array([0.3, -0.2, 1.1])
    assert_close(out, f.value_and_grad_array([0.3, -0.2, 1.1])[1])
    strided = np.empty((2, 2))[:, 0]
    cf.value_and_grad_array(np.array([0.3, -0.2, 1.1]), out=strided)
    assert_close(strided, out)
    columns = ([0.1, 0.2], [1.0, 2.0], 0.5)
    assert_close(cf.value_batch(*columns), f.value_batch(*columns))
    v, g = cf.value_and_grad_batch(np.linspace(-1, 1, 7), 0.5, np.arange(7.0))
    v2, g2 = f.value_and_grad_batch(np.linspace(-1, 1, 7), 0.5, np.arange(7.0))
    assert_close(v, v2)
    assert_close(g, g2)
    with pytest.raises(sg.InputError):
        cf.value_and_grad("a", 1, 2)
    with pytest.raises(sg.InputError):
        cf.value_and_grad(1, 2)


def _w5(depth):
    ws = sp.symbols(f"w0:{depth}")
    state = sp.Float(0.5)
    for k in range(depth):
        state = state + ws[k] * sp.sin(state)
    return (state - 2) ** 2, list(ws)


def _w5_reference(w):
    """The chain by hand: x_{k+1} = x_k + w_k*sin(x_k), then the reverse sweep."""
    depth = len(w)
    xs = np.empty(depth + 1)
    xs[0] = 0.5
    for k in range(depth):
        xs[k + 1] = xs[k] + w[k] * np.sin(xs[k])
    loss = (xs[depth] - 2.0) ** 2
    grad = np.empty(depth)
    g = 2.0 * (xs[depth] - 2.0)
    for k in range(depth - 1, -1, -1):
        grad[k] = g * np.sin(xs[k])
        g = g * (1.0 + w[k] * np.cos(xs[k]))
    return loss, grad


def test_w5_depth_200_against_a_hand_written_reverse_pass():
    expr, ws = _w5(200)
    tape = compile_tape(expr, ws)
    w = np.random.default_rng(0).uniform(0.0, 0.2, 200)
    value, grad = tape.value_and_grad(*w)
    want_value, want_grad = _w5_reference(w)
    # the graph sums x_k's terms in another order than the reference: last bits differ
    assert value == pytest.approx(want_value, rel=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-9, atol=1e-15)
    out = np.empty(200)
    assert tape.value_and_grad_array(w, out) == value
    assert out.tolist() == list(grad)
    assert tape.n_slots < tape.code.shape[0]  # dead values' slots are reused


def test_slots_are_reused_after_the_last_read():
    expr = sum(sp.sin(sp.Symbol(f"a{k}") * x) for k in range(50))
    tape = compile_tape(expr)
    # live at once: 51 inputs, the 50 products (read again by cos) and the 50 sines (the
    # graph sums them after computing all of them); the 100 adjoint temporaries reuse slots
    assert tape.code.shape[0] == 398
    assert tape.n_slots == 51 + 50 + 50 + tape.consts.size


def test_kernel_integer_powers_repeat_numbas_literal_power():
    @njit(error_model="numpy")
    def literal_powers(v):
        return (v**2, v**3, v**5, v**-1, v**-2, v**-7, v**0, v**13)

    exponents = (2, 3, 5, -1, -2, -7, 0, 13)
    # (no zero or underflow: where v**n is 0, Numba's literal v**-n raises ZeroDivisionError,
    # the tape gives inf)
    for v in (0.7, -1.3, 3.1e5, 1e-20, -2.5e-3, 1e300):
        want = literal_powers(v)
        got = tuple(vm._powi(v, n) for n in exponents)
        assert np.array_equal(np.array(got), np.array(want), equal_nan=True)


def test_kernel_runs_a_hand_written_tape():
    op = vm.OPCODES
    # slots: 0 x, 1 y, 2..3 work, 4 the constant 2.0
    code = np.array([
        [op["MUL"], 2, 0, 1, 0],       # s2 = x*y
        [op["GT"], 3, 2, 4, 0],        # s3 = s2 > 2
        [op["SIN"], 2, 2, 0, 0],       # s2 = sin(s2)
        [op["SELECT"], 2, 2, 0, 3],    # s2 = s2 if s3 else x
        [op["POWI"], 2, 2, 0, -2],     # s2 = s2**-2
        [op["NOT"], 3, 3, 0, 0],       # s3 = not s3
    ], dtype=np.int32)
    slots = np.array([1.5, 2.0, 0.0, 0.0, 0.0])
    vm.run(code, np.array([2.0]), slots)
    assert slots[2] == math.sin(3.0) ** -2 and slots[3] == 0.0
    slots[:2] = (0.5, 2.0)
    vm.run(code, np.array([2.0]), slots)
    assert slots[2] == 0.5**-2 and slots[3] == 1.0


def test_a_malformed_tape_is_refused():
    op = vm.OPCODES
    good = np.array([[op["ADD"], 1, 0, 2, 0]], dtype=np.int32)
    Tape(good, 1, np.array([1.0]), 3, 1, np.array([1]), ["x"], ["x"], "L")
    bad = good.copy()
    bad[0, 3] = 3
    with pytest.raises(ValueError, match="out of range"):
        Tape(bad, 1, np.array([1.0]), 3, 1, np.array([1]), ["x"], ["x"], "L")
    with pytest.raises(ValueError, match="output"):
        Tape(good, 1, np.array([1.0]), 3, 3, np.array([1]), ["x"], ["x"], "L")
    bad = good.copy()
    bad[0, 0] = len(vm.ARITY)
    with pytest.raises(ValueError, match="opcode"):
        Tape(bad, 1, np.array([1.0]), 3, 1, np.array([1]), ["x"], ["x"], "L")


def test_wrong_arguments_raise_like_the_module():
    tape = compile_tape(x * y, [x, y])
    with pytest.raises(TypeError):
        tape.value_and_grad(1.0)
    for text in ("a", "2", b"2"):  # text is refused even when NumPy could parse it
        with pytest.raises(TypeError):
            tape.value_and_grad(text, 1.0)
    with pytest.raises(TypeError):
        tape.value_and_grad(1 + 2j, 1.0)  # NumPy would drop the imaginary part
    with pytest.raises(TypeError):
        tape.value(None, 1.0)
    with pytest.raises((TypeError, ValueError)):
        tape.value(np.ones(2), np.ones(2))


def _printed_order_cases():
    third, half = sp.Rational(1, 3), sp.S.Half
    with sp.evaluate(False):
        return [
            sp.Mul(x, sp.Mul(y, z)),  # printed x*(y*z)
            sp.Mul(x, sp.Rational(2, 3), y),  # x*(2/3)*y
            sp.Mul(x, sp.Pow(sp.Mul(y, z), -1), sp.Pow(z, -2)),  # x/((y*z)*z**2)
            sp.Mul(x, sp.Pow(sp.Mul(y, z), -1)),  # x/(y*z)
            sp.Mul(-2, x, sp.Pow(y, -1), sp.Pow(z, -1)),  # -2*x/(y*z)
            sp.Mul(sp.Float(0.1), sp.Add(x, y), sp.Pow(sp.Add(x, z), -1), sp.Rational(1, 7)),
            sp.Add(x, sp.Mul(-1, y), sp.Mul(-3, z), -third, sp.Mul(sp.Float(-0.3), x, y)),
            sp.Add(sp.Mul(-1, x), y, sp.Mul(-1, z)),
            sp.Add(sp.Pow(x, -1), sp.Pow(y, -half), sp.Pow(z, half), sp.Pow(x, 3)),
            sp.Add(sp.Pow(y, -3), sp.Pow(z, sp.Float(1.5)), sp.Pow(z, third), sp.Pow(x, y)),
            sp.Mul(sp.Pow(z, -half), sp.Pow(y, -third), x),
        ]


def test_tape_follows_the_printed_evaluation_order():
    """Unevaluated products and sums round exactly as their printed line does in Numba."""
    from sympy.codegen.ast import Assignment

    from symgrad.emit.printer import FlatCodePrinter
    from symgrad.rules import Program

    out = sp.Symbol("L")
    rng = np.random.default_rng(3)
    points = rng.uniform(0.1, 3.0, (200, 3))
    for expr in _printed_order_cases():
        line = FlatCodePrinter().doprint(Assignment(out, expr))
        namespace = dict(vars(math))
        exec(f"def line(x, y, z):\n    {line}\n    return L\n", namespace)  # printed by us
        flat = njit(error_model="numpy")(namespace["line"])
        program = Program([Assignment(out, expr)], [Assignment(sp.Symbol("grad_x"), sp.S.Zero)],
                          out, [sp.Symbol("grad_x")])
        tape = lower(program, [x, y, z])
        got = np.array([tape.value(*p) for p in points])
        want = np.array([flat(*p) for p in points])
        assert np.array_equal(got, want), line


def test_sg_compile_runs_big_programs_as_a_tape_and_small_ones_flat():
    """backend='auto': flat code up to TAPE_FROM lines, a tape above; same listing, same
    numbers."""
    from symgrad.compile.function import TAPE_FROM

    depth = TAPE_FROM // 8 + 10  # 8 lines per level of the chain
    w = sp.symbols(f"w0:{depth}")
    x = sp.Float(0.5)
    for k in range(depth):
        x = x + w[k] * sp.sin(x)
    loss = (x - 2) ** 2
    big = sg.compile(loss, wrt=list(w))
    assert big.backend == "tape" and "run as a tape" in repr(big)
    assert big.pipeline.steps == ("build", "differentiate")  # nothing printed or written
    assert big.path is None and big.generated is not None  # printed only when asked
    flat = sg.compile(loss, wrt=list(w), backend="flat")
    assert flat.backend == "flat" and flat.listing() == big.listing()
    point = np.random.default_rng(0).uniform(0, 0.2, depth)
    v1, g1 = big.value_and_grad(*point)
    v2, g2 = flat.value_and_grad(*point)
    assert v1 == pytest.approx(v2, rel=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-15)
    small = sg.compile(sp.sin(w[0]) * w[1], wrt=w[:2])
    assert small.backend == "flat"


def test_a_tape_function_has_the_whole_api():
    x, y = sp.symbols("x y")
    f = sg.compile(sg.sigmoid(x * y) + sp.log(1 + x**2), wrt=[x, y], backend="tape")
    g = sg.compile(sg.sigmoid(x * y) + sp.log(1 + x**2), wrt=[x, y], backend="flat")
    assert f(0.3, -2.0) == pytest.approx(g(0.3, -2.0), rel=1e-15)
    assert f.gradient(x=0.3, y=-2.0) == pytest.approx(g.gradient(x=0.3, y=-2.0), rel=1e-15)
    assert f.kernel(0.3, -2.0)[0] == pytest.approx(g.kernel(0.3, -2.0)[0], rel=1e-15)
    xs, ys = np.linspace(-1, 1, 7), np.linspace(2, 3, 7)
    np.testing.assert_allclose(f.value_and_grad_batch(xs, ys)[1],
                               g.value_and_grad_batch(xs, ys)[1], rtol=1e-14)
    assert sg.check_gradients(f, x=0.3, y=-2.0).passed
    assert "sigmoid" in str(f.trace(x=0.3, y=-2.0))
    with pytest.raises(sg.InputError):
        f.value_and_grad(x=0.3)
    with pytest.raises(ValueError, match="backend must be"):
        sg.compile(x * y, backend="fast")
