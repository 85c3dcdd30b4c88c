"""Painting a :class:`~symgrad.show.scene.Scene`: SVG by hand, PNG through matplotlib.

The SVG's structure is the template ``templates/graph.svg.j2``; every text in it (symbol
names come from users) goes through Jinja's ``e`` filter, so a name cannot end an element.
PNG is drawn with matplotlib's Agg canvas directly (no pyplot state, no backend switch).
"""

from __future__ import annotations

import io

from ..emit.templates import environment
from .scene import FONT, GREEN, INK, RED, Scene, text_width

__all__ = ["to_png", "to_svg"]


def to_svg(scene: Scene) -> str:
    """The scene as a standalone SVG document."""
    boxes = [
        dict(x=_n(b.x), y=_n(b.y), r=_n(b.w / 2), w=_n(b.w), h=_n(b.h), left=_n(b.x - b.w / 2),
             top=_n(b.y - b.h / 2), baseline=_n(b.y + 0.36 * FONT), label=b.label,
             caption=b.caption, caption_y=_n(b.y - b.h / 2 - 5), shape=b.shape,
             tooltip=b.tooltip, color=b.color, kind=b.shape, total=b.total,
             total_y=_n(b.y + b.h / 2 + 0.75 * FONT + 3))
        for b in scene.boxes
    ]
    wires = [
        dict(points=" ".join(f"{_n(x)},{_n(y)}" for x, y in w.points),
             labels=[(kind, _n(x), _n(y), text, color) for kind, (x, y), text, color in (
                 ("value", w.value_at, w.value, GREEN), ("grad", w.grad_at, w.grad, RED))
                 if text])
        for w in scene.lines
    ]
    return environment().get_template("graph.svg.j2").render(
        width=_n(scene.width), height=_n(scene.height), note_y=_n(scene.height - 12),
        font=_n(FONT), title=scene.title, subtitle=scene.subtitle, note=scene.note,
        boxes=boxes, wires=wires, green=GREEN, red=RED, ink=INK,
    )


def to_png(scene: Scene, scale: float = 2.0) -> bytes:
    """The scene as PNG bytes, ``scale`` pixels per SVG pixel (needs matplotlib)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Circle, FancyBboxPatch
        from matplotlib.patheffects import withStroke
    except ImportError:
        raise ImportError("writing PNG needs matplotlib (pip install 'symgrad[show]'); "
                          "save as .svg instead, which needs nothing.") from None
    fig = Figure(figsize=(scene.width / 100, scene.height / 100), dpi=100 * scale)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, scene.width)
    ax.set_ylim(scene.height, 0)
    ax.axis("off")
    pt = 0.72  # points per SVG pixel at 100 dpi
    halo = [withStroke(linewidth=3, foreground="white")]
    ax.text(16, 26, scene.title, fontsize=15 * pt, weight="bold", color=INK, va="baseline")
    ax.text(16, 47, scene.subtitle, fontsize=FONT * pt, color=INK, va="baseline")
    x = 16 + text_width(scene.subtitle) + 24
    for text, color in (("value", GREEN), (" / ", INK), ("gradient", RED)):
        ax.text(x, 47, text, fontsize=FONT * pt, color=color, va="baseline")
        x += text_width(text)
    for line in scene.lines:
        xs, ys = zip(*line.points)
        ax.plot(xs, ys, color="#90a4ae", linewidth=1.5 * pt, zorder=1)
    for b in scene.boxes:
        if b.shape == "circle":
            ax.add_patch(Circle((b.x, b.y), b.w / 2, facecolor="white", edgecolor=INK,
                                linewidth=1.5 * pt, zorder=2))
        elif b.shape in ("rect", "dashed"):
            ax.add_patch(FancyBboxPatch(
                (b.x - b.w / 2, b.y - b.h / 2), b.w, b.h, boxstyle="round,pad=0,rounding_size=6",
                facecolor="white" if b.shape == "rect" else "#f5f5f5", edgecolor=b.color,
                linestyle="-" if b.shape == "rect" else "--", linewidth=1.5 * pt, zorder=2))
        weight = "bold" if b.shape == "text" else "normal"
        ax.text(b.x, b.y, b.label, fontsize=FONT * pt, color=b.color, ha="center",
                va="center", weight=weight, zorder=3)
        if b.caption:
            ax.text(b.x, b.y - b.h / 2 - 5, b.caption, fontsize=10 * pt, color="#90a4ae",
                    ha="center", va="baseline", zorder=3)
        if b.total:
            ax.text(b.x, b.y + b.h / 2 + 0.75 * FONT + 3, b.total, fontsize=FONT * pt,
                    color=RED, ha="center", va="baseline", path_effects=halo, zorder=4)
    for line in scene.lines:
        for (x, y), text, color in ((line.value_at, line.value, GREEN),
                                    (line.grad_at, line.grad, RED)):
            if text:
                ax.text(x, y, text, fontsize=FONT * pt, color=color, ha="center",
                        va="baseline", path_effects=halo, zorder=4)
    if scene.note:
        ax.text(16, scene.height - 12, scene.note, fontsize=11 * pt, color="#78909c")
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def _n(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")
