"""Symbol names are untrusted: they become safe, deterministic, collision-free identifiers."""

import ast
import math

import pytest
import sympy as sp

import symgrad as sg
from symgrad.graph import names

HOSTILE = [
    "lambda", "if", "x.y", "1x", "x y", "sin", "exp", "np", "math", "s0", "grad_x",
    "sigmoid", "value_and_grad", "__import__", 'a"; import os; os.system("echo pwned") #',
    "b\nimport os\nos.system('echo pwned')", "c'''", '"""', "\\", "α", "",
]


def test_hostile_names_compile_to_correct_code_that_runs_nothing_else(tmp_path, capfd):
    syms = [sp.Symbol(n) for n in HOSTILE]
    x = sp.Symbol("x")
    expr = sum((k + 1) * s for k, s in enumerate(syms)) * sp.sin(x) + sp.exp(syms[5])
    f = sg.compile(expr, wrt=[*syms, x], fast_math=False)  # no inlined math library: exact AST
    tree = ast.parse(f.source)
    imported = {a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for a in node.names}
    assert imported <= {"math", "njit", "sys", "sin", "cos", "exp"}, imported
    called = {node.func.id for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert called <= {"sin", "exp", "cos", "njit", "value_and_grad", "float", "len", "zip",
                      "print", "range"}, called
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not names & {"os", "__import__", "eval", "exec", "system"}
    assert attributes <= {"argv", "exit", "join", "exp", "shape"}, attributes
    params = f.generated.params
    assert len(set(params)) == len(params) and all(p.isidentifier() for p in params)
    values = [0.1 * (k + 1) for k in range(len(syms))] + [0.7]
    value, grad = f.value_and_grad(*values)
    s = sum((k + 1) * v for k, v in enumerate(values[:-1]))
    assert value == pytest.approx(s * math.sin(0.7) + math.exp(values[5]), rel=1e-13)
    assert grad[5] == pytest.approx(6 * math.sin(0.7) + math.exp(values[5]), rel=1e-13)
    assert grad[-1] == pytest.approx(s * math.cos(0.7), rel=1e-13)
    fast = sg.compile(expr, wrt=[*syms, x])
    assert fast.value_and_grad(*values)[0] == pytest.approx(value, rel=1e-14)
    assert "pwned" not in capfd.readouterr().out


def test_readable_names_stay_and_renames_are_deterministic():
    a, lam, xy = sp.Symbol("alpha_1"), sp.Symbol("lambda"), sp.Symbol("x.y")
    f1 = sg.compile(a * lam + xy, wrt=[a, lam, xy])
    f2 = sg.compile(a * lam + xy, wrt=[a, lam, xy])
    assert f1.generated.params == ["alpha_1", "lambda_", "x_y"] == f2.generated.params
    assert f1.source == f2.source
    assert "#   lambda_ <- 'lambda'" in f1.source


def test_two_symbols_with_the_same_name_stay_distinct():
    x1, x2 = sp.Symbol("x"), sp.Symbol("x", positive=True)
    f = sg.compile(x1 * 2 + x2 * 3, wrt=[x1, x2])
    assert sorted(f.generated.params) == ["x", "x_2"]
    assert f.value_and_grad(1.0, 1.0) == (5.0, (2.0, 3.0))
    assert f.value_and_grad({x1: 1.0, x2: 2.0}) == (8.0, (2.0, 3.0))
    with pytest.raises(sg.InputError, match="more than one symbol"):
        f.value_and_grad(x=1.0)


def test_keyword_arguments_by_original_or_safe_name():
    lam, y = sp.Symbol("lambda"), sp.Symbol("y")
    f = sg.compile(lam * y, wrt=[lam, y])
    assert f.value_and_grad(**{"lambda": 2.0, "y": 3.0}) == (6.0, (3.0, 2.0))
    assert f.value_and_grad(lambda_=2.0, y=3.0) == (6.0, (3.0, 2.0))


def test_output_name_is_sanitized():
    x = sp.Symbol("x")
    f = sg.compile(x**2, wrt=[x], name="loss\nimport os")
    assert f.generated.output.isidentifier()
    assert f.value_and_grad(3.0) == (9.0, (6.0,))


def test_very_long_names_become_short_distinct_identifiers():
    """Two 2,000-character names sharing a prefix were an llvmlite "redefinition of
    argument"; identifiers now keep a readable prefix and a hash of the whole name."""
    a, b = sp.Symbol("w" * 2000 + "1"), sp.Symbol("w" * 2000 + "2")
    x = sp.Symbol("x")
    f = sg.compile(a * sp.sin(x) + b**2, wrt=[a, b, x])
    ida, idb = f.generated.params[:2]
    assert ida != idb and ida.startswith("w" * 40) and idb.startswith("w" * 40)
    assert len(ida) == len(idb) == names.MAX_LENGTH and ida.isidentifier()
    value, grad = f.value_and_grad(2.0, 3.0, 0.5)
    assert value == pytest.approx(2 * math.sin(0.5) + 9, rel=1e-15)
    assert grad == pytest.approx((math.sin(0.5), 6.0, 2 * math.cos(0.5)), rel=1e-15)
    assert f.value_and_grad(**{a.name: 2.0, b.name: 3.0, "x": 0.5}) == (value, grad)
    assert names.identifier(a.name) == ida  # deterministic: the same name, the same identifier
    assert names.identifier("short_name") == "short_name"


def test_long_hostile_and_unicode_names_stay_within_the_bound():
    for name in ["α" * 3000, "1" * 500, "grad_" + "x" * 100, "s" + "0" * 100, "a.b" * 100]:
        ident = names.identifier(name)
        assert ident.isidentifier() and len(ident) <= names.MAX_LENGTH
        assert not ident.startswith("grad") and not ident[1:].isdigit()


def test_a_model_with_a_very_long_parameter_name_trains():
    w, x, y = sp.Symbol("weight_" * 300), sp.Symbol("x"), sp.Symbol("y")
    model = sg.Model(loss=(w * x - y) ** 2, params={w: 0.0}, data=[x, y])
    data = {x: [1.0, 2.0, 3.0], y: [2.0, 4.0, 6.0]}
    model.fit(data, optimizer=sg.optim.SGD(lr=0.05), epochs=200, batch_size=3, verbose=0)
    assert model.params[w] == pytest.approx(2.0, rel=1e-6)
