"""Notebook display (HTML, Markdown, plain text) and the ShowMixin methods."""

import pytest
import sympy as sp
from conftest import requires

import symgrad as sg
from symgrad.compile import CompiledFunction
from symgrad.show import Picture, ShowMixin, Trace, html, markdown, text

w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")


@pytest.fixture(scope="module")
def neuron():
    return sg.compile(sg.sigmoid(w0 * x0 + w1 * x1 + w2), wrt=[w0, x0, w1], name="L")


def test_html_shows_latex_inputs_and_highlighted_listing(neuron):
    page = html(neuron)
    assert page.startswith('<div class="symgrad">') and page.endswith("</div>")
    assert "$$L = \\operatorname{sigmoid}" in page
    for cell in ("<td>w0</td><td>wrt</td><td>scalar</td><td>float64</td>",
                 "<td>x1</td><td>input</td>"):
        assert cell in page
    requires("pygments")
    assert 'style="' in page and "sigmoid" in page and "grad_s3" in page


def test_markdown_has_latex_a_table_and_a_code_block(neuron):
    md = markdown(neuron)
    assert "$$L = " in md
    assert "| input | role | shape | dtype |" in md and "| w2 | input | scalar | float64 |" in md
    block = md[md.index("```python"):]
    for line in [*neuron.generated.forward, *neuron.generated.backward]:
        assert line in block


def test_plain_text_is_repr_and_listing(neuron):
    shown = text(neuron)
    assert shown.startswith(repr(neuron)) and neuron.listing(columns=True) in shown


def test_user_names_are_escaped_everywhere():
    evil = sp.Symbol("<script>|x")
    f = sg.compile(evil**2, wrt=[evil])
    page, md = html(f), markdown(f)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<script>" not in md and "\\|x" in md


def test_model_display_lists_parameters_and_data():
    w, b, x, y = sp.symbols("w b x y")
    model = sg.Model(loss=(w * x + b - y) ** 2, params={w: 0.5, b: -0.1}, data=[x, y])
    page = html(model)
    assert "<td>w</td><td>parameter</td><td>0.5</td>" in page
    assert "<td>x</td><td>data</td><td></td>" in page and "optimizer: Adam" in page
    md = markdown(model)
    assert "| b | parameter | -0.1 | scalar | float64 |" in md
    assert "<b>Model</b>" in md and "loss" in text(model)


def test_show_mixin_delegates(neuron):
    shown = CompiledFunction.__new__(type("Shown", (CompiledFunction, ShowMixin), {}))
    shown.__dict__.update(neuron.__dict__)
    assert isinstance(shown.trace(2, -1, -3, -2, -3), Trace)
    assert isinstance(shown.graph(2, -1, -3, -2, -3), Picture)
    assert shown._repr_html_() == html(neuron)
    assert shown._repr_markdown_() == markdown(neuron)

    class Printer:
        def text(self, value):
            self.value = value

    p = Printer()
    shown._repr_pretty_(p, cycle=False)
    assert p.value == text(neuron)
