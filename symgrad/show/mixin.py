"""The show layer as methods of CompiledFunction and Model, attached from above.

``symgrad/__init__.py`` (the package face, above every layer) calls
``attach(CompiledFunction, Model)``, so ``f.trace(...)``, ``model.graph(...)`` and notebook
display work while the compile and train layers never import this one. ``ShowMixin`` holds
the methods; it can also be used as an ordinary base class.
"""

from __future__ import annotations

from .display import html, markdown, text
from .picture import Picture
from .picture import graph as picture
from .trace import Trace, trace

__all__ = ["METHODS", "ShowMixin", "attach"]

#: The methods ``attach`` gives a class.
METHODS = ("trace", "graph", "_repr_html_", "_repr_markdown_", "_repr_pretty_")


class ShowMixin:
    """Adds ``trace``, ``graph`` and rich display (HTML, Markdown, plain text)."""

    def trace(self, *args, **kwargs) -> Trace:
        """The listing with every line's value at a point; see :func:`symgrad.show.trace`."""
        return trace(self, *args, **kwargs)

    def graph(self, *args, **kwargs) -> Picture:
        """The computational graph at a point, as a picture; see :func:`symgrad.show.graph`."""
        return picture(self, *args, **kwargs)

    def _repr_html_(self) -> str:
        return html(self)

    def _repr_markdown_(self) -> str:
        return markdown(self)

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(repr(self) if cycle else text(self))


def attach(*classes: type) -> None:
    """Give each class the methods of :class:`ShowMixin` (:data:`METHODS`)."""
    for cls in classes:
        for name in METHODS:
            setattr(cls, name, ShowMixin.__dict__[name])
