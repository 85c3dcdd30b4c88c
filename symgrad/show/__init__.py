"""Show layer: see backprop happen.

``trace`` prints the flat listing with the value of every line at a point, ``graph`` draws
the computational graph with values and gradients on its wires (SVG, PNG, DOT),
``check_gradients`` compares the compiled gradient with central differences, and
``display`` renders compiled functions and models in notebooks. It sits above ``compile``
and ``train`` and reads their artifacts through public attributes only; ``attach`` gives
their classes the display methods (``symgrad/__init__.py`` calls it), so neither imports
this layer.
"""

from .check import TOLERANCES, GradientCheck, GradientRow, check_gradients
from .display import html, markdown, text
from .mixin import ShowMixin, attach
from .picture import Picture, graph
from .trace import Trace, TraceLine, trace

__all__ = [
    "TOLERANCES",
    "GradientCheck",
    "GradientRow",
    "Picture",
    "ShowMixin",
    "Trace",
    "TraceLine",
    "attach",
    "check_gradients",
    "graph",
    "html",
    "markdown",
    "text",
    "trace",
]
