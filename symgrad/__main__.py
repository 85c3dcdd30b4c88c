"""``python -m symgrad``: the command line (see ``symgrad.cli``)."""

from .cli import main

raise SystemExit(main())
