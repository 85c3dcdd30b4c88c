"""Run as a script by tests/test_persist.py: load every file of a folder with
``symgrad.load_model`` while an audit hook (installed after importing symgrad) records what
loading does; print a JSON summary.

Counted as code executed: an ``exec`` event whose code does not come from a file of an
installed library (the standard library, site-packages or symgrad itself), a
``pickle.find_class`` event, and any process started (``subprocess.Popen``, ``os.system``,
``os.exec*``, ``os.posix_spawn``, ``os.spawn*``, ``os.fork``).
"""

import json
import os
import sys
import sysconfig
from pathlib import Path

import symgrad as sg

LIBRARIES = tuple({os.path.realpath(p) for p in [
    sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values(),
    os.path.dirname(sg.__file__)]})
PROCESS = ("subprocess.Popen", "os.system", "os.posix_spawn", "os.spawn", "os.fork",
           "os.forkpty", "os.startfile")
active = False
events = []


def installed(filename: str) -> bool:
    return filename.startswith("<frozen ") or os.path.realpath(filename).startswith(LIBRARIES)


def hook(event, args):
    if not active:
        return
    if event == "exec":
        name = getattr(args[0], "co_filename", repr(args[0]))
        if not installed(name):
            events.append(["exec", name])
    elif event == "pickle.find_class" or event in PROCESS or event.startswith("os.exec"):
        events.append([event, repr(args)[:200]])


def main(folder: str) -> None:
    global active
    files = sorted(Path(folder).glob("*.sgm"))
    sys.addaudithook(hook)
    counts = {"files": 0, "loaded": 0, "clear_errors": 0, "crashes": [], "lazy": True}
    for path in files:
        counts["files"] += 1
        active = True
        try:
            model = sg.load_model(path)
        except sg.ModelFileError:
            counts["clear_errors"] += 1
        except BaseException as e:  # noqa: BLE001  (any other outcome is what we count)
            counts["crashes"].append(f"{path.name}: {type(e).__name__}: {str(e)[:200]}")
        else:
            counts["loaded"] += 1
            counts["lazy"] = counts["lazy"] and not model.timings
        finally:
            active = False
    counts["code_executed"] = list(events)
    # the hook itself works: it sees code from a file outside the libraries, and unpickling
    active = True
    exec(compile("pass", "/not/a/library/selfcheck.py", "exec"))  # noqa: S102  (the probe)
    import pickle

    pickle.loads(pickle.dumps(Path(".")))
    active = False
    seen = events[len(counts["code_executed"]):]
    counts["hook_works"] = [e[0] for e in seen] == ["exec", "pickle.find_class"]
    counts["numba_imported"] = "numba" in sys.modules
    print(json.dumps(counts))


if __name__ == "__main__":
    main(sys.argv[1])
