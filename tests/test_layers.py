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
