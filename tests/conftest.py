import json
import os
import tempfile
from pathlib import Path

import pytest

#: The lecture's worked examples, each with the deck and slide it comes from: carried by the
#: repository, so a fresh clone tests with nothing beside it.
REFERENCE = Path(__file__).resolve().parent / "data" / "lecture_examples.json"

#: Optional extras some tests need, and the pip extra that installs each.
EXTRAS = {"torch": "torch", "matplotlib": "show", "pygments": "show", "sklearn": "examples",
          "dask": "distributed", "distributed": "distributed"}

os.environ.setdefault("SYMGRAD_CACHE_DIR", tempfile.mkdtemp(prefix="symgrad-test-cache-"))
# The tests of training check the compiled loops; tests/test_numpy_tier.py checks the NumPy
# tier and the switch between them (engine="auto", the library's default) explicitly.
os.environ.setdefault("SYMGRAD_ENGINE", "compiled")


@pytest.fixture(scope="session")
def vectors():
    if not REFERENCE.is_file():
        pytest.fail(f"the lecture's worked examples are missing: {REFERENCE}")
    return json.loads(REFERENCE.read_text())


def requires(module: str):
    """Import an optional extra's module, or skip saying which extra installs it."""
    extra = EXTRAS[module.split(".")[0]]
    return pytest.importorskip(
        module, reason=f"needs the optional '{extra}' extra: pip install \".[{extra}]\"")


def run_listing(f, **values):
    """Execute the listing's lines one by one (in the generated module's namespace) and
    return every variable's value: intermediates and adjoints, for checking them."""
    namespace = dict(vars(f.module))
    namespace.update({name: float(values[s.name]) for s, name in zip(f.inputs, f.generated.params)})
    for line in [*f.generated.forward, *f.generated.backward]:
        exec(line, namespace)  # generated code, never user text
    names = {line.split("=")[0].split("+")[0].strip()
             for line in [*f.generated.forward, *f.generated.backward]}
    return {n: namespace[n] for n in names}


def expression_trees(leaves, unary, binary, max_leaves=12):
    """A hypothesis strategy of random expressions: ``unary`` and ``binary`` are lists of
    functions building a node from one or two subtrees, over ``leaves``."""
    from hypothesis import strategies as st

    return st.recursive(
        leaves,
        lambda sub: st.one_of(
            st.tuples(st.sampled_from(unary), sub).map(lambda t: t[0](t[1])),
            st.tuples(st.sampled_from(binary), sub, sub).map(lambda t: t[0](t[1], t[2])),
        ),
        max_leaves=max_leaves,
    )
