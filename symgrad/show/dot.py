"""The graph in Graphviz's DOT language: every node, wires labelled value / gradient.

For graphs too large to draw legibly here; ``dot -Tsvg graph.dot`` lays them out. Labels
are HTML-like (``<...>``) with every user text escaped, and node ids are ``n<k>``, so no
symbol name can break the file.
"""

from __future__ import annotations

import html

from ..graph import Graph
from .labels import Wire, gate_label, picture_number
from .scene import GREEN, RED
from .source import Source
from .trace import Trace

__all__ = ["to_dot"]


def to_dot(graph: Graph, wires: list[Wire], trace: Trace, source: Source, digits: int) -> str:
    lines = [
        "digraph symgrad {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=12];',
        '  edge [fontname="Helvetica", fontsize=11, color="#90a4ae"];',
        f"  label=<{_e(trace.header())}>; labelloc=t;",
    ]
    for node in graph.nodes:
        if node.is_input:
            lines.append(f"  n{node.id} [shape=plaintext, label=<<b>{_e(node.symbol.name)}</b>>];")
        else:
            label = f"{_e(gate_label(node))}<br/><font point-size='9'>{_e(node.name)}</font>"
            lines.append(f"  n{node.id} [shape=circle, label=<{label}>];")
    lines.append(f"  out [shape=plaintext, label=<<b>{_e(source.output)}</b>>];")
    for w in wires:
        target = "out" if w.target is None else f"n{w.target.id}"
        label = f"<font color='{GREEN}'>{_e(picture_number(w.value, digits))}</font>"
        if w.grad is not None:
            label += f"<br/><font color='{RED}'>{_e(picture_number(w.grad, digits))}</font>"
        lines.append(f"  n{w.source.id} -> {target} [label=<{label}>];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
