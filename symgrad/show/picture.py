"""``graph(f, point)``: the computational graph at a point, drawn as on the slides.

Inputs stand on the left, one node per gate (``+``, ``*``, ``exp``, ``σ``, ``max`` ...), the
output on the right; every wire carries its forward value (green, above) and the gradient
flowing back along it (red, below). The picture is laid out here (``layout.py``, ``draw.py``)
and written as SVG by hand (``svg.py``), so no Graphviz or other system program is needed; PNG
needs matplotlib, and DOT text is there for Graphviz users.

Beyond ``max_nodes`` nodes a picture stops being legible, so only the nodes nearest the
output are drawn (breadth first from it); the values entering that part come from dashed
boxes named after the intermediates they stand for. ``dot()`` always holds the whole graph.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from ..graph import Graph, Node
from .dot import to_dot
from .draw import draw
from .labels import wires
from .source import Source, source_of
from .svg import to_png, to_svg
from .trace import Trace, check_digits, run

__all__ = ["Picture", "graph"]

if TYPE_CHECKING:
    from ..compile import CompiledFunction
    from ..train import Model


def graph(
    obj: CompiledFunction | Model,
    *args,
    sample: int | None = None,
    max_nodes: int | None = 60,
    digits: int = 2,
    **kwargs,
) -> Picture:
    """Draw the graph of a CompiledFunction or a Model with values and gradients at a point.

    The point is given as for :func:`symgrad.show.trace` (for a Model: one sample's data,
    parameters defaulting to the current ones). ``max_nodes=None`` draws every node.
    ``digits`` is the number of decimals on the wires (2, as on the slides).
    """
    check_digits("digits", digits, 0)
    if max_nodes is not None and max_nodes < 2:
        raise ValueError(f"max_nodes must be at least 2 (or None for all), got {max_nodes}")
    source = source_of(obj)
    if source.matrix:
        from .arrays import run_arrays

        return Picture(source, run_arrays(source, args, kwargs), max_nodes, digits)
    return Picture(source, run(source, source.bind(args, kwargs, sample)), max_nodes, digits)


class Picture:
    """A drawing of the graph: ``.svg``, ``.png()``, ``.dot()``, ``.save(path)``.

    In a notebook it displays itself (SVG). ``shown`` and ``total`` count the nodes drawn
    and the nodes of the graph.
    """

    def __init__(self, source: Source, trace: Trace, max_nodes: int | None, digits: int):
        self.graph: Graph = source.graph
        self.trace = trace
        self.digits = digits
        self._source = source
        self._wires = wires(self.graph, trace)
        taken, frontier = _nearest(self.graph, max_nodes)
        self.total = len(self.graph.nodes)
        self.shown = len(taken) + len(frontier)
        self.scene = draw(source, trace, self._wires, taken, frontier, digits)
        self._svg: str | None = None

    @property
    def svg(self) -> str:
        """The picture as an SVG document."""
        if self._svg is None:
            self._svg = to_svg(self.scene)
        return self._svg

    def png(self, scale: float = 2.0) -> bytes:
        """The picture as PNG bytes (needs matplotlib)."""
        return to_png(self.scene, scale)

    def dot(self) -> str:
        """The whole graph (never collapsed) in Graphviz's DOT language."""
        return to_dot(self.graph, self._wires, self.trace, self._source, self.digits)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.svg``, ``.png`` (matplotlib) or ``.dot``/``.gv``, chosen by the suffix."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".svg":
            path.write_text(self.svg, encoding="utf-8")
        elif suffix == ".png":
            path.write_bytes(self.png())
        elif suffix in (".dot", ".gv"):
            path.write_text(self.dot(), encoding="utf-8")
        else:
            raise ValueError(f"cannot tell the format of {path.name!r}; save as .svg, .png or "
                             ".dot (.gv)")
        return path

    def _repr_svg_(self) -> str:
        return self.svg

    def __repr__(self) -> str:
        part = f"{self.shown} of {self.total}" if self.shown < self.total else f"{self.total}"
        return f"<Picture of {self.trace.header()}: {part} nodes>"


def _nearest(graph: Graph, max_nodes: int | None) -> tuple[set[int], set[int]]:
    """Nodes to draw (breadth first from the output) and the frontier feeding them."""
    if max_nodes is None or len(graph.nodes) <= max_nodes:
        return {n.id for n in graph.nodes}, set()
    taken: set[int] = set()
    frontier: set[int] = set()
    queue = deque([graph.output])
    while queue:
        node = queue.popleft()
        if node.id in taken:
            continue
        new = {i.id for i in node.inputs if isinstance(i, Node)} - taken - frontier
        if len(taken) + len(frontier) + len(new) > max_nodes - (node.id not in frontier):
            break
        taken.add(node.id)
        frontier = (frontier | new) - {node.id}
        queue.extend(i for i in node.inputs if isinstance(i, Node))
    return taken, frontier
