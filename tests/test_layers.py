"""ARCHITECTURE.md's layering, checked on the source: imports run downward only, nothing is
``eval``'d or ``exec``'d, and the show layer reads other layers' objects only through public
attributes."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "symgrad"
ORDER = ["errors", "_version", "trust", "expression", "graph", "rules", "emit", "compile", "train",
         "show", "cli", "__main__"]
RANK = {name: k for k, name in enumerate(ORDER)}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if len(parts) > 1 and parts[1] in RANK:
            yield path, parts, ast.parse(path.read_text(encoding="utf-8"))


def test_imports_run_downward_only():
    """Every import, also those inside functions; only cli may use the package face."""
    wrong = []
    for path, parts, tree in _modules():
        layer, package = parts[1], list(parts[:-1])
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif isinstance(node, ast.ImportFrom):
                target = node.module.split(".")
            elif isinstance(node, ast.Import):
                target = node.names[0].name.split(".")
            else:
                continue
            if target[0] != "symgrad":
                continue
            if target == ["symgrad"] and layer not in ("cli", "__main__"):
                wrong.append(f"{path.name}:{node.lineno} imports the package face")
            elif len(target) > 1 and target[1] in RANK and RANK[target[1]] > RANK[layer]:
                wrong.append(f"{path.name}:{node.lineno} ({layer}) imports {'.'.join(target)}")
    assert not wrong


def test_nothing_is_evaluated_as_text():
    calls = [f"{path.name}:{node.lineno}" for path, _, tree in _modules() for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id in ("eval", "exec")]
    assert not calls


def test_show_reads_only_public_attributes():
    """``obj._x`` only on the show layer's own objects (``self``)."""
    private = []
    for path, parts, tree in _modules():
        if parts[1] != "show":
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
                private.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert not private


def test_every_package_is_listed_for_the_wheel():
    """A package missing from pyproject.toml installs nowhere: a fresh install breaks."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(p.parent.relative_to(root).parts)
             for p in (root / "symgrad").rglob("__init__.py")}
    assert found - listed == set()


#: The pipeline's steps, and the modules that define them.
STEPS = {"build": "graph/build.py", "differentiate": "rules/reverse.py",
         "render": "emit/module.py", "render_trainer": "emit/module.py",
         "render_arrays": "emit/arrays.py", "write_module": "compile/cache.py",
         "load_module": "compile/cache.py"}


def _step_uses(tree) -> list[tuple[str, int]]:
    """Uses (calls, or a reference as in ``functools.partial(render, ...)``) of the pipeline's
    steps imported from symgrad: ``build`` after ``from ..graph import build`` (any alias),
    ``cache.write_module`` on a symgrad module."""
    steps, modules = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or node.module.startswith("symgrad")):
            for alias in node.names:
                if alias.name in STEPS:
                    steps[alias.asname or alias.name] = alias.name
                else:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import) and node.names[0].name.startswith("symgrad"):
            modules.add(node.names[0].asname or "symgrad")
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in steps:
            uses.append((steps[node.id], node.lineno))
        elif (isinstance(node, ast.Attribute) and node.attr in STEPS
              and isinstance(node.value, ast.Name) and node.value.id in modules):
            uses.append((node.attr, node.lineno))
    return uses


def test_only_the_pipeline_runs_the_pipeline():
    """build -> differentiate -> render* -> write_module -> load_module is orchestrated in
    compile/pipeline.py alone: no other module calls or passes on those steps (their own
    modules may)."""
    wrong, in_pipeline = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        for step, line in _step_uses(ast.parse(path.read_text(encoding="utf-8"))):
            if where == "compile/pipeline.py":
                in_pipeline.add(step)
            elif where != STEPS[step]:
                wrong.append(f"{where}:{line} uses {step}")
    assert not wrong
    assert in_pipeline == set(STEPS)  # the scan sees the uses it is looking for
