"""symgrad's version, in its own module so that every layer can read it (pyproject.toml
states the same string)."""

__version__ = "0.1.0"
