"""Notebook display of compiled functions and models: ``_repr_html_``, ``_repr_markdown_``.

Both show what a reader of the lecture looks for: the expression in LaTeX, the inputs (or
parameters and data) with their roles, shapes and dtypes, and the flat listing, highlighted
with Pygments when it is installed. Every user-given text is escaped. Long listings are cut
(``f.listing()`` has them whole) and huge expressions are not typeset.
"""

from __future__ import annotations

import html as _html
from typing import TYPE_CHECKING

import sympy as sp

from ..compile import CompiledFunction
from .source import Source, expression_text, source_of

__all__ = ["html", "markdown", "text"]

if TYPE_CHECKING:
    from ..train import Model

#: Lines of each listing section shown in a notebook before it is cut.
MAX_LINES = 120


def html(obj: CompiledFunction | Model) -> str:
    """The HTML a notebook shows for a CompiledFunction or a Model."""
    source = source_of(obj)
    rows = "".join("<tr>" + "".join(f"<td>{_html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in _inputs(source))
    head = "".join(f"<th>{_html.escape(c)}</th>" for c in _columns(source))
    latex = _latex(source)
    return (
        f'<div class="symgrad"><p>{_title(source, _html.escape)}</p>'
        + (f"<p>$${_html.escape(latex)}$$</p>" if latex else "")
        + f"<table><tr>{head}</tr>{rows}</table>"
        + "".join(f"<p>{_html.escape(line)}</p>" for line in _facts(source))
        + '<table><tr><th style="text-align:left">forward</th>'
        + '<th style="text-align:left">backward</th></tr><tr>'
        + f'<td style="vertical-align:top">{_code_html(_lines(source.forward))}</td>'
        + f'<td style="vertical-align:top">{_code_html(_lines(source.backward))}</td>'
        + "</tr></table></div>"
    )


def markdown(obj: CompiledFunction | Model) -> str:
    """The Markdown a notebook shows for a CompiledFunction or a Model."""
    source = source_of(obj)
    out = [_title(source, _md), ""]
    latex = _latex(source)
    if latex:
        out += [f"$${_html.escape(latex, quote=False)}$$", ""]
    columns = _columns(source)
    out += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in _inputs(source)]
    out += ["", *(_md(line) + "  " for line in _facts(source))]
    out += ["", "```python", "# forward", *_lines(source.forward), "", "# backward",
            *_lines(source.backward), "```"]
    return "\n".join(out) + "\n"


def text(obj: CompiledFunction | Model) -> str:
    """The plain-text view: the object's repr and its listing side by side (cut if long)."""
    source = source_of(obj)
    listing = CompiledFunction.format_listing(_lines(source.forward), _lines(source.backward),
                                              columns=True)
    return f"{source.obj!r}\n\n{listing}"


def _title(source: Source, escape) -> str:
    args = ", ".join(s.name for s in source.inputs)
    if source.matrix:
        return (f"<b>Model</b> <code>{escape(source.output)}</code>, the loss of a batch "
                f"(matrices): {len(source.forward)} forward, {len(source.backward)} backward "
                "lines")
    if source.kind == "model":
        return (f"<b>Model</b> <code>{escape(source.output)}</code>, the per-sample loss: "
                f"{len(source.forward)} forward, {len(source.backward)} backward lines")
    return (f"<b>CompiledFunction</b> <code>{escape(f'{source.output}({args})')}</code>: "
            f"{len(source.forward)} forward, {len(source.backward)} backward lines")


def _columns(source: Source) -> list[str]:
    if source.kind == "model":
        return ["symbol", "role", "value", "shape", "dtype"]
    return ["input", "role", "shape", "dtype"]


def _inputs(source: Source) -> list[list[str]]:
    wrt = set(source.wrt)
    graph = source.graph
    dtypes = {n.symbol: (n.shape, n.dtype) for n in graph.inputs}
    rows = []
    for s in (*source.wrt, *(s for s in source.inputs if s not in wrt)):
        shape, dtype = dtypes[s]
        shape_text = "scalar" if shape == () else str(shape)
        if source.kind == "model":
            value = f"{source.defaults[s]:.6g}" if s in wrt else ""
            rows.append([s.name, "parameter" if s in wrt else "data", value, shape_text, dtype])
        else:
            rows.append([s.name, "wrt" if s in wrt else "input", shape_text, dtype])
    return rows


def _facts(source: Source) -> list[str]:
    if source.kind != "model":
        return []
    model = source.obj
    facts = [f"optimizer: {model.optimizer!r}"]
    history = model.history
    if history is not None and history.loss:
        stop = f" ({history.stop_reason})" if history.stop_reason else ""
        facts.append(f"trained {len(history.loss)} epochs, last loss {history.loss[-1]:.6g}{stop}")
    return facts


def _latex(source: Source) -> str:
    if expression_text(source.expr, 400).startswith("<expression of"):
        return ""
    return f"{sp.latex(sp.Symbol(source.output))} = {sp.latex(source.expr)}"


def _lines(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LINES:
        return list(lines)
    return [*lines[:MAX_LINES], f"# ... {len(lines) - MAX_LINES} more lines (see .listing())"]


def _code_html(lines: list[str]) -> str:
    code = "\n".join(lines)
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:
        return f"<pre>{_html.escape(code)}</pre>"
    return highlight(code, PythonLexer(), HtmlFormatter(noclasses=True, nobackground=True))


def _md(text: str) -> str:
    """Text safe inside Markdown (and a table cell): HTML and Markdown syntax escaped."""
    text = _html.escape(text, quote=False)
    return "".join("\\" + c if c in "\\`*_[]|~" else c for c in text)
