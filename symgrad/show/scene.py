"""Geometry of a graph picture: boxes, wires and labels in pixels, ready for any renderer.

The SVG and PNG writers only paint what is here, so both show the same picture. Sizes
come from an estimate of text width (no font metrics are needed, so no system library).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Box", "Line", "Scene", "GREEN", "RED", "FONT", "text_width"]

FONT = 13.0
GREEN = "#1b7a2e"
RED = "#c62828"
INK = "#37474f"
GREY = "#78909c"


def text_width(text: str, size: float = FONT) -> float:
    """Width of ``text`` in a sans-serif font, estimated from its length (0.6 em a glyph)."""
    return 0.6 * size * len(text)


@dataclass(frozen=True)
class Box:
    """A node at centre ``(x, y)``: ``shape`` is ``circle``, ``rect``, ``dashed`` or ``text``."""

    x: float
    y: float
    w: float
    h: float
    label: str
    shape: str
    caption: str = ""
    tooltip: str = ""
    color: str = INK
    total: str = ""  # a fan-out's summed gradient, written under the box

    def anchor(self, toward: tuple[float, float], side: int) -> tuple[float, float]:
        """Where a wire meets the box: its right (``side=1``) or left (``-1``) side."""
        if self.shape != "circle":
            return (self.x + side * self.w / 2, self.y)
        dx, dy = toward[0] - self.x, toward[1] - self.y
        norm = math.hypot(dx, dy) or 1.0
        r = self.w / 2
        return (self.x + r * dx / norm, self.y + r * dy / norm)


@dataclass(frozen=True)
class Line:
    """A wire: a polyline, its value (green, above) and its gradient (red, below).

    ``value_at`` and ``grad_at`` are the labels' centre-baseline points.
    """

    points: tuple[tuple[float, float], ...]
    value: str
    grad: str
    value_at: tuple[float, float]
    grad_at: tuple[float, float]

    @staticmethod
    def labelled(points, value: str, grad: str, t: float = 0.5) -> Line:
        """Labels beside fraction ``t`` of the last segment, each just clear of the line."""
        (x0, y0), (x1, y1) = points[-2], points[-1]
        x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        nx, ny = (y1 - y0) / length, -(x1 - x0) / length  # unit normal, pointing up
        if ny > 0:
            nx, ny = -nx, -ny

        def beside(text: str, side: int) -> tuple[float, float]:
            reach = text_width(text) / 2 * abs(nx) + 0.4 * FONT * abs(ny) + 3
            return x + side * nx * reach, y + side * ny * reach + 0.36 * FONT

        return Line(tuple(points), value, grad, beside(value, 1), beside(grad, -1))


@dataclass
class Scene:
    width: float
    height: float
    title: str
    subtitle: str
    boxes: list[Box] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    note: str = ""
