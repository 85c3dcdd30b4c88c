"""``symgrad`` on the command line (also ``python -m symgrad``).

Every command but ``cache`` takes a TARGET, ``path/to/file.py:name`` or
``package.module:name``, naming a SymPy expression, a compiled function or a Model in the
user's own code. The file is imported with importlib (running it, as ``python file.py``
would, except that its ``if __name__ == "__main__":`` block does not run); the name is
looked up with getattr, and point values (``w0=2``) are parsed with ``float``. No string is
ever evaluated.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import math
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import sympy as sp

from . import __version__
from .compile import CompiledFunction, cache_dir, cache_info, clear_cache
from .compile import compile as compile_function
from .compile.cache import clear_kernels
from .errors import SymgradError
from .kernels import cache_location
from .train import Model

__all__ = ["main"]


class CliError(Exception):
    """A problem with the command line itself: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """A command's parser: options may stand before, between or after the positional
    arguments (``check TARGET --rtol 1e-3 w=2``, as the usage line shows them), which plain
    argparse refuses once a ``nargs="*"`` positional has been matched."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:  # parse_known_intermixed_args calls back in here
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 check failed, 2 error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except _UserCodeError as exc:
        traceback.print_exception(exc.__cause__)
        print(f"symgrad: error: {exc}", file=sys.stderr)
        return 2
    except (CliError, SymgradError, ValueError, ImportError, OSError) as exc:
        print(f"symgrad: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symgrad",
        description="Flat reverse-mode backprop code from SymPy expressions: show the listing, "
        "export the standalone module, trace values at a point, draw the graph, check "
        "gradients.",
        epilog="TARGET is FILE.py:NAME or MODULE:NAME, naming a SymPy expression, a compiled "
        "function or a symgrad Model. Run 'symgrad COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"symgrad {__version__}")
    parser.add_argument("--cache-dir", metavar="DIR", help=_CACHE_DIR_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = _command(commands, "listing", _listing, "print the flat forward/backward code")
    p.add_argument("--columns", action="store_true", help="forward and backward side by side")

    p = _command(commands, "export", _export, "write the standalone generated module")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")

    p = _command(commands, "trace", _trace, "print the listing with every line's value at a point",
                 point=True)
    p.add_argument("--digits", type=_whole(1, 17), default=4,
                   help="significant digits, 1 to 17 (default 4)")
    p.add_argument("--columns", action="store_true", help="forward and backward side by side")

    p = _command(commands, "check", _check, "compare the gradient with central differences "
                 "(exit status 1 if it fails)", point=True)
    p.add_argument("--rtol", type=float, help="relative tolerance in [0, 1) (default by dtype)")
    p.add_argument("--atol", type=float, help="absolute tolerance in [0, 1) (default by dtype)")
    p.add_argument("--eps", type=float, help="relative step h, between machine epsilon and 1 "
                   "(default by dtype)")
    p.add_argument("--hessian", action="store_true",
                   help="also check every Hessian entry (differences of the gradient)")

    p = _command(commands, "graph", _graph, "draw the computational graph at a point",
                 point=True)
    p.add_argument("-o", "--output", metavar="FILE", required=True,
                   help="picture file: .svg, .png (needs matplotlib) or .dot")
    p.add_argument("--max-nodes", type=int, default=60,
                   help="draw at most this many nodes, those nearest the output (0: all)")
    p.add_argument("--digits", type=_whole(0, 17), default=2,
                   help="decimals on the wires, 0 to 17 (default 2)")

    p = commands.add_parser("cache", help="show, clear or warm the caches",
                            description="Show where generated modules are cached and how much "
                            "room they take, clear them, or compile symgrad's kernel library "
                            "once for this machine.")
    p.add_argument("action", nargs="?", choices=["info", "clear", "warm"], default="info",
                   help="info (default): where the caches are, their size and cap, and whether "
                   "they are used; clear: delete the cached modules and Numba's files for them "
                   "(also under $NUMBA_CACHE_DIR) and the kernel library's machine code; warm: "
                   "compile the kernel library (and the templates) now (once per machine)")
    p.add_argument("--keep-kernels", action="store_true",
                   help="with clear: keep the compiled kernel library")
    p.add_argument("--cache-dir", metavar="DIR", default=argparse.SUPPRESS, help=_CACHE_DIR_HELP)
    p.set_defaults(run=_cache)
    return parser


_CACHE_DIR_HELP = ("where generated modules are cached (default $SYMGRAD_CACHE_DIR or "
                   "~/.cache/symgrad); before or after the command")


def _whole(low: int, high: int):
    """An argparse type: a whole number in ``[low, high]``."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value
    convert.__name__ = "whole number"  # argparse names the type in its messages
    return convert


def _command(commands, name: str, run, help_text: str, point: bool = False):
    p = commands.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:]
                            + ".")
    p.add_argument("target", metavar="TARGET",
                   help="FILE.py:NAME or MODULE:NAME (an expression, compiled function or Model)")
    if point:
        p.add_argument("point", nargs="*", metavar="NAME=VALUE",
                       help="the point: one value per input (for a Model: per data column; "
                       "parameters default to their current values)")
    p.add_argument("--wrt", metavar="NAMES",
                   help="for an expression: comma-separated symbols to differentiate with "
                   "respect to (default: all)")
    p.add_argument("--name", default="L", help="for an expression: the output's name (default L)")
    p.add_argument("--cache-dir", metavar="DIR", default=argparse.SUPPRESS, help=_CACHE_DIR_HELP)
    p.set_defaults(run=run)
    return p


def _listing(args) -> int:
    print(_subject(args).listing(columns=args.columns), end="")
    return 0


def _export(args) -> int:
    obj = _subject(args)
    if args.output is None:
        print(obj.source, end="")
        return 0
    Path(args.output).write_text(obj.source, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def _trace(args) -> int:
    from .show import trace

    result = trace(_subject(args), _point(args.point))
    print(result.format(digits=args.digits, columns=args.columns), end="")
    return 0


def _check(args) -> int:
    from .show import check_gradients

    result = check_gradients(_subject(args), _point(args.point), rtol=args.rtol, atol=args.atol,
                             eps=args.eps, hessian=args.hessian)
    return 0 if result.passed else 1


def _graph(args) -> int:
    from .show import graph

    picture = graph(_subject(args), _point(args.point), max_nodes=args.max_nodes or None,
                    digits=args.digits)
    path = picture.save(args.output)
    part = f"{picture.shown} of {picture.total}" if picture.shown < picture.total else "all"
    print(f"wrote {path} ({part} nodes)")
    return 0


def _cache(args) -> int:
    where = cache_dir(args.cache_dir)
    if args.action == "clear":
        modules = clear_cache(where, kernels=False)
        print(f"removed {modules} files from {where} (generated modules and Numba's files "
              "for them)")
        if not args.keep_kernels:
            print(f"removed {clear_kernels()} files of the kernel library's machine code from "
                  f"{cache_location()}")
        return 0
    if args.action == "warm":
        print(f"symgrad's kernel library is compiled and cached ({_warm():.1f} s)")
        return 0
    info = cache_info(where)
    print(f"{where}: {info['modules']} generated modules, {info['bytes'] / 1e6:.1f} MB "
          f"(cap {info['max_bytes'] / 1e6:.0f} MB: least recently used modules go first)")
    if info["problem"]:
        print(f"  not used ({info['problem']}): symgrad compiles in a private temporary "
              "directory instead")
    print(f"kernel library's machine code: {info['kernels_files']} Numba files, "
          f"{info['kernels_bytes'] / 1e6:.1f} MB in {info['kernels_path']}")
    return 0


def _warm() -> float:
    """Compile every kernel of the library: the training loops', and the tape interpreter's
    entry points through a small function run as a tape."""
    import time

    import numpy as np
    import sympy as sp

    from .emit.templates import compile_all
    from .kernels import warm

    start = time.perf_counter()
    warm()
    compile_all()  # Jinja's templates too, kept beside them where that is safe
    x, y = sp.symbols("x y")
    f = compile_function(sp.sin(x) * y, wrt=[x, y], backend="tape")
    f(1.0, 2.0), f.value_and_grad(1.0, 2.0), f.value_and_grad_array(np.ones(2))
    f.value_batch(np.ones(3), np.ones(3)), f.value_and_grad_batch(np.ones(3), np.ones(3))
    return time.perf_counter() - start


def _subject(args):
    """The TARGET as a CompiledFunction or a Model (an expression is compiled here)."""
    obj = load(args.target)
    if isinstance(obj, (CompiledFunction, Model)):
        if args.wrt is not None:
            raise CliError(f"--wrt applies to expressions; {args.target} is already a "
                           f"{type(obj).__name__}.")
        return obj
    if not isinstance(obj, sp.Basic):
        raise CliError(f"{args.target} is a {type(obj).__name__}; expected a SymPy expression, a "
                       "compiled function or a symgrad Model.")
    wrt = None
    if args.wrt is not None:
        by_name = {s.name: s for s in obj.free_symbols}
        wrt = []
        for name in (n.strip() for n in args.wrt.split(",") if n.strip()):
            if name not in by_name:
                raise CliError(f"--wrt names {name!r}, which is not a symbol of {args.target} "
                               f"(symbols: {', '.join(sorted(by_name))}).")
            wrt.append(by_name[name])
    return compile_function(obj, wrt=wrt, name=args.name, cache_dir=args.cache_dir)


def load(target: str):
    """The object ``FILE.py:NAME`` or ``MODULE:NAME`` names (``NAME`` may be dotted)."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise CliError(f"TARGET must be FILE.py:NAME or MODULE:NAME, got {target!r}.")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(Path(where))
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            raise CliError(f"cannot import module {where!r}: {exc}.") from None
    obj = module
    for part in name.split("."):
        if not part.isidentifier() or not hasattr(obj, part):
            raise CliError(f"{where} has no name {name!r}; it defines "
                           f"{_candidates(module) or 'no expression, function or Model'}.")
        obj = getattr(obj, part)
    return obj


class _UserCodeError(Exception):
    """The user's file raised while it was imported (its traceback is shown)."""


def _import_file(path: Path):
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    path = path.resolve()
    key = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"_symgrad_target_{key}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise _UserCodeError(f"running {path} failed (traceback above).") from exc
    finally:
        sys.path.remove(str(path.parent))
    return module


def _candidates(module) -> str:
    names = [k for k, v in vars(module).items() if not k.startswith("_")
             and isinstance(v, (sp.Expr, CompiledFunction, Model)) and not isinstance(v, sp.Symbol)]
    return ", ".join(names)


def _point(tokens: Sequence[str]) -> dict[str, float]:
    point: dict[str, float] = {}
    for token in tokens:
        name, sep, text = token.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CliError(f"expected NAME=VALUE, got {token!r}.")
        if name in point:
            raise CliError(f"{name} is given twice ({name}={point[name]:g} and {token}); give "
                           "each value once.")
        try:
            value = float(text)
        except ValueError:
            raise CliError(f"the value of {name} is {text!r}, which is not a number.") from None
        if math.isinf(value) and text.strip().lstrip("+-").lower() not in ("inf", "infinity"):
            raise CliError(f"the value of {name}, {text}, is too large for a float64 (largest "
                           f"{sys.float_info.max:.4g}).")
        point[name] = value
    return point
