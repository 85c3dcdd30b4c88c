import json
import os
import tempfile
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "vectors.json"

os.environ.setdefault("SYMGRAD_CACHE_DIR", tempfile.mkdtemp(prefix="symgrad-test-cache-"))


@pytest.fixture(scope="session")
def vectors():
    if not REFERENCE.is_file():
        pytest.fail(f"the lecture's test vectors are missing: {REFERENCE}")
    return json.loads(REFERENCE.read_text())


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
