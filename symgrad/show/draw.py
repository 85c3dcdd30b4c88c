"""From graph and trace to a :class:`~symgrad.show.scene.Scene`: what goes where, in pixels.

One box per drawn node plus the output's name on the right; one line per wire. Leaves
(inputs, and the stand-ins of a collapsed picture) stand just before their first consumer;
a leaf feeding three or more gates far apart is drawn once per consumer, so that no wire
crosses the whole picture. Wire labels sit on the part of the last segment away from the
crowded end (many wires meeting at a gate, or leaving a fan-out).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

from ..graph import Node
from .labels import Wire, gate_label, picture_number
from .layout import Layout, layered
from .scene import FONT, GREY, Box, Line, Scene, text_width
from .source import Source, expression_text
from .trace import Trace

__all__ = ["draw"]

ROW = 72.0
TOP = 96.0
LEFT = 20.0


def draw(source: Source, trace: Trace, wires: list[Wire], taken: set[int],
         frontier: set[int], digits: int) -> Scene:
    """The scene of the ``taken`` nodes and the ``frontier`` leaves that feed them."""
    shown = taken | frontier
    drawn = [w for w in wires
             if w.target is None or (w.target.id in taken and w.source.id in shown)]
    boxes, edges = _boxes_and_edges(source, trace, drawn, taken, frontier, digits)
    leaves = {u for u, _ in edges} - {v for _, v in edges}
    lay = layered(len(boxes), edges, late=sorted(leaves))
    labels = [(picture_number(w.value, digits), picture_number(w.grad, digits)) for w in drawn]
    gap = max(110.0, max(text_width(t) for pair in labels for t in pair) + 60.0)
    placed, centre = _place(boxes, lay, gap)

    fan_out = Counter(u for u, _ in edges)
    fan_in = Counter(v for _, v in edges)
    lines = []
    for route, (value, grad) in zip(lay.routes, labels):
        mids = [centre(v) for v in route[1:-1]]
        first, last = placed[route[0]], placed[route[-1]]
        start = first.anchor(mids[0] if mids else (last.x, last.y), 1)
        stop = last.anchor(mids[-1] if mids else (first.x, first.y), -1)
        crowd = fan_in[route[-1]] - (fan_out[route[0]] if not mids else 1)
        t = 0.5 if crowd == 0 else 0.35 if crowd > 0 else 0.65
        lines.append(Line.labelled((start, *mids, stop), value, grad, t))

    title = f"{source.output} = {expression_text(source.expr, 90)}"
    at = ", ".join(f"{k} = {v:.6g}" for k, v in trace.point.items())
    at = at if len(at) <= 150 else at[:147] + "..."
    total = len(source.graph.nodes)
    note = ""
    if len(shown) < total:
        note = (f"{len(shown)} of {total} nodes, those nearest the output; dashed boxes stand "
                "for the rest (picture.dot() has the whole graph, or pass max_nodes=None).")
    width = max(max(b.x + b.w / 2 for b in placed) + LEFT + 10,
                text_width(title, 15) + 40, text_width(at) + 260, text_width(note, 11) + 40)
    height = max(b.y for b in placed) + ROW / 2 + (30 if note else 10)
    return Scene(width, height, title, f"at {at}", placed, lines, note)


def _boxes_and_edges(source, trace, drawn, taken, frontier, digits):
    """Unplaced boxes in topological order (copies of a split leaf side by side) and edges."""
    graph = source.graph
    depth: dict[int, int] = {}
    for node in graph.nodes:
        if node.id in taken and not node.is_input:
            depth[node.id] = 1 + max((depth.get(i.id, 0) for i in node.inputs
                                      if isinstance(i, Node)), default=0)
    uses = defaultdict(list)
    for k, w in enumerate(drawn):
        uses[w.source.id].append(k)
    code = {line.target: line.code for line in trace.forward}
    plain = "data" if source.kind == "model" else "no grad"
    wrt = {source.safe[s] for s in source.wrt}

    boxes: list[Box] = []
    vertex: dict[int, int] = {}
    copy_of: dict[int, int] = {}
    for node in graph.nodes:
        if node.id not in taken and node.id not in frontier:
            continue
        box = _box(node, node.id in frontier, code, trace, plain, wrt)
        spread = [depth.get(drawn[k].target.id, 0) if drawn[k].target else 0
                  for k in uses[node.id]]
        if box.shape in ("text", "dashed") and len(spread) >= 3 and max(spread) - min(spread) > 1:
            for k in uses[node.id]:
                copy_of[k] = len(boxes)
                boxes.append(box)
            continue
        vertex[node.id] = len(boxes)
        if len(uses[node.id]) > 1:
            summed = picture_number(trace.values.get(f"grad_{node.name}"), digits)
            box = _with(box, total=f"Σ {summed}" if summed else "")
        boxes.append(box)
    end = len(boxes)
    boxes.append(_text_box(source.output, f"{source.output} = {trace.value:.6g}"))
    edges = [(copy_of.get(k, vertex.get(w.source.id)), end if w.target is None
              else vertex[w.target.id]) for k, w in enumerate(drawn)]
    return boxes, edges


def _place(boxes: list[Box], lay: Layout, gap: float):
    widths = [0.0] * len(lay.layers)
    for v, box in enumerate(boxes):
        widths[lay.layer[v]] = max(widths[lay.layer[v]], box.w, text_width(box.total))
    lefts = [LEFT]
    for w in widths[:-1]:
        lefts.append(lefts[-1] + w + gap)

    def centre(v: int) -> tuple[float, float]:
        layer, y = lay.layer[v], TOP + lay.row[v] * ROW
        if v < len(boxes) and layer == 0 and boxes[v].shape == "text":
            return lefts[0] + widths[0] - boxes[v].w / 2, y  # first column: right-aligned
        return lefts[layer] + widths[layer] / 2, y

    placed = [_with(box, x=centre(v)[0], y=centre(v)[1]) for v, box in enumerate(boxes)]
    return placed, centre


def _box(node: Node, stub: bool, code: dict, trace: Trace, plain: str, wrt: set) -> Box:
    if node.is_input:
        name = node.symbol.name
        box = _text_box(name, f"{name} = {trace[node.name]:.6g}")
        return box if node.name in wrt else _with(box, caption=plain, color=GREY)
    if stub:
        return Box(0, 0, text_width(node.name) + 18, 26, node.name, "dashed", "",
                   f"{code[node.name]}  (not drawn)", GREY)
    label = gate_label(node)
    if len(label) <= 4:
        return Box(0, 0, 36, 36, label, "circle", node.name, code[node.name])
    return Box(0, 0, text_width(label) + 18, 30, label, "rect", node.name, code[node.name])


def _text_box(label: str, tooltip: str) -> Box:
    return Box(0, 0, text_width(label) + 8, FONT + 6, label, "text", "", tooltip)


def _with(box: Box, **changes) -> Box:
    return replace(box, **changes)
