"""Bad input gets an error that names the problem and the fix, never a Numba traceback."""

import decimal
import math
import re

import numpy as np
import pytest
import sympy as sp

import symgrad as sg

w, x = sp.symbols("w x")


@pytest.fixture(scope="module")
def f():
    return sg.compile(sp.log(w) * x, wrt=[w])


def test_missing_value(f):
    with pytest.raises(sg.InputError, match=r"missing value for x"):
        f.value_and_grad(w=1.0)


def test_extra_value(f):
    with pytest.raises(sg.InputError, match=r"unexpected argument 'q'.*takes w, x"):
        f.value_and_grad(w=1.0, x=2.0, q=3.0)
    with pytest.raises(sg.InputError, match="takes 2 values, got 3"):
        f.value_and_grad(1.0, 2.0, 3.0)


def test_value_given_twice(f):
    with pytest.raises(sg.InputError, match="given twice"):
        f.value_and_grad(1.0, w=2.0, x=1.0)


@pytest.mark.parametrize("bad", ["abc", None, [1.0], 1 + 2j])
def test_non_numeric_value(f, bad):
    with pytest.raises(sg.InputError, match="w"):
        f.value_and_grad(bad, 1.0)


def test_array_value(f):
    with pytest.raises(sg.InputError, match=r"array of shape \(3,\)"):
        f.value_and_grad(np.ones(3), 1.0)


def test_numpy_scalars_and_ints_are_fine(f):
    assert f.value_and_grad(np.float32(1.0), np.int64(2))[0] == 0.0
    assert f.value_and_grad(np.array(math.e), 2)[0] == pytest.approx(2.0)


def test_nan_input(f):
    with pytest.raises(sg.InputError, match="input w is NaN"):
        f.value_and_grad(float("nan"), 1.0)
    with pytest.raises(sg.InputError, match="input x is NaN"):
        f(w=1.0, x=float("nan"))


def test_nan_from_math_warns(f):
    with pytest.warns(RuntimeWarning, match="NaN at this point"):
        value, _ = f.value_and_grad(-1.0, 1.0)
    assert math.isnan(value)


def test_matrix_expression_is_refused():
    with pytest.raises(sg.ExpressionError, match=r"scalar.*shape \(2, 1\)"):
        sg.compile(sp.Matrix([w, x]), wrt=[w])
    with pytest.raises(sg.ExpressionError, match="matrix"):
        sg.compile(sp.MatrixSymbol("A", 2, 2), wrt=[w])


def test_wrt_symbol_absent():
    with pytest.raises(sg.ExpressionError, match="'q' does not occur"):
        sg.compile(w * x, wrt=[w, sp.Symbol("q")])
    with pytest.raises(sg.ExpressionError, match="different symbol named 'w'"):
        sg.compile(w * x, wrt=[sp.Symbol("w", positive=True)])


def test_wrt_must_be_symbols():
    with pytest.raises(sg.ExpressionError, match="wrt must list SymPy symbols"):
        sg.compile(w * x, wrt=[w * x])


def test_strings_are_never_parsed():
    with pytest.raises(sg.ExpressionError, match="not strings"):
        sg.compile("__import__('os').system('echo pwned')")


def test_condition_is_not_a_value():
    with pytest.raises(sg.ExpressionError, match="Piecewise"):
        sg.compile(w > x)


def test_unevaluated_derivative():
    with pytest.raises(sg.ExpressionError, match=r"\.doit\(\)"):
        sg.compile(sp.Derivative(w**2, w) + x)


def test_complex_numbers():
    with pytest.raises(sg.ExpressionError, match="real numbers"):
        sg.compile(sp.I * w)


def test_unsupported_function_names_it_and_shows_registration():
    g = sp.Function("g")
    with pytest.raises(sg.UnsupportedFunctionError) as info:
        sg.compile(g(w) * x, wrt=[w])
    message = str(info.value)
    assert "'g'" in message and "@symgrad.rule(g" in message and "grad_out" in message


def test_constant_expression():
    with pytest.raises(sg.ExpressionError, match="no symbols"):
        sg.compile(sp.Integer(3))


def test_a_bare_symbol_is_a_valid_expression():
    f = sg.compile(w, wrt=[w])
    assert f.value_and_grad(3.0) == (3.0, (1.0,))


@pytest.mark.parametrize("expr, shown", [
    (sp.exp(-sp.oo * x), "-oo (in -oo*x)"),
    (x + sp.oo, "oo (in x + oo)"),
    (sp.Piecewise((x, x < sp.oo), (0, True)), "oo (in x < oo)"),
])
def test_infinite_constants_are_refused(expr, shown):
    """exp(-oo*x) was accepted and computed NaN (issue 14)."""
    with pytest.raises(sg.ExpressionError, match=re.escape(f"infinite constant {shown}")):
        sg.compile(expr, wrt=[x])


def test_infinite_constants_in_a_matrix_loss_are_refused():
    n = sp.Symbol("n", integer=True, positive=True)
    X, W = sp.MatrixSymbol("X", n, 2), sp.MatrixSymbol("W", 2, 1)
    with pytest.raises(sg.ExpressionError, match="infinite constant -oo"):
        sg.Model(sg.sum(sg.exp(-sp.oo * X * W)), params={W: np.ones((2, 1))}, data=[X])


# -- one rule for numbers, on every entry point and both backends ------------------------------

@pytest.fixture(scope="module", params=["flat", "tape"])
def both(request):
    return sg.compile(sp.log(w) * x, wrt=[w], backend=request.param)


BATCH_CALLS = {
    "value_batch": lambda f, v: f.value_batch(v, 1.0),
    "value_and_grad_batch": lambda f, v: f.value_and_grad_batch(v, 1.0),
    "value_and_grad_array": lambda f, v: f.value_and_grad_array(
        np.concatenate([np.atleast_1d(np.asarray(v, dtype=object)), [1.0]])),
}


@pytest.mark.parametrize("call", BATCH_CALLS)
@pytest.mark.parametrize("bad, message", [
    (np.array(["1.5", "2"]), r"text.*never parses text"),
    (["1.5", "2"], r"text.*never parses text"),
    ("2", r"text.*never parses text"),
    (np.array([1 + 2j, 2]), r"complex number.*imaginary part"),
    (np.array([2 + 0j, 2]), r"complex number"),
    ([None, 2.0], r"index 0 must be a real number, got None"),
    pytest.param([2.0, 10**400], r"index 1 is too large for a float64 .*about 401 digits",
                 id="10**400"),
    ([2.0, [1.0]], r"real number|one shape"),
])
def test_batch_inputs_are_real_numbers(both, call, bad, message):
    """Strings were parsed as numbers, complex values lost their imaginary part and None was
    reported as NaN."""
    name = "x" if call == "value_and_grad_array" else "w"
    with pytest.raises(sg.InputError, match=rf"^{name}\b.*{message}"):
        BATCH_CALLS[call](both, bad)


@pytest.mark.parametrize("bad, message", [
    ("2", "must be a real number, got the text '2'"), (b"2", "text"),
    (None, "w must be a real number, got None"), (1 + 0j, "complex"),
    (np.complex128(2), "complex"), pytest.param(10**400, "too large for a float64", id="10**400"),
    pytest.param(-(10**5000), "integer of about 5001 digits", id="-10**5000"),
    (sp.Integer(10)**400, "too large"), (np.longdouble("1e400"), "too large"),
    (sp.nan, "input w is NaN"), (np.float32("nan"), "input w is NaN"),
    (np.float16("nan"), "input w is NaN"), (x + 1, "must be a real number"),
])
def test_scalar_calls_refuse_the_same_values(both, bad, message):
    for call in (both, both.value_and_grad, both.gradient):
        with pytest.raises(sg.InputError, match=message):
            call(bad, 1.0)


def test_bool_is_a_number_for_every_call(both):
    """value_and_grad took True as 1, __call__ refused it: now every call takes it (as
    NumPy does)."""
    expected = math.log(2.0)
    assert both(2.0, True) == expected == both.value_and_grad(2.0, True)[0]
    assert both.value_and_grad(True, 2.0) == (0.0, (2.0,))
    assert both(True, 2.0) == 0.0 and both(np.bool_(True), 2.0) == 0.0
    assert both.value_batch(np.array([True, True]), 2.0).tolist() == [0.0, 0.0]


def test_sympy_numbers_convert(both):
    assert both(sp.E, sp.Rational(3, 2)) == pytest.approx(1.5, rel=1e-15)
    assert both.value_and_grad(sp.Float(2.0), sp.Integer(3)) == both.value_and_grad(2.0, 3.0)


@pytest.mark.parametrize("bad, message", [
    ("2", "x must be a real number, got the text '2'"), (b"2", "x must be .* text"),
    (np.str_("2"), "x must be .* text"), (decimal.Decimal(2), "x must be .* got Decimal"),
    (np.complex128(2), "x must be .* complex"), (np.array([2.0]), r"x must .* shape \(1,\)"),
    (None, "x must be a real number, got None"),
    pytest.param(10**400, "x is too large for a float64", id="10**400"),
    (math.nan, "input x is NaN"),
])
def test_a_bad_value_after_a_float_is_refused(both, bad, message):
    """value_and_grad hands Python floats straight to the compiled code, whose own conversion
    would parse text: every value is checked, not just the first."""
    for call in (both, both.value_and_grad, both.gradient):
        with pytest.raises(sg.InputError, match=message):
            call(2.0, bad)
    for args in [(), (2.0,), (2.0, 1.0, 1.0)]:
        with pytest.raises(sg.InputError, match="missing value for|takes 2 values, got 3"):
            both.value_and_grad(*args)


def test_a_nan_input_is_refused_where_the_result_is_finite():
    """In compiled flat code Max(1, NaN) is 1: a positional call returned w while a keyword
    call refused the NaN; now every call refuses it."""
    g = sg.compile(w * sp.Max(1, x), wrt=[w, x])
    assert math.isfinite(g.kernel(1.0, math.nan)[0])  # the raw kernel does not check
    for call in (g.value_and_grad, g.gradient, g):
        with pytest.raises(sg.InputError, match=r"input x is NaN.*\(Max\(1, NaN\) is 1\)"):
            call(1.0, math.nan)  # the message says why, not "every result would be NaN"
    with pytest.raises(sg.InputError, match="input w is NaN"):
        g.value_and_grad(math.nan, 2.0)
    # the array and batch forms too (they returned w at the NaN point)
    with pytest.raises(sg.InputError, match="input x is NaN"):
        g.value_and_grad_array(np.array([1.0, math.nan]))
    ws, xs = np.array([1.0, 2.0, 3.0]), np.array([0.5, math.nan, 4.0])
    for call in (g.value_and_grad_batch, g.value_batch):
        with pytest.raises(sg.InputError, match="input x is NaN at index 1"):
            call(ws, xs)
    value, grad = g.value_and_grad_batch(ws, np.array([0.5, math.inf, 4.0]))  # inf is allowed
    assert value[1] == math.inf and value[0] == 1.0 and value[2] == 3 * 4.0


def test_floor_and_ceiling_are_floats_everywhere():
    """Numba's math.floor/ceil return int64: floor(1e19) came out -9.2e18 with no warning,
    in compiled functions and in a Model's loop. Generated code takes NumPy's (floats)."""
    g = sg.compile(w * sp.floor(x) + sp.ceiling(x), wrt=[w, x])
    for wv, xv in [(1.0, 1e19), (2.0, -2.5), (0.5, -1e300), (3.0, 7.0)]:
        value, grad = g.value_and_grad(wv, xv)
        assert value == wv * math.floor(xv) + math.ceil(xv) and grad == (math.floor(xv), 0.0)
    assert g.value_and_grad(1.0, math.inf)[0] == math.inf  # (was a finite garbage number)
    values, _ = g.value_and_grad_batch(np.array([1.0, 2.0]), np.array([-1e19, 4.5]))
    assert values.tolist() == [-2e19, 2 * 4.0 + 5.0]
    model = sg.Model((w * sp.floor(x) - 3) ** 2, {w: 0.5}, [x])
    X = np.array([1e19, 2.5, -7.2])
    assert model.evaluate({x: X}) == pytest.approx(((0.5 * np.floor(X) - 3) ** 2).mean(),
                                                   rel=1e-15)


def test_every_path_gives_the_kernels_numbers(both):
    """Python floats (the compiled check), NumPy scalars (the dispatcher), ints and keywords:
    the same numbers as the raw kernel to the last bit, and log(w)*x's by hand."""
    for wv, xv in np.random.default_rng(0).uniform(0.1, 5.0, (40, 2)):
        expected = both.kernel(float(wv), float(xv))
        assert expected[0] == pytest.approx(math.log(wv) * xv, rel=1e-14)
        assert expected[1][0] == pytest.approx(xv / wv, rel=1e-14)
        assert both.value_and_grad(float(wv), float(xv)) == expected
        assert both.value_and_grad(wv, xv) == expected  # np.float64
        assert both.value_and_grad(float(wv), np.float32(xv)) == both.kernel(wv, float(
            np.float32(xv)))
        assert both.value_and_grad(x=xv, w=wv) == expected
    assert both.value_and_grad(2, 3) == both.value_and_grad(2.0, True + 2) == both.kernel(2.0, 3.0)


@pytest.mark.parametrize("backend", ["flat", "tape"])
def test_the_nonfinite_warning_names_the_callers_line(backend):
    g = sg.compile(sp.log(w) * x, wrt=[w], backend=backend)
    with pytest.warns(sg.NonFiniteWarning) as record:
        value, _ = g.value_and_grad(-1.0, 1.0)
    assert math.isnan(value)
    assert record[0].filename == __file__


def test_a_flat_function_of_many_inputs_imports():
    """value_and_grad_checked sums every input, the value and every partial: written as one
    expression, 1600 inputs made Python's compiler give up (recursion) on the whole module."""
    xs = sp.symbols("x0:1600")
    g = sg.compile(sp.Add(*xs), wrt=list(xs), backend="flat")
    assert "value_and_grad_checked" in g.source
    assert callable(g.module.value_and_grad_checked)  # imported; nothing compiled by Numba


def test_out_must_be_a_writable_float64_array(both):
    read_only = np.empty(1)
    read_only.flags.writeable = False
    for bad, message in [([0.0], "got list"), (read_only, "read-only"),
                         (np.empty(1, np.float32), "got float32"), (np.empty(2), r"shape \(2,\)")]:
        with pytest.raises(sg.InputError, match=rf"^out\b.*{message}"):
            both.value_and_grad_array(np.array([2.0, 1.0]), out=bad)
    values, grads = np.empty(3), np.empty((1, 3))
    frozen = grads.copy()
    frozen.flags.writeable = False
    for bad, message in [([values, grads.tolist()], r"out\[1\] \(grads\).*got list"),
                         ((values, frozen), r"out\[1\] \(grads\) is read-only"),
                         ((values,), "must be a pair"), (values, "must be a pair"),
                         ((None, grads), r"out\[0\] \(values\)")]:
        with pytest.raises(sg.InputError, match=message):
            both.value_and_grad_batch(np.ones(3) * 2, 1.0, out=bad)


def test_read_only_and_strided_inputs_work(both):
    x_in = np.array([2.0, 3.0])
    x_in.flags.writeable = False
    value, grad = both.value_and_grad_array(x_in)
    assert value == pytest.approx(3 * math.log(2.0), rel=1e-15) and grad[0] == 1.5
    column = np.array([1.0, 9.0, 2.0, 9.0, 4.0])[::2]
    column.flags.writeable = False
    values, grads = both.value_and_grad_batch(column, 2.0)
    assert np.allclose(values, 2 * np.log([1.0, 2.0, 4.0]), rtol=1e-15, atol=0)
    assert np.allclose(grads[0], 2 / np.array([1.0, 2.0, 4.0]), rtol=1e-15, atol=0)


@pytest.mark.parametrize("bad, message", [
    (np.array(["1", "2"]), r"column x holds text"),
    (np.array([1 + 1j, 2]), r"column x holds complex numbers"),
    ([1.0, None], r"column x at index 1 must be a real number, got None"),
    ([1.0, 10**400], r"column x at index 1 is too large"),
])
def test_model_data_columns_are_real_numbers(bad, message):
    y = sp.Symbol("y")
    model = sg.Model(loss=(w * x - y) ** 2, params={w: 0.5}, data=[x, y])
    with pytest.raises(sg.InputError, match=message):
        model.fit({x: bad, y: [1.0, 2.0]}, epochs=1, verbose=0)


# -- compile-time arguments -------------------------------------------------------------------

@pytest.mark.parametrize("wrt, message", [
    (5, "wrt must be a symbol or a list of symbols.*got int: 5"),
    ({w, x}, "got an unordered set"),
    ("w", r"wrt must list SymPy symbols, got 'w' \(str\)"),
])
def test_wrt_of_the_wrong_kind(wrt, message):
    with pytest.raises(sg.ExpressionError, match=message):
        sg.compile(w * x, wrt=wrt)


def test_inputs_of_the_wrong_kind():
    with pytest.raises(sg.ExpressionError, match="inputs must be a list of symbols"):
        sg.compile(w * x, wrt=[w], inputs=5)
    with pytest.raises(sg.ExpressionError, match="inputs must list SymPy symbols, got 'x'"):
        sg.compile(w * x, wrt=[w], inputs=[w, "x"])


@pytest.mark.parametrize("expr", [
    x * 10**400, x + sp.Float("1e400") * w, x ** sp.Integer(10**400), sp.exp(x) * 10**309,
    x * sp.Rational(10**400, 3), x - 10**400,
])
def test_a_constant_beyond_float64_is_an_expression_error(expr):
    """It was a Numba failure reported as "this is a symgrad bug"."""
    with pytest.raises(sg.ExpressionError,
                       match=r"the constant -?\d\.\d{4}e\+\d{3} is too large for a float64"):
        sg.compile(expr)


@pytest.mark.parametrize("backend", ["flat", "tape"])
def test_integers_beyond_int64_compile_as_floats(backend):
    """10**20 is a fine float64 but no int64: its literal did not compile."""
    f = sg.compile(x * 10**20 - sp.Integer(-(2**70)) * w, wrt=[x, w], backend=backend)
    assert f.value_and_grad(1.5, 2.0) == (1.5e20 + 2.0**71, (1e20, 2.0**70))
    g = sg.compile(x ** sp.Integer(2**40), wrt=[x], backend=backend)
    n = 2**40
    for point in (-1.0, 0.5, 1.0):
        reference = float(sp.Float(point) ** n), (float(n * sp.Float(point) ** (n - 1)),)
        assert g.value_and_grad(point) == reference


@pytest.mark.parametrize("option, value, message", [
    ("eps", 0, r"eps is the relative step.*\[2.22e-16, 1\)"), ("eps", 1e-20, "eps"),
    ("eps", 2.0, "eps"), ("eps", float("nan"), "eps"), ("rtol", -1e-3, r"rtol.*\[0, 1\)"),
    ("rtol", float("nan"), "rtol"), ("rtol", 1e9, "rtol"), ("atol", float("inf"), "atol"),
    ("atol", 1e300, "atol"), ("atol", "1e-3", "atol must be a number"),
])
def test_check_gradients_options_are_checked(f, option, value, message):
    """eps=0 was a ZeroDivisionError; negative, NaN and huge tolerances were accepted."""
    with pytest.raises(sg.InputError, match=message):
        sg.check_gradients(f, 2.0, 1.0, verbose=False, **{option: value})


def test_check_gradients_options_in_range_are_used(f):
    strict = sg.check_gradients(f, 2.0, 1.0, verbose=False, eps=1e-4, rtol=0.0, atol=0.0)
    assert strict.tolerance.eps == 1e-4 and strict.tolerance.rtol == 0.0


def test_trace_digits_are_checked(f):
    with pytest.raises(sg.InputError, match="digits must be a whole number from 1 to 17"):
        f.trace(2.0, 1.0, digits=-3)
    with pytest.raises(sg.InputError, match="from 0 to 17"):
        f.graph(2.0, 1.0, digits=-1)
    assert "0.69" in f.trace(2.0, 1.0, digits=2).format()


def test_output_name_must_be_text():
    with pytest.raises(sg.ExpressionError, match="name must be a string, got int"):
        sg.compile(w * x, wrt=[w], name=5)


@pytest.mark.parametrize("point", [0.0, 1e-200, -1e-120])
def test_negative_integer_powers_overflow_to_inf_instead_of_raising(point):
    """Numba's x**-n raised ZeroDivisionError where x**n is 0 (a call-time crash); the code
    now reads 1/x**n, the same arithmetic, and gives IEEE's inf like the tape."""
    expr = x**-3 + w**-2
    flat = sg.compile(expr, wrt=[w, x], backend="flat")
    tape = sg.compile(expr, wrt=[w, x], backend="tape")
    assert "1/x**3" in flat.listing() and "1/w**2" in flat.listing()
    with np.errstate(all="ignore"):
        want = 1 / np.float64(point) ** 3 + 1 / np.float64(point) ** 2
    for f in (flat, tape):
        value, grad = f.value_and_grad(point, point)
        assert value == want and all(math.isinf(g) for g in grad)
        assert f.value_batch(np.full(2, point), point).tolist() == [want, want]


def test_negative_integer_powers_match_the_tape_bit_for_bit():
    expr = x**-3 * w + sp.sin(w) ** -5 + (x**-2) ** w
    flat = sg.compile(expr, wrt=[w, x], backend="flat")
    tape = sg.compile(expr, wrt=[w, x], backend="tape")
    rng = np.random.default_rng(14)
    W, X = rng.uniform(0.1, 3, 64), rng.uniform(-3, 3, 64)
    for got, want in zip(flat.value_and_grad_batch(W, X), tape.value_and_grad_batch(W, X)):
        assert np.array_equal(got, want)
    reference = sp.lambdify((w, x), [expr, sp.diff(expr, w), sp.diff(expr, x)])
    value, grad = flat.value_and_grad(W[0], X[0])
    assert (value, *grad) == pytest.approx(reference(W[0], X[0]), rel=1e-12)
    (line,) = [li for li in flat.trace(W[0], X[0]).lines if li.code.endswith("= 1/x**3")]
    assert line.value == 1 / X[0] ** 3


@pytest.mark.parametrize("bad, message", [
    ("0.5", "must be a real number, got the text '0.5'"),
    pytest.param(10**400, "too large for a float64", id="10**400"),
    (np.float32("nan"), "initial value of w is nan"), (None, "got None"), (1j, "complex"),
])
def test_model_initial_values_follow_the_same_rule(bad, message):
    y = sp.Symbol("y")
    with pytest.raises(sg.InputError, match=message):
        sg.Model(loss=(w * x - y) ** 2, params={w: bad}, data=[x, y])


def test_a_constant_beyond_pythons_digit_limit_is_described_by_its_digits():
    with pytest.raises(sg.ExpressionError, match="constant of about 5001 digits is too large"):
        sg.compile(x * sp.Integer(10) ** 5000)


@pytest.mark.parametrize("bad, message", [
    ([[1.0, None], [2.0, 3.0]], r"data X at \[0, 1\] must be a real number, got None"),
    ([[1.0], [2.0, 3.0]], "NumPy cannot turn into an array"),  # was a bare ValueError
    (np.array([["1", "2"]]), "holds text"),
    (np.ones((2, 2)) * 1j, "holds complex numbers"),
    pytest.param([[1, 2], [3, 10**400]], r"at \[1, 1\] is too large", id="10**400"),
])
def test_matrix_model_data_follows_the_same_rule(bad, message):
    n = sp.Symbol("n", integer=True, positive=True)
    X, W = sp.MatrixSymbol("X", n, 2), sp.MatrixSymbol("W", 2, 1)
    model = sg.Model(sg.sum(sg.tanh(X * W)), params={W: np.ones((2, 1))}, data=[X])
    with pytest.raises(sg.InputError, match=message):
        model.evaluate({X: bad})
    assert model.evaluate({X: [[1, 2.5]]}) == pytest.approx(math.tanh(3.5), rel=1e-12)
