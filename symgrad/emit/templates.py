"""Loading the Jinja templates that give generated modules their structure.

The templates live in the repository's top-level ``templates/`` folder, which the wheel
installs as the package ``symgrad.templates``; a source checkout that is not installed
falls back to the folder itself.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import jinja2

__all__ = ["environment", "template_dir"]


def template_dir() -> Path:
    try:
        found = Path(str(resources.files("symgrad.templates")))
    except ModuleNotFoundError:
        found = None
    if found is not None and (found / "module.py.j2").is_file():
        return found
    return Path(__file__).resolve().parents[2] / "templates"


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
