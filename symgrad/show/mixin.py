"""``ShowMixin``: the show layer as methods of CompiledFunction and Model.

A base class for those two classes, so that ``f.trace(...)``, ``f.graph(...)`` and notebook
display work without the compile and train layers importing this one: every method
imports what it needs when called.
"""

from __future__ import annotations

__all__ = ["ShowMixin"]


class ShowMixin:
    """Adds ``trace``, ``graph`` and rich display (HTML, Markdown, plain text)."""

    def trace(self, *args, **kwargs):
        """The listing with every line's value at a point; see :func:`symgrad.show.trace`."""
        from .trace import trace

        return trace(self, *args, **kwargs)

    def graph(self, *args, **kwargs):
        """The computational graph at a point, as a picture; see :func:`symgrad.show.graph`."""
        from .picture import graph

        return graph(self, *args, **kwargs)

    def _repr_html_(self) -> str:
        from .display import html

        return html(self)

    def _repr_markdown_(self) -> str:
        from .display import markdown

        return markdown(self)

    def _repr_pretty_(self, p, cycle: bool) -> None:
        from .display import text

        p.text(repr(self) if cycle else text(self))
