"""The cache trust model (symgrad.trust): a cache only its owner can feed, damaged files
recompiled, unusable directories survived, and clearing wherever Numba keeps the files.

The attacks are real: a pickle planted over Numba's index that creates a sentinel directory
when unpickled. Each refusal test has a twin showing that the same planted file does run
when it sits where only its owner could have put it, so a refusal that stopped working
would be seen."""

import hashlib
import json
import marshal
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from symgrad import trust
from symgrad.compile import cache

ROOT = Path(__file__).resolve().parents[1]
ROOT_USER = hasattr(os, "getuid") and os.getuid() == 0
POSIX = os.name == "posix"
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX owners and modes (Windows: skipped)")

#: The next compile, in a new process: the model of the probe that ran os.system.
VICTIM = """
import json, sys, warnings
warnings.simplefilter("always")
import sympy as sp, symgrad as sg
x, y = sp.symbols("x y")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    f = sg.compile(sp.sin(x) * y + 3, wrt=[x, y], cache_dir=sys.argv[1])
    value, grad = f.value_and_grad(1.0, 2.0)
    if len(sys.argv) > 2:  # a kernel too
        import numpy as np
        from symgrad.kernels import loops
        loops.permute(np.empty(3, dtype=np.int64), 0)
print(json.dumps({"value": value, "grad": list(grad), "path": str(f.path),
                  "warnings": [str(w.message) for w in caught
                               if issubclass(w.category, sg.CacheWarning)]}))
"""
EXPECTED = (2 * np.sin(1.0) + 3, [2 * np.cos(1.0), np.sin(1.0)])


def _victim(cache_dir, *extra, env=None):
    run = subprocess.run([sys.executable, "-c", VICTIM, str(cache_dir), *extra],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, **(env or {})})
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["value"] == pytest.approx(EXPECTED[0], rel=1e-14)
    assert out["grad"] == pytest.approx(EXPECTED[1], rel=1e-14)
    return out


class _Boom:
    """Unpickling it creates the directory it names."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.mkdir, (self.sentinel,))


def _plant(index: Path, sentinel: Path) -> None:
    """Numba's index format (its version, then the payload) with a payload that runs code."""
    index.write_bytes(pickle.dumps(numba.__version__) + pickle.dumps(_Boom(sentinel)))


def _open_dir() -> Path:
    """A new directory that others may enter (pytest's tmp_path lies below a 0o700 folder,
    where nobody else can reach anything, so every mode below it would be safe)."""
    where = Path(tempfile.mkdtemp(prefix="symgrad-trust-test-"))
    where.chmod(0o755)
    return where


@pytest.fixture
def tmp_path():
    where = _open_dir()
    yield where
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(scope="module")
def filled():
    """A cache directory after one compile: the module and Numba's index and code for it."""
    base = _open_dir()
    where = base / "cache"
    _victim(where)
    assert list((where / "__pycache__").glob("sg_*.nbi"))
    yield where
    shutil.rmtree(base, ignore_errors=True)


def _copy(filled, tmp_path) -> Path:
    where = tmp_path / "cache"
    shutil.copytree(filled, where)
    return where


def _indexes(where: Path) -> list[Path]:
    found = sorted((where / "__pycache__").glob("sg_*.nbi"))
    assert found
    return found


# -- a cache that only its owner can feed ------------------------------------------------

@posix_only
@pytest.mark.parametrize("loosen, named", [
    pytest.param(lambda d: d.chmod(0o770), "{d} can be written by its group",
                 id="group-writable-dir"),
    pytest.param(lambda d: d.chmod(0o757), "{d} can be written by others",
                 id="others-writable-dir"),
    pytest.param(lambda d: (d.chmod(0o755), (d / "__pycache__").chmod(0o777)),
                 "{d}/__pycache__ can be written by its group and others", id="writable-pycache"),
    pytest.param(lambda d: (d.chmod(0o755), (d / "__pycache__").chmod(0o755),
                            [f.chmod(0o666) for f in _indexes(d)]),
                 ".nbi can be written by its group and others", id="writable-index-file"),
])
def test_a_planted_index_never_runs_where_others_can_write(filled, tmp_path, loosen, named):
    where = _copy(filled, tmp_path)
    sentinel = tmp_path / "sentinel"
    for index in _indexes(where):
        _plant(index, sentinel)
    loosen(where)
    out = _victim(where)
    assert not sentinel.exists()
    assert len(out["warnings"]) == 1
    assert f"not using {where}" in out["warnings"][0]
    assert named.format(d=where) in out["warnings"][0]
    assert "chmod" in out["warnings"][0]
    assert not out["path"].startswith(str(where))  # compiled in the private directory


@posix_only
def test_the_planted_index_runs_where_only_its_owner_could_put_it(filled, tmp_path):
    """The twin of the tests above: the same file in a private cache is the owner's own and
    is loaded (Numba unpickles it), so the refusals above are what kept it from running."""
    where = _copy(filled, tmp_path)
    sentinel = tmp_path / "sentinel"
    for index in _indexes(where):
        _plant(index, sentinel)
    where.chmod(0o700)
    run = subprocess.run([sys.executable, "-c", VICTIM, str(where)], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert sentinel.is_dir()
    assert run.returncode != 0  # Numba then fails on the payload: it was the owner's file


def test_no_pyc_is_ever_run(filled, tmp_path):
    """A ``.pyc`` beside the module (an unchecked-hash one, which Python's own loader runs
    without looking at the source) is never read: the verified source is compiled."""
    import importlib.util
    import py_compile

    where = _copy(filled, tmp_path)
    module = next(where.glob("sg_*.py"))
    sentinel = tmp_path / "sentinel"
    fake = tmp_path / "fake.py"
    fake.write_text(f"import os\nos.mkdir({str(sentinel)!r})\n")
    pyc = Path(importlib.util.cache_from_source(str(module)))
    py_compile.compile(str(fake), cfile=str(pyc), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    out = _victim(where)
    assert not sentinel.exists() and out["warnings"] == []
    # the twin: Python's own loader does run that file
    run_plain = ("import importlib.util, sys; s = importlib.util.spec_from_file_location("
                 "'m', sys.argv[1]); s.loader.exec_module(importlib.util.module_from_spec(s))")
    subprocess.run([sys.executable, "-c", run_plain, str(module)], capture_output=True,
                   timeout=300, env={k: v for k, v in os.environ.items()
                                     if k != "PYTHONDONTWRITEBYTECODE"})
    assert sentinel.is_dir()


@pytest.mark.skipif(not ROOT_USER, reason="only root can give a file to another user")
def test_a_file_owned_by_another_user_is_not_loaded(filled, tmp_path):
    where = _copy(filled, tmp_path)
    sentinel = tmp_path / "sentinel"
    for index in _indexes(where):
        _plant(index, sentinel)
        os.chown(index, 65534, 65534)
    where.chmod(0o700)
    out = _victim(where)
    assert not sentinel.exists()
    assert "owned by uid 65534" in out["warnings"][0]


@posix_only
def test_numba_cache_dir_others_can_write_feeds_no_kernel(tmp_path):
    """$NUMBA_CACHE_DIR open to others: the kernel library does not load from it (an index
    planted for loops.permute stays unread); the generated module's files are beside it."""
    from symgrad.kernels import loops

    shared = tmp_path / "numba"
    kernels = trust.numba_locations(Path(loops.__file__).parent)
    sub = shared / kernels[-1].name  # the folder Numba names after the kernels' directory
    sub.mkdir(parents=True)
    version = f"py{sys.version_info[0]}{sys.version_info[1]}{getattr(sys, 'abiflags', '')}"
    sentinel = tmp_path / "sentinel"
    line = loops.permute.py_func.__code__.co_firstlineno
    _plant(sub / f"loops.permute-{line}.{version}.nbi", sentinel)
    shared.chmod(0o777)
    out = _victim(tmp_path / "cache", "kernel", env={"NUMBA_CACHE_DIR": str(shared)})
    assert not sentinel.exists()
    assert any(str(sub) in w and "can be written by" in w for w in out["warnings"])
    assert not list(shared.rglob("sg_*"))  # generated modules keep theirs in their cache
    assert list((tmp_path / "cache" / "__pycache__").glob("sg_*.nbi"))

    shared.chmod(0o700)  # the twin: a private NUMBA_CACHE_DIR is the owner's, and is used
    from symgrad.kernels import fingerprint  # (stamped as made from today's kernel sources)

    (sub / "symgrad-kernels.stamp").write_text(fingerprint())
    run = subprocess.run([sys.executable, "-c", VICTIM, str(tmp_path / "cache"), "kernel"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "NUMBA_CACHE_DIR": str(shared)})
    assert sentinel.is_dir(), run.stderr


def test_the_kernels_cache_place_is_where_numba_puts_it():
    from symgrad import kernels
    from symgrad.kernels import tape_vm, trainer, vecmath

    place = kernels.ready()
    assert place == kernels.cache_location()
    for dispatcher in (vecmath.vexp, trainer.train, tape_vm.run):
        assert Path(dispatcher._cache.cache_path) == place  # Numba's own record of it


def test_checking_the_kernels_cache_imports_no_kernel_module():
    """ready() checks files; each kernel module is imported where a model uses it."""
    code = ("import sys; from symgrad import kernels; kernels.ready(); "
            "print(sorted(m for m in sys.modules if m.startswith('symgrad.kernels.')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_new_cache_directories_are_private(tmp_path):
    where = tmp_path / "a" / "cache"
    x = sp.Symbol("x_private_dir")
    f = sg.compile(sp.cos(x) * 3, wrt=[x], cache_dir=where)
    assert f.path.parent == where
    if POSIX:
        assert stat.S_IMODE(where.stat().st_mode) == 0o700
        assert stat.S_IMODE((where / "__pycache__").stat().st_mode) == 0o700
        assert stat.S_IMODE(trust.private_dir().stat().st_mode) == 0o700


@posix_only
def test_trust_rules(tmp_path):
    """StrictModes' rules on the path to what is loaded, one case each."""
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    f = d / "sub" / "file"
    f.write_bytes(b"")
    for mode, path in ((0o755, d), (0o755, d / "sub"), (0o644, f)):
        path.chmod(mode)
    assert trust.problem([d, f]) is None
    f.chmod(0o664)
    assert "file can be written by its group (mode 664)" in trust.problem([f])
    (d / "sub").chmod(0o700)  # nobody else can enter: the file's mode no longer matters
    assert trust.problem([f]) is None
    d.chmod(0o777)  # an open directory above: it could be swapped
    assert f"{d} can be written by its group and others" in trust.problem([f])
    d.chmod(0o1777)  # unless it is sticky (as /tmp): others cannot rename what is ours
    assert trust.problem([f]) is None
    assert "can be written" in trust.problem([d])  # but it is no place to load from
    if ROOT_USER:
        d.chmod(0o755)
        os.chown(f, 65534, 65534)
        assert "owned by uid 65534" in trust.problem([f])
        assert trust.problem([f], owners=[65534]) is None


# -- damaged files -----------------------------------------------------------------------

def test_damaged_numba_files_are_removed_and_compiled_again(filled, tmp_path):
    where = _copy(filled, tmp_path)
    index = _indexes(where)[0]
    code = sorted((where / "__pycache__").glob("sg_*.nbc"))
    index.write_bytes(index.read_bytes()[:40])                     # truncated
    code[0].write_bytes(np.random.default_rng(0).bytes(4000))      # garbage
    out = _victim(where)
    assert {Path(w.split("removed ")[1].split(",")[0]) for w in out["warnings"]} == {index,
                                                                                      code[0]}
    assert out["path"].startswith(str(where))  # the cache itself is still used
    assert index.is_file() and code[0].is_file()  # written again by Numba
    assert trust.corrupt([index, *code]) == []
    assert _victim(where)["warnings"] == []  # and loaded again without complaint


def test_a_damaged_kernel_index_is_removed_and_compiled_again(tmp_path):
    """The kernel library's files too (here in a private $NUMBA_CACHE_DIR)."""
    from symgrad.kernels import loops

    shared = tmp_path / "numba"
    sub = shared / trust.numba_locations(Path(loops.__file__).parent)[-1].name
    sub.mkdir(parents=True, mode=0o700)
    shared.chmod(0o700)
    version = f"py{sys.version_info[0]}{sys.version_info[1]}{getattr(sys, 'abiflags', '')}"
    line = loops.permute.py_func.__code__.co_firstlineno
    index = sub / f"loops.permute-{line}.{version}.nbi"
    index.write_bytes(pickle.dumps(numba.__version__)[:-1])  # cut inside the version
    out = _victim(tmp_path / "cache", "kernel", env={"NUMBA_CACHE_DIR": str(shared)})
    assert out["warnings"] == [f"symgrad: removed {index}, a damaged Numba cache file; "
                               "compiling again."]
    assert index.is_file() and trust.corrupt([index]) == []  # Numba wrote it again


def test_whole_numba_files_are_parsed_once_until_they_change(tmp_path, monkeypatch):
    place = tmp_path / "place"
    place.mkdir(mode=0o700)
    code, index = place / "f-1.py311.1.nbc", place / "f-1.py311.nbi"
    code.write_bytes(pickle.dumps(1.5))
    index.write_bytes(pickle.dumps("0.68") + pickle.dumps({"entries": 1}))
    parsed, real = [], trust.corrupt
    monkeypatch.setattr(trust, "corrupt",
                        lambda files: parsed.append(sorted(f.name for f in files)) or real(files))
    trust.discard_corrupt([code, index], place)
    trust.discard_corrupt([code, index], place)  # a later process: nothing changed
    assert parsed == [[code.name, index.name], []]
    assert sorted(json.loads((place / trust.CHECKED).read_text())) == [code.name, index.name]
    code.write_bytes(pickle.dumps(1.5)[:-1])  # cut short after it was found whole
    with pytest.warns(sg.CacheWarning, match="damaged"):
        trust.discard_corrupt([code, index], place)
    assert parsed[-1] == [code.name] and not code.exists()
    assert sorted(json.loads((place / trust.CHECKED).read_text())) == [index.name]
    (place / trust.CHECKED).write_text("[not json")  # a record that is not one: ignored
    trust.discard_corrupt([index], place)
    assert parsed[-1] == [index.name]
    trust.discard_corrupt([index])  # without a place: parsed every time
    trust.discard_corrupt([index])
    assert parsed[-2:] == [[index.name], [index.name]]


def test_a_damaged_module_file_is_written_again(filled, tmp_path):
    where = _copy(filled, tmp_path)
    module = next(where.glob("sg_*.py"))
    sentinel = tmp_path / "sentinel"
    module.write_text(f"import os\nos.mkdir({str(sentinel)!r})\n")
    _victim(where)
    assert not sentinel.exists()
    assert module.name == f"sg_{hashlib.sha256(module.read_bytes()).hexdigest()}.py"


def test_load_module_runs_only_what_symgrad_wrote(tmp_path):
    source = "VALUE = 41 + 1\n"
    path, _ = cache.write_module(source, tmp_path)
    sentinel = tmp_path / "sentinel"
    path.write_text(f"import os\nos.mkdir({str(sentinel)!r})\n")
    with pytest.raises(sg.SymgradError, match="not a module symgrad wrote"):
        cache.load_module(path)
    assert not sentinel.exists()
    with pytest.warns(sg.CacheWarning, match="damaged"):
        assert cache.load_module(path, source).VALUE == 42
    assert path.read_text() == source and not sentinel.exists()


def test_corrupt_finds_unfinished_pickles_without_loading_them(tmp_path):
    sentinel = tmp_path / "sentinel"
    whole = pickle.dumps(numba.__version__) + pickle.dumps(_Boom(sentinel))
    files = {"whole.nbi": whole, "truncated.nbi": whole[:-3], "empty.nbi": b"",
             "garbage.nbi": b"\x80\x05garbage" * 9,
             "version-only.nbi": pickle.dumps(numba.__version__),  # cut between the two
             "whole.nbc": pickle.dumps(_Boom(sentinel)), "two.nbc": whole}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    bad = trust.corrupt([tmp_path / name for name in files])
    assert sorted(p.name for p in bad) == ["empty.nbi", "garbage.nbi", "truncated.nbi",
                                           "two.nbc", "version-only.nbi"]
    assert not sentinel.exists()  # parsed, never unpickled


def test_every_truncation_of_real_numba_files_is_found(filled, tmp_path):
    """Numba's own files from a real compile, cut at ~450 lengths each (every one of the
    first and last 64 bytes): all found damaged; the whole files pass."""
    real = [*_indexes(filled), *sorted((filled / "__pycache__").glob("sg_*.nbc"))]
    assert trust.corrupt(real) == []
    cut = tmp_path / "cut"
    cut.mkdir()
    tried = 0
    for f in real:
        data = f.read_bytes()
        lengths = {*range(0, len(data), max(1, len(data) // 320)), *range(64),
                   *range(len(data) - 64, len(data))}
        for n in lengths:
            (cut / f"{n}{f.suffix}").write_bytes(data[:n])
        assert len(trust.corrupt(sorted(cut.iterdir()))) == len(lengths)
        tried += len(lengths)
        shutil.rmtree(cut)
        cut.mkdir()
    assert tried > 800


# -- unusable cache directories ----------------------------------------------------------

def _compile_in(where, name):
    x = sp.Symbol(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = sg.compile(sp.exp(x) * 2, wrt=[x], cache_dir=where)
        value, (grad,) = f.value_and_grad(0.5)
    assert value == pytest.approx(2 * np.exp(0.5), rel=1e-15)
    assert grad == pytest.approx(2 * np.exp(0.5), rel=1e-15)
    return f, [str(w.message) for w in caught if issubclass(w.category, sg.CacheWarning)]


def test_a_file_where_the_cache_should_be(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    f, caught = _compile_in(blocker, "x_file_in_the_way")
    assert len(caught) == 1 and f"not using {blocker}" in caught[0]
    assert blocker.read_text() == "not a directory"
    assert f.path.parent == trust.private_dir()
    _, again = _compile_in(blocker, "x_file_in_the_way_2")
    assert again == []  # warned once


def test_a_parent_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("")
    _, caught = _compile_in(tmp_path / "file" / "cache", "x_no_parent")
    assert len(caught) == 1 and "cannot be created" in caught[0]


@pytest.mark.skipif(ROOT_USER, reason="root writes through permission bits: a 0o500 directory "
                    "is still usable for root, so there is nothing to fall back from")
def test_an_unwritable_cache_directory(tmp_path):
    where = tmp_path / "cache"
    where.mkdir(mode=0o500)
    try:
        f, caught = _compile_in(where, "x_read_only")
    finally:
        where.chmod(0o700)
    assert len(caught) == 1 and f"not using {where}" in caught[0]
    assert not list(where.iterdir())
    assert f.path.parent == trust.private_dir()


def test_an_unusable_cache_still_trains_a_model(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("")
    w, x, y = sp.symbols("w_unusable x_unusable y_unusable")
    data = {x: np.linspace(-1, 1, 16), y: 3 * np.linspace(-1, 1, 16)}
    with pytest.warns(sg.CacheWarning, match="not using"):
        model = sg.Model((w * x - y) ** 2, params={w: 0.0}, data=[x, y],
                         optimizer=sg.optim.SGD(lr=0.2), cache_dir=blocker)
        history = model.fit(data, epochs=150, verbose=0)
    assert history.stop_reason == "completed"
    assert model.params[w] == pytest.approx(3.0, abs=1e-6)  # the least-squares slope


def test_an_empty_cache_dir_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    x = sp.Symbol("x_empty_dir")
    with pytest.raises(sg.InputError, match="cache_dir is empty"):
        sg.compile(x ** 2, wrt=[x], cache_dir="")
    with pytest.raises(sg.InputError, match="cache_dir is empty"):
        sg.Model((x - 1) ** 2, params={x: 0.0}, data=[], cache_dir="")
    from symgrad.cli import main

    assert main(["--cache-dir", "", "cache"]) == 2
    assert "cache_dir is empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", "")  # an empty variable means the default
    assert cache.cache_dir() != Path("")


@posix_only
def test_the_background_compile_child_refuses_a_cache_it_cannot_trust(tmp_path):
    where = tmp_path / "cache"
    path, _ = cache.write_module("X = 1\n", where)
    where.chmod(0o777)
    spec = json.dumps({"path": str(path)})
    run = subprocess.run([sys.executable, "-m", "symgrad.train.background", spec],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 3, run.stderr  # not 0: the parent must not wait for its loop


# -- clearing and reporting, wherever Numba keeps the files -------------------------------

def test_cache_clear_and_info_with_numba_cache_dir(tmp_path):
    shared, where = tmp_path / "numba", tmp_path / "cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(shared)}
    _victim(where, "kernel", env={"NUMBA_CACHE_DIR": str(shared)})
    kernel_files = list(shared.rglob("loops.permute-*.nb*"))
    assert kernel_files  # the kernel compiled into $NUMBA_CACHE_DIR
    # where an older symgrad left the module's files: Numba's folder named after the cache
    stale = shared / trust.numba_locations(where)[-1].name
    stale.mkdir(parents=True)
    (stale / "sg_0123.value-1.py311.nbi").write_bytes(b"left over")

    def cli(*args):
        run = subprocess.run([sys.executable, "-m", "symgrad", "--cache-dir", str(where),
                              "cache", *args], capture_output=True, text=True, timeout=300,
                             cwd=ROOT, env=env)
        assert run.returncode == 0, run.stderr
        return run.stdout

    info = cli()
    assert f"{where}: 1 generated modules" in info
    assert str(kernel_files[0].parent) in info
    out = cli("clear")
    assert f"from {kernel_files[0].parent}" in out
    assert not list(where.glob("sg_*")) and not list((where / "__pycache__").iterdir())
    assert not list(shared.rglob("*.nb*"))
    assert "0 generated modules" in cli()


def test_atomic_write_is_whole_or_nothing(tmp_path, monkeypatch):
    """One writer for the cache, saved models and the kernel stamp: a failure half-way
    leaves the old file as it was and no temporary file behind."""
    target = tmp_path / "f.bin"
    trust.atomic_write(target, b"old", durable=True)
    assert target.read_bytes() == b"old"

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(trust.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        trust.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


# -- Jinja's compiled templates (symgrad.emit.templates) ---------------------------------

def _template_env(directory: Path):
    import jinja2

    from symgrad.emit.templates import TemplateBytecode, template_dir

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())),
                              trim_blocks=True, lstrip_blocks=True,
                              bytecode_cache=TemplateBytecode(directory))


def _planted_code(sentinel: Path) -> bytes:
    """A compiled template's file (SHA-256 of the payload, then the payload) whose code
    creates ``sentinel`` when Jinja runs it."""
    payload = marshal.dumps(compile(f"import os\nos.mkdir({str(sentinel)!r})\n", "<t>", "exec"))
    return hashlib.sha256(payload).digest() + payload


def test_compiled_templates_are_kept_and_loaded_without_compiling(tmp_path):
    where = tmp_path / "compiled"
    expected = _template_env(where).get_template("prelude.py.j2")
    assert len(list(where.glob("*.j2c"))) == 1
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    env = _template_env(where)

    def refuse(*args, **kwargs):
        raise AssertionError("compiled again")

    env.compile = refuse
    loaded = env.get_template("prelude.py.j2")
    context = {"math_names": ["exp", "log"], "uses_numpy": True, "numba_names": ["njit"],
               "kernel_imports": [("loops", ["permute"])]}
    text = expected.render(context)
    assert "from math import exp, log" in text and "from numba import njit" in text
    assert loaded.render(context) == text


def test_a_damaged_compiled_template_is_compiled_again(tmp_path):
    where = tmp_path / "compiled"
    _template_env(where).get_template("prelude.py.j2")
    (kept,) = where.glob("*.j2c")
    data = kept.read_bytes()
    kept.write_bytes(data[:32] + data[33:])  # a byte lost: the SHA-256 no longer matches
    env = _template_env(where)
    compiled = []
    original = env.compile
    env.compile = lambda *a, **k: compiled.append(1) or original(*a, **k)
    env.get_template("prelude.py.j2")
    assert compiled == [1]
    assert kept.read_bytes() == data  # written again, whole


@posix_only
@pytest.mark.parametrize("mode", [0o770, 0o757], ids=["group-writable", "others-writable"])
def test_a_planted_compiled_template_never_runs_where_others_can_write(tmp_path, mode):
    where = tmp_path / "compiled"
    _template_env(where).get_template("prelude.py.j2")
    (kept,) = where.glob("*.j2c")
    sentinel = tmp_path / "sentinel"
    kept.write_bytes(_planted_code(sentinel))
    where.chmod(mode)
    env = _template_env(where)
    env.get_template("prelude.py.j2")  # compiled from the template instead
    assert not sentinel.exists()


@posix_only
def test_the_planted_compiled_template_runs_where_only_its_owner_could_put_it(tmp_path):
    """The twin: the same file in a private place is the owner's and is run."""
    where = tmp_path / "compiled"
    _template_env(where).get_template("prelude.py.j2")
    (kept,) = where.glob("*.j2c")
    sentinel = tmp_path / "sentinel"
    kept.write_bytes(_planted_code(sentinel))
    with pytest.raises(Exception):  # noqa: B017 (the payload is no template: Jinja fails)
        _template_env(where).get_template("prelude.py.j2")
    assert sentinel.is_dir()


def test_a_compiled_template_kept_under_other_environment_settings_is_not_used(tmp_path):
    """A review found the kept compiled templates keyed by the source and the versions
    only: code compiled under other settings (trim_blocks, lstrip_blocks ...), e.g. by an
    older symgrad whose ``environment()`` differed, was loaded and rendered other text."""
    import jinja2

    from symgrad.emit.templates import TemplateBytecode, template_dir

    context = {"math_names": ["exp", "log"], "uses_numpy": True, "numba_names": ["njit"],
               "kernel_imports": [("loops", ["permute"])]}

    def env(directory, **options):
        return jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(template_dir())),
            bytecode_cache=TemplateBytecode(directory) if directory else None, **options)

    where = tmp_path / "compiled"
    env(where, trim_blocks=True, lstrip_blocks=True).get_template("prelude.py.j2")
    assert list(where.glob("*.j2c"))
    want = env(None).get_template("prelude.py.j2").render(context)
    assert env(where).get_template("prelude.py.j2").render(context) == want
