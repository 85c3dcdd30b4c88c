"""Loading the Jinja templates that give generated modules their structure.

The templates live in the repository's top-level ``templates/`` folder, which the wheel
installs as the package ``symgrad.templates``; a source checkout that is not installed
falls back to the folder itself.

Jinja compiles a template to Python before it renders (``arrays.py.j2`` with what it
includes: ~80 ms of CPU here, in every process that renders a matrix model). Like Python's
own ``.pyc`` files, the compiled code is kept beside the templates, in their
``__pycache__`` (:class:`TemplateBytecode`), and loaded from there only under the rules of
:mod:`symgrad.trust` (whoever could plant a file there could change symgrad's own code): a
file named by the SHA-256 of the template's name and source, Jinja's and Python's versions
and the environment's settings that shape the compiled code,
holding the SHA-256 of its contents, in a place only its user, root or the templates'
owner can write. Where it cannot be written or trusted, templates compile in each process.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import marshal
import os
import sys
from importlib import resources
from pathlib import Path

import jinja2

from ..trust import atomic_write, problem

__all__ = ["TemplateBytecode", "compile_all", "environment", "template_dir"]


def template_dir() -> Path:
    try:
        found = Path(str(resources.files("symgrad.templates")))
    except ModuleNotFoundError:
        found = None
    if found is not None and (found / "module.py.j2").is_file():
        return found
    return Path(__file__).resolve().parents[2] / "templates"


#: The settings of a Jinja environment that change the code a template compiles to.
_SHAPING = ("block_start_string", "block_end_string", "variable_start_string",
            "variable_end_string", "comment_start_string", "comment_end_string",
            "line_statement_prefix", "line_comment_prefix", "trim_blocks", "lstrip_blocks",
            "newline_sequence", "keep_trailing_newline", "optimized", "autoescape", "is_async")


class TemplateBytecode(jinja2.BytecodeCache):
    """Jinja's compiled templates in ``directory`` (see the module docstring): loaded only
    from a place :func:`symgrad.trust.problem` accepts (``owners``: uids trusted besides
    the user and root), only a file whose first 32 bytes are the SHA-256 of the rest;
    written atomically. Nothing is unpickled: the code is ``marshal``'d."""

    def __init__(self, directory: Path, owners: tuple[int, ...] = ()) -> None:
        self.directory, self.owners = Path(directory), owners

    def path(self, bucket: jinja2.bccache.Bucket) -> Path:
        env = bucket.environment  # its settings shape the compiled code as much as the source
        settings = repr([getattr(env, name) for name in _SHAPING] + sorted(env.extensions))
        key = "\0".join((jinja2.__version__, sys.version, importlib.util.MAGIC_NUMBER.hex(),
                         settings, bucket.key, bucket.checksum))
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()}.j2c"

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        path = self.path(bucket)
        if problem([self.directory, path], self.owners) is not None:
            return
        try:
            data = path.read_bytes()
        except OSError:
            return
        digest, payload = data[:32], data[32:]
        if len(data) > 32 and hashlib.sha256(payload).digest() == digest:
            try:
                bucket.code = marshal.loads(payload)
            except (EOFError, ValueError, TypeError):
                bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if bucket.code is None:
            return
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            if problem([self.directory], self.owners) is not None:
                return  # not a place we would load from: nothing is written there
            payload = marshal.dumps(bucket.code)
            atomic_write(self.path(bucket), hashlib.sha256(payload).digest() + payload)
        except OSError:  # a read-only installation: templates compile in each process
            pass


@functools.cache
def environment() -> jinja2.Environment:
    where = template_dir()
    owners = (where.stat().st_uid,) if os.name != "nt" else ()
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(where)),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        bytecode_cache=TemplateBytecode(where / "__pycache__", owners),
    )


def compile_all() -> int:
    """Compile every template now (``symgrad cache warm``), kept where it can be; return
    how many there are."""
    names = sorted(p.name for p in template_dir().glob("*.j2"))
    for name in names:
        environment().get_template(name)
    return len(names)
