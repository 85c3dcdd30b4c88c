"""One (workload, peer) run in a fresh process: ``python -m benchmarks.worker SPEC_JSON``.

Launched by ``benchmarks/run.py`` with the thread-count environment already set. Prints one
line ``@@ROW {json}`` per result row on stdout (other output is ignored by the driver). A peer
whose library is missing gives a ``not installed`` row; any other failure an ``error`` row.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback

from benchmarks.common import Options
from benchmarks.workloads import WORKLOADS

MARK = "@@ROW "


def _plain(obj):
    """JSON fallback for NumPy scalars (np.bool_, np.float64, ...)."""
    return obj.item() if hasattr(obj, "item") else str(obj)


def emit(row: dict) -> None:
    print(MARK + json.dumps(row, default=_plain), flush=True)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    opts = Options(repeats=spec.get("repeats", 11), quick=spec.get("quick", False))
    base = {k: spec.get(k) for k in ("workload", "peer", "case", "phase")}
    module = importlib.import_module(WORKLOADS[spec["workload"]])
    try:
        for row in module.run(spec, opts):  # a generator: rows are emitted as they come
            emit({**base, "status": "ok", **row})
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        status = "not installed" if missing == module.PEERS.get(spec["peer"]) else "error"
        emit({**base, "status": status, "error": f"{type(exc).__name__}: {exc}"})
    except Exception as exc:  # noqa: BLE001 - every failure becomes a reported row
        traceback.print_exc()
        emit({**base, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
