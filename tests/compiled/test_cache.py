"""The compile cache: an unusable folder, corrupt entries, remembered failures.

A corrupt entry may crash the process that loads it (a truncated ``.so`` is a
SIGBUS), so every test that loads one runs the compile in a subprocess with a
timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

import cache_corpus as cc
import cytask
from cytask._cli import main
from cytask.compiler import CompileCacheWarning, compile_task
from cytask.compiler import _cython as cython_backend

HERE = Path(__file__).parent

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")

#: compiles one cache_corpus function in a fresh process and reports what it got
PROBE = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import cytask, cache_corpus
    from cytask.compiler import NativeEntry, compile_task
    name, args = sys.argv[2], tuple(json.loads(sys.argv[3]))
    ct = compile_task(getattr(cache_corpus, name)).wait(240)
    plan = ct.plan(args, {})
    if isinstance(plan, NativeEntry):
        with cytask.Engine(workers=1) as eng:
            h = eng.submit_native(plan.address, args, plan.arg_kinds, plan.result_kind)
            value = h.result(timeout=60)
    else:
        value = plan(*args) if plan is not None else None
    print(json.dumps({
        "backend": ct.backend, "native": ct.native is not None, "notes": getattr(ct, "notes", []),
        "fallback_reason": ct.fallback_reason, "value": value,
    }))
    """
)


def probe(cache: Path, name: str, *args: Any) -> dict[str, Any]:
    env = {**os.environ, "CYTASK_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(HERE), name, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
        check=False,
    )
    # a SIGBUS (-7) or SIGSEGV (-11) here is the bug: a corrupt entry was loaded
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- an unusable cache folder (item 14) --------------------------------------------------


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp folder, for this test only (where the cache falls back to)."""
    tmp = tmp_path / "systemp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_a_file_as_cache_dir_never_breaks_submitting(
    tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_folder = tmp_path / "cache-is-a-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("CYTASK_CACHE_DIR", str(not_a_folder))
    with cytask.Engine(workers=1) as eng:
        t = cytask.task(compile_to_c=True, engine=eng)(cc.tri)
        assert t.delay(4).result(timeout=60) == 6  # Python, while it compiles
        assert t._compile_future is not None
        t._compile_future.result(timeout=240)
        with pytest.warns(CompileCacheWarning, match="cache-is-a-file"):
            for _ in range(3):  # every later submission, not only the first
                assert t.delay(5).result(timeout=60) == 10
        assert t.backend == "numba"
        (note,) = t._compiled.notes
        assert str(not_a_folder) in note and str(private_tmp) in note
        assert "NotADirectoryError" in note or "FileExistsError" in note
        with warnings.catch_warnings():  # other tests' tasks may have notes of their own
            warnings.simplefilter("ignore", CompileCacheWarning)
            assert eng.warmup()[t.name] == "numba"


@pytest.mark.parametrize("where", ["/proc/cytask-cache", "/proc/self/status/sub"])
def test_a_proc_path_falls_back_to_a_temp_folder(
    where: str, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not os.path.isdir("/proc"):
        pytest.skip("no /proc here")
    monkeypatch.setenv("CYTASK_CACHE_DIR", where)
    ct = compile_task(cc.tri)
    assert (ct.backend, ct.fallback_reason) == ("numba", None)
    assert any(where in n and str(private_tmp) in n for n in ct.notes)
    assert ct.native is not None


def test_no_usable_folder_at_all_falls_back_to_python_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CYTASK_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(blocker))  # the temp folder is a file too
    ct = compile_task(cc.tri).wait(timeout=240)
    assert ct.backend == "python"
    assert ct.fallback_reason is not None
    assert "no folder can hold the compile cache" in ct.fallback_reason
    assert ct.plan((3,), {}) is None
    code = main(["check", "cache_corpus:tri"])
    out, err = capsys.readouterr()
    assert code == 1  # falls back; not an internal error, not a traceback
    assert "FALLBACK" in out and "no folder can hold the compile cache" in out
    assert "Traceback" not in err


def test_the_fallback_temp_folder_must_be_private(
    private_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(os, "getuid"):
        pytest.skip("POSIX ownership")
    shared = private_tmp / f"cytask-cache-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)  # another user could plant modules here: never load from it
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("CYTASK_CACHE_DIR", str(blocker))
    ct = compile_task(cc.tri)
    assert ct.backend == "numba"
    (note,) = ct.notes
    assert f"using {private_tmp}/cytask-cache-private-" in note and str(shared) not in note


# -- corrupt entries (item 15) -------------------------------------------------------------


@needs_cc
@pytest.mark.timeout(900)
def test_a_truncated_or_empty_cython_module_is_rebuilt_not_loaded(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = probe(cache, "count_chars", "abca")
    assert first["backend"] == "cython" and first["value"] == {"a": 2, "b": 1, "c": 1}
    (so,) = (cache / "cython").glob("ct_*.so")

    # its first page only (an interrupted copy): the headers are whole, the code is
    # not, and loading it kills the process with SIGBUS
    with open(so, "r+b") as f:
        f.truncate(4096)
    again = probe(cache, "count_chars", "abca")
    assert again["backend"] == "cython" and again["value"] == {"a": 2, "b": 1, "c": 1}
    assert any("rebuilt" in n and "size" in n for n in again["notes"]), again
    assert so.stat().st_size > 4096

    so.write_bytes(b"")  # empty: used to be a permanent fallback
    again = probe(cache, "count_chars", "abca")
    assert again["backend"] == "cython", again
    assert any("rebuilt" in n for n in again["notes"])

    data = bytearray(so.read_bytes())  # same size, one byte changed: the hash catches it
    data[len(data) // 2] ^= 0xFF
    so.write_bytes(bytes(data))
    again = probe(cache, "count_chars", "abca")
    assert again["backend"] == "cython" and any("SHA-256" in n for n in again["notes"])

    clean = probe(cache, "count_chars", "abca")  # and then it is simply loaded
    assert clean["backend"] == "cython" and clean["notes"] == []


@pytest.mark.timeout(600)
@pytest.mark.parametrize("damage", ["index", "data", "seal"])
def test_a_corrupt_numba_cache_keeps_the_native_path(tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    first = probe(cache, "tri_float", 5)
    assert (first["backend"], first["native"], first["value"]) == ("numba", True, 5.0)
    assert first["notes"] == []
    pycache = cache / "numba" / "__pycache__"
    if damage == "index":
        for f in pycache.glob("*.nbi"):
            f.write_bytes(b"garbage")
    elif damage == "data":
        for f in pycache.glob("*.nbc"):
            data = bytearray(f.read_bytes())
            data[len(data) // 2] ^= 0xFF  # unpickles, maybe: the seal catches it
            f.write_bytes(bytes(data))
    else:
        for f in (cache / "numba").glob("*.seal.json"):
            f.write_text("{not json")
    again = probe(cache, "tri_float", 5)
    assert (again["backend"], again["native"], again["value"]) == ("numba", True, 5.0), again
    assert again["fallback_reason"] is None
    assert any("Numba cache" in n and "rebuilt" in n for n in again["notes"]), again
    clean = probe(cache, "tri_float", 5)
    assert (clean["native"], clean["notes"]) == (True, [])


def test_a_numba_cache_that_fails_to_load_is_rebuilt_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files that pass their seal but still fail to load (a Numba bug, a disk error
    after sealing) are deleted and compiled again, once; the native path stays."""
    from cytask.compiler import _cache, _numba

    monkeypatch.setenv("CYTASK_CACHE_DIR", str(tmp_path / "cache"))
    real = _cache.load_module
    calls: list[str] = []

    def flaky(name: str, path: Path) -> Any:
        calls.append(name)
        if len(calls) == 1:
            (path.parent / "__pycache__").mkdir(exist_ok=True)
            (path.parent / "__pycache__" / f"{path.stem}.x-1.py311.nbi").write_bytes(b"x")
            raise EOFError("Ran out of input")
        return real(name, path)

    monkeypatch.setattr(_numba, "load_module", flaky)
    ct = compile_task(cc.tri)
    assert (ct.backend, ct.native is not None) == ("numba", True)
    assert len(calls) == 2
    assert any("did not load" in n and "rebuilt" in n for n in ct.notes)


# -- remembered Cython failures (item 15) -----------------------------------------------------


@needs_cc
def test_a_failed_cython_build_is_remembered_not_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CYTASK_CACHE_DIR", str(tmp_path / "cache"))
    ct = compile_task(cc.cython_rejects).wait(timeout=280)
    assert ct.backend == "python" and ct.fallback_reason is not None
    assert "Cython build failed" in ct.fallback_reason
    (record,) = (tmp_path / "cache" / "cython").glob("*.failed.json")

    builds: list[object] = []
    monkeypatch.setattr(cython_backend, "_run_build", lambda *a: builds.append(a))
    again = compile_task(cc.cython_rejects)  # as a new process would: no build at all
    assert builds == []
    assert (again.backend, again.state) == ("python", "ready")
    assert again.fallback_reason is not None
    assert "Cython build failed" in again.fallback_reason and str(record) in again.fallback_reason
    assert again.reasons == ct.reasons


def test_a_build_that_did_not_run_is_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CYTASK_CACHE_DIR", str(tmp_path / "cache"))

    def timeout(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired("cythonize", 600)

    monkeypatch.setattr(cython_backend, "_run_build", timeout)
    ct = compile_task(cc.count_chars).wait(timeout=60)
    assert ct.backend == "python"
    assert ct.fallback_reason is not None and "did not run" in ct.fallback_reason
    assert list((tmp_path / "cache" / "cython").glob("*.failed.json")) == []


def test_a_c_compiler_failure_is_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A C compiler or linker error may be the machine's (no Python.h): it is retried."""
    monkeypatch.setenv("CYTASK_CACHE_DIR", str(tmp_path / "cache"))

    def cc_fails(cmd: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
        err = "ct_x.c:1:10: fatal error: Python.h: No such file or directory"
        return subprocess.CompletedProcess(cmd, 1, "", err)

    monkeypatch.setattr(cython_backend, "_run_build", cc_fails)
    ct = compile_task(cc.count_chars).wait(timeout=60)
    assert ct.backend == "python"
    assert ct.fallback_reason is not None and "Python.h" in ct.fallback_reason
    assert list((tmp_path / "cache" / "cython").glob("*.failed.json")) == []


@needs_cc
def test_two_compiles_of_one_function_build_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CYTASK_CACHE_DIR", str(tmp_path / "cache"))
    real = cython_backend._run_build
    builds: list[str] = []

    def counting(cmd: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
        builds.append(cwd)
        return real(cmd, cwd)

    monkeypatch.setattr(cython_backend, "_run_build", counting)
    first = compile_task(cc.count_vowels)  # both builds run on the background pool
    second = compile_task(cc.count_vowels)
    for ct in (first.wait(timeout=280), second.wait(timeout=280)):
        assert (ct.backend, ct.fallback_reason) == ("cython", None)
    assert len(builds) == 1
    (manifest,) = (tmp_path / "cache" / "cython").glob("*.json")
    (so,) = (tmp_path / "cache" / "cython").glob("*.so")
    assert json.loads(manifest.read_text())["size"] == so.stat().st_size
