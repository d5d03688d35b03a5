"""cytask's Redis store beside Celery, Dramatiq, Huey and RQ on one private redis-server.

    python benchmarks/redis_peers.py [--quick] [--rounds N] [--systems a,b] [--peers-venv PATH]

The django-vtasks method (../shared/reference/django-vtasks-vs-celery-rq-benchmark.md):
5,000 tasks enqueued with no worker running, one ``delay()``-style call per task (enqueue/s
is tasks / time of that loop); then ONE worker process is started and processed/s is tasks /
time from its start to the last task done (the start is included). Scenarios: a no-op at
concurrency 8 and a 10 ms ``time.sleep`` at concurrency 200, every system with its own
worker command at the same concurrency (RQ runs one job at a time: it runs 500 tasks, like
the reference). Every system stores each result in the same Redis. cytask alone:
``submit_many``, 8 producer threads, 50,000 no-ops and sleeps (and the worker's start
alone), cross-process wake latency, and two worker processes against one on a compiled
CPU-bound task.

The script starts its own redis-server on a free port (no persistence) and stops it at
the end. The peers run from their own venv (``benchmarks/.venv-peers``, created with pinned
versions on first use); cytask runs from the interpreter that runs this script (it needs
``cytask[redis]``). Every (system, scenario) run is a fresh subprocess; rounds are
interleaved; medians are reported. Progress on stderr, the markdown table on stdout. Not
part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import md_table, rate  # noqa: E402

TASKS = 5_000
RQ_TASKS = 500  # one job at a time (a fork each): the reference runs RQ with 500 too
CONCURRENCY = 8  # worker threads for the no-op scenario, every system
SLEEP_CONCURRENCY = 200
ROUNDS = 3
WAKE_SAMPLES = 200
CPU_TASK_MS = 5.0
CPU_TASKS = 400
CHILD_TIMEOUT_S = 300
DONE_TIMEOUT_S = 240
STALL_S = 30  # a peer's run fails when no task finished for this long
PEERS_VENV = HERE / ".venv-peers"
PINS = (
    "celery[redis]==5.7.0",
    "dramatiq[redis]==2.2.1",
    "huey==3.5.4",
    "rq==3.0.0",
    "redis==8.1.0",
    "hiredis==3.5.0",
)
PEERS = ("celery", "dramatiq", "huey", "rq", "rq-simple")
SYSTEMS = ("cytask", *PEERS)
# goals from issue 10
GOAL_PRODUCE = 50_000
GOAL_NOOP = 30_000
GOAL_SLEEP = 15_000
GOAL_SCALE = 1.8
GOAL_WAKE_MS = 1.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Child side: one (system, scenario) run in this process


def child_env(system: str, url: str, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, BENCH_SYSTEM=system, BENCH_REDIS_URL=url, **extra)


def load_tasks(system: str, url: str, cpu: bool = False) -> Any:
    os.environ.update(BENCH_SYSTEM=system, BENCH_REDIS_URL=url)
    if cpu:
        os.environ["BENCH_CPU"] = "1"
    import importlib

    import redis_peers_tasks

    if cpu and not hasattr(redis_peers_tasks, "spin"):  # imported before, without it
        importlib.reload(redis_peers_tasks)
    return redis_peers_tasks


def flush(url: str) -> Any:
    import redis

    r = redis.Redis.from_url(url)
    r.flushdb()
    return r


def worker_cmd(system: str, scenario: str, conc: int, url: str) -> list[str]:
    py = sys.executable
    if system == "cytask":
        return [py, "-m", "cytask", "worker", "redis_peers_tasks", "--store", url,
                "--workers", str(conc), "--burst", "--quiet"]  # fmt: skip
    if system == "celery":
        return [py, "-m", "celery", "-A", "redis_peers_tasks", "worker", "--pool", "threads",
                "-c", str(conc), "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-l", "WARNING"]  # fmt: skip
    if system == "dramatiq":
        return [py, "-m", "dramatiq", "redis_peers_tasks", "--processes", "1",
                "--threads", str(conc)]  # fmt: skip
    if system == "huey":
        return [py, "-m", "huey.bin.huey_consumer", "redis_peers_tasks.huey", "-w", str(conc),
                "-k", "thread", "-q"]  # fmt: skip
    if system in ("rq", "rq-simple"):
        cmd = [py, "-m", "rq.cli", "worker", "-u", url, "-q"]
        return cmd + (["-w", "rq.worker.SimpleWorker"] if system == "rq-simple" else [])
    raise ValueError(f"Expected one of {SYSTEMS} for system, got {system!r}")


class KeysDone:
    """Counts existing keys from a cursor: results land about in submit order."""

    def __init__(self, r: Any, keys: list[str]) -> None:
        self.r, self.keys, self.cursor = r, keys, 0

    def __call__(self) -> int:
        while self.cursor < len(self.keys):
            chunk = self.keys[self.cursor : self.cursor + 500]
            if self.r.exists(*chunk) != len(chunk):
                break
            self.cursor += len(chunk)
        return self.cursor


def enqueue_peer(system: str, scenario: str, n: int, url: str) -> tuple[float, Callable[[], int]]:
    """Enqueue n tasks one call each; (seconds, a function counting finished ones)."""
    r = flush(url)
    mod = load_tasks(system, url)
    fn = mod.noop if scenario == "noop" else mod.sleep10
    if system == "celery":
        delay = fn.delay
        t0 = time.perf_counter()
        ids = [delay(i).id for i in range(n)]
        elapsed = time.perf_counter() - t0
        return elapsed, KeysDone(r, [f"celery-task-meta-{i}" for i in ids])
    if system == "dramatiq":
        send = fn.send
        t0 = time.perf_counter()
        msgs = [send(i) for i in range(n)]
        elapsed = time.perf_counter() - t0
        return elapsed, KeysDone(r, [mod.result_backend.build_message_key(m) for m in msgs])
    if system == "huey":
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        elapsed = time.perf_counter() - t0
        return elapsed, mod.huey.storage.result_store_size
    if system in ("rq", "rq-simple"):
        from rq import Queue
        from rq.registry import FinishedJobRegistry

        q = Queue("default", connection=r)
        enqueue = q.enqueue
        t0 = time.perf_counter()
        for i in range(n):
            enqueue(fn, i)
        elapsed = time.perf_counter() - t0
        key = FinishedJobRegistry(queue=q).key
        return elapsed, lambda: int(r.zcard(key))
    raise ValueError(f"Expected a peer for system, got {system!r}")


def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def run_peer(system: str, scenario: str, n: int, conc: int, url: str) -> dict[str, Any]:
    enqueue_s, done = enqueue_peer(system, scenario, n, url)
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        worker = subprocess.Popen(
            worker_cmd(system, scenario, conc, url), cwd=HERE, env=child_env(system, url),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            last, moved = -1, t0
            while (k := done()) < n:
                now = time.perf_counter()
                if k != last:
                    last, moved = k, now
                if worker.poll() is not None or now - moved > STALL_S or now - t0 > DONE_TIMEOUT_S:
                    out.seek(0)
                    tail = out.read()[-400:].replace("\n", " ")
                    raise RuntimeError(f"{k}/{n} done, worker exit {worker.poll()}: {tail}")
                time.sleep(0.005)
            process_s = time.perf_counter() - t0
        finally:
            stop(worker)
    return {"enqueue": n / enqueue_s, "process": n / process_s}


def cytask_engine(url: str, **kwargs: Any) -> Any:
    import cytask

    return cytask.Engine(store=url, workers=0, **kwargs)


def run_cytask(scenario: str, n: int, conc: int, url: str) -> dict[str, Any]:
    flush(url)
    mod = load_tasks("cytask", url)
    fn = mod.noop if scenario == "noop" else mod.sleep10
    eng = cytask_engine(url)
    try:
        submit = eng.submit
        t0 = time.perf_counter()
        handles = [submit(fn, i) for i in range(n)]
        enqueue_s = time.perf_counter() - t0
    finally:
        eng.shutdown()
    t0 = time.perf_counter()
    proc = subprocess.run(
        worker_cmd("cytask", scenario, conc, url), cwd=HERE, env=child_env("cytask", url),
        capture_output=True, text=True, timeout=DONE_TIMEOUT_S,
    )  # fmt: skip
    process_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"cytask worker exit {proc.returncode}: {proc.stderr[-400:]}")
    check = cytask_engine(url)
    try:
        counts = check._durable.store.counts()
        if counts.get("succeeded") != n:
            raise RuntimeError(f"after the burst worker: {counts}")
        h = handles[-1]
        if check.get(h.task_id) is None:
            raise RuntimeError(f"task {h.task_id} not found after the run")
    finally:
        check.shutdown()
    return {"enqueue": n / enqueue_s, "process": n / process_s}


def run_bulk(scenario: str, n: int, conc: int, url: str) -> dict[str, Any]:
    """A longer run: n tasks by ``submit_many``, one burst worker; and its start alone."""
    flush(url)
    load_tasks("cytask", url)
    cmd = worker_cmd("cytask", scenario, conc, url)
    env = child_env("cytask", url)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=HERE, env=env, check=True, capture_output=True, timeout=60)
    start_s = time.perf_counter() - t0  # an empty store: import, connect, find nothing, exit
    mod = load_tasks("cytask", url)
    eng = cytask_engine(url)
    try:
        fn = mod.noop if scenario == "noop" else mod.sleep10
        eng.submit_many(fn, [(i,) for i in range(n)])
    finally:
        eng.shutdown()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=600)
    process_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"cytask worker exit {proc.returncode}: {proc.stderr[-400:]}")
    check = cytask_engine(url)
    try:
        counts = check._durable.store.counts()
    finally:
        check.shutdown()
    if counts.get("succeeded") != n:
        raise RuntimeError(f"after the burst worker: {counts}")
    return {"process": n / process_s, "start_s": start_s}


def run_submit_many(n: int, url: str) -> dict[str, Any]:
    flush(url)
    mod = load_tasks("cytask", url)
    eng = cytask_engine(url)
    try:
        args = [(i,) for i in range(n)]
        t0 = time.perf_counter()
        eng.submit_many(mod.noop, args)
        elapsed = time.perf_counter() - t0
        counts = eng._durable.store.counts()
    finally:
        eng.shutdown()
    if counts.get("pending") != n:
        raise RuntimeError(f"after submit_many of {n}: {counts}")
    return {"rate": n / elapsed}


def run_producers(n: int, url: str, n_threads: int = 8) -> dict[str, Any]:
    flush(url)
    mod = load_tasks("cytask", url)
    eng = cytask_engine(url)
    per_thread = n // n_threads
    barrier = threading.Barrier(n_threads + 1)
    errors: list[BaseException] = []

    def produce() -> None:
        submit, fn = eng.submit, mod.noop
        barrier.wait()
        try:
            for i in range(per_thread):
                submit(fn, i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce) for _ in range(n_threads)]
    try:
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        counts = eng._durable.store.counts()
    finally:
        eng.shutdown()
    if errors:
        raise errors[0]
    if counts.get("pending") != n_threads * per_thread:
        raise RuntimeError(f"after {n_threads} x {per_thread} submits: {counts}")
    return {"rate": n_threads * per_thread / elapsed}


@contextlib.contextmanager
def cytask_workers(url: str, count: int, workers: int, cpu: bool) -> Iterator[None]:
    """``count`` worker processes, each past its imports (its first line printed)."""
    cmd = [sys.executable, "-m", "cytask", "worker", "redis_peers_tasks", "--store", url,
           "--workers", str(workers)]  # fmt: skip
    env = child_env("cytask", url, **({"BENCH_CPU": "1"} if cpu else {}))
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen(cmd, cwd=HERE, env=env, stderr=subprocess.PIPE, text=True)
            )
        for p in procs:
            assert p.stderr is not None
            line = p.stderr.readline()  # "cytask worker: N workers on URL (pid P)"
            if not line.startswith("cytask worker:") or "error" in line:
                raise RuntimeError(f"cytask worker did not start: {line}{p.stderr.read()[-400:]}")
        yield
    finally:
        for p in procs:  # SIGTERM drains (running tasks finish), SIGKILL after 3 s
            stop(p, grace=3.0)
        for p in procs:
            if p.stderr is not None:
                p.stderr.close()


def run_wake(samples: int, url: str) -> dict[str, Any]:
    """An idle worker process; one task at a time: ms to its start and to its result."""
    flush(url)
    mod = load_tasks("cytask", url)
    eng = cytask_engine(url)
    try:
        with cytask_workers(url, 1, 2, cpu=False):
            eng.submit(mod.stamp, time.time()).result(timeout=30)  # it is up
            time.sleep(0.5)
            start_ms, result_ms = [], []
            for _ in range(samples):
                time.sleep(0.02)  # the worker is idle again
                t0 = time.perf_counter()
                h = eng.submit(mod.stamp, time.time())
                started = h.result(timeout=30)
                result_ms.append((time.perf_counter() - t0) * 1e3)
                start_ms.append(started * 1e3)
    finally:
        eng.shutdown()
    return {"start_ms": start_ms, "result_ms": result_ms}


def calibrate_spin(mod: Any) -> int:
    """Loop length of a ~CPU_TASK_MS call of the compiled task (in-memory engine, 1 worker)."""
    import cytask

    if mod.spin.backend == "python":
        raise RuntimeError(f"peers.spin did not compile: {mod.spin.fallback_reason}")
    n = 200_000
    with cytask.Engine(workers=1) as eng:
        for _ in range(4):
            times = []
            for s in range(7):
                t0 = time.perf_counter()
                eng.submit(mod.spin, n, s + 1).result(timeout=60)
                times.append(time.perf_counter() - t0)
            ms = statistics.median(times) * 1e3
            n = max(1_000, int(n * CPU_TASK_MS / ms))
            if abs(ms - CPU_TASK_MS) < 0.1 * CPU_TASK_MS:
                break
    return n


def run_scale(tasks: int, url: str) -> dict[str, Any]:
    """One worker process (one worker thread) against two, on compiled CPU-bound tasks.

    The workers are started and past their imports before the clock starts: one
    ``submit_many`` of every task, then until the store counts them all succeeded, or
    until a budget of 4x the compiled time (+10 s) runs out: a worker that runs the task
    as Python (~100x slower) is timed on the tasks it finished by then.
    """
    mod = load_tasks("cytask", url, cpu=True)
    steps = calibrate_spin(mod)
    out: dict[str, Any] = {"steps": steps}
    for procs in (1, 2):
        flush(url)
        eng = cytask_engine(url)
        try:
            with cytask_workers(url, procs, 1, cpu=True):
                args = [(steps, s + 1) for s in range(tasks)]
                budget = 10 + 4 * tasks * CPU_TASK_MS / 1e3 / procs
                t0 = time.perf_counter()
                handles = eng.submit_many(mod.spin, args)
                store = eng._durable.store
                while (done := store.counts().get("succeeded", 0)) < tasks:
                    if time.perf_counter() - t0 > budget:
                        break
                    time.sleep(0.005)
                elapsed = time.perf_counter() - t0
                out[f"procs{procs}"] = done / elapsed
                out[f"done{procs}"] = done
                for h, (n, s) in zip(handles[:2], args[:2], strict=True):
                    got = h.result(timeout=60)
                    if got != mod.pi_lcg(n, s):
                        raise RuntimeError(f"spin({n}, {s}) = {got}, Python says otherwise")
        finally:
            eng.shutdown()
    return out


def child(system: str, scenario: str, n: int, conc: int, url: str) -> None:
    out: dict[str, Any]
    try:
        if system != "cytask":
            out = run_peer(system, scenario, n, conc, url)
        elif scenario in ("noop", "sleep"):
            out = run_cytask(scenario, n, conc, url)
        elif scenario in ("bulk", "bulk-sleep"):
            out = run_bulk("noop" if scenario == "bulk" else "sleep", n, conc, url)
        elif scenario == "submit_many":
            out = run_submit_many(n, url)
        elif scenario == "producers":
            out = run_producers(n, url)
        elif scenario == "wake":
            out = run_wake(n, url)
        elif scenario == "scale":
            out = run_scale(n, url)
        else:
            raise ValueError(f"Expected a scenario, got {scenario!r}")
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(json.dumps(out), flush=True)


def versions() -> None:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("cytask", "celery", "kombu", "dramatiq", "huey", "rq", "redis", "hiredis"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------------
# Parent side: redis-server, the peers' venv, rounds of subprocesses, the table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(binary: str) -> Iterator[tuple[str, str]]:
    """A private redis-server on a free port, no persistence; (URL, version line)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", tmp, "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=1) as c,
                ):
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start")
                time.sleep(0.05)
            ver = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
            yield f"redis://127.0.0.1:{port}/0", ver.split(" sha=")[0].strip()
        finally:
            stop(proc, grace=10.0)


def peers_python(venv: Path) -> str:
    """The peers' venv interpreter; created and filled with PINS when missing or stale."""
    py = venv / "bin" / "python"
    stamp = venv / "pins.txt"
    wanted = "\n".join(PINS) + "\n"
    if py.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(py)
    log(f"installing the peers into {venv}: {' '.join(PINS)}")
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS], check=True
    )
    stamp.write_text(wanted)
    return str(py)


@dataclass
class Row:
    system: str
    scenario: str
    label: str
    worker: str
    tasks: int
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    def median(self, key: str) -> float:
        vals = [r[key] for r in self.results if key in r]
        return statistics.median(vals) if vals else float("nan")

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.results if key in r]


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_child(python: str, row: Row, conc: int, url: str) -> None:
    cmd = [python, str(Path(__file__).resolve()), "--child", row.system, row.scenario,
           "--tasks", str(row.tasks), "--concurrency", str(conc), "--redis-url", url]  # fmt: skip
    # its own process group: whatever it started goes when the group is killed
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.communicate()
        row.error = f"timed out after {CHILD_TIMEOUT_S} s"
        return
    finally:
        kill_group(proc.pid)
    lines = stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        row.error = f"crashed (exit {proc.returncode}): {tail}"
        return
    result = json.loads(lines[-1])
    if "error" in result:
        row.error = result["error"]
        return
    row.results.append(result)


def plan(systems: Sequence[str], n: int, quick: bool) -> list[Row]:
    rq_n = max(50, n * RQ_TASKS // TASKS)
    label = {
        "cytask": "cytask",
        "celery": "Celery",
        "dramatiq": "Dramatiq",
        "huey": "Huey",
        "rq": "RQ",
        "rq-simple": "RQ SimpleWorker",
    }
    worker = {
        "cytask": "`cytask worker --workers {c} --burst`",
        "celery": "`celery worker --pool threads -c {c}`",
        "dramatiq": "`dramatiq --processes 1 --threads {c}`",
        "huey": "`huey_consumer -k thread -w {c}`",
        "rq": "`rq worker` (a fork per job)",
        "rq-simple": "`rq worker -w SimpleWorker` (in-process)",
    }
    rows = []
    for scenario, conc in (("noop", CONCURRENCY), ("sleep", SLEEP_CONCURRENCY)):
        for s in systems:
            tasks = rq_n if s.startswith("rq") else n
            rows.append(Row(s, scenario, label[s], worker[s].format(c=conc), tasks))
    if "cytask" in systems:
        rows.append(Row("cytask", "bulk", "cytask", "-", 10 * n))
        rows.append(Row("cytask", "bulk-sleep", "cytask", "-", 10 * n))
        rows.append(Row("cytask", "submit_many", "cytask", "-", n))
        rows.append(Row("cytask", "producers", "cytask", "-", n))
        rows.append(
            Row(
                "cytask",
                "wake",
                "cytask",
                "1 process, 2 workers",
                WAKE_SAMPLES // 4 if quick else WAKE_SAMPLES,
            )
        )
        rows.append(
            Row(
                "cytask",
                "scale",
                "cytask",
                "1 or 2 processes, 1 worker each",
                CPU_TASKS // 4 if quick else CPU_TASKS,
            )
        )
    return rows


def conc_of(row: Row) -> int:
    return SLEEP_CONCURRENCY if row.scenario in ("sleep", "bulk-sleep") else CONCURRENCY


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if a == a and b == b and b > 0 else "n/a"


def short(error: str) -> str:
    """An error for a table cell: one line, no pipes, at most 160 characters."""
    one = " ".join(error.replace("|", "/").split())
    return one if len(one) <= 160 else one[:157] + "..."


def verdict(ok: bool, measured: float) -> str:
    return "n/a" if measured != measured else ("PASS" if ok else "FAIL")


def report(rows: list[Row]) -> str:
    titles = {"noop": "no-op, concurrency 8", "sleep": "sleep 10 ms, concurrency 200"}
    by = {(r.system, r.scenario): r for r in rows}
    table = []
    best: dict[str, tuple[float, float]] = {}
    for scenario in ("noop", "sleep"):
        peers = [r for r in rows if r.scenario == scenario and r.system != "cytask"]
        enq = [r.median("enqueue") for r in peers if r.results]
        proc = [r.median("process") for r in peers if r.results]
        best[scenario] = (max(enq, default=float("nan")), max(proc, default=float("nan")))
        for r in (x for x in rows if x.scenario == scenario):
            if not r.results:
                table.append(
                    [
                        titles[scenario],
                        r.label,
                        r.worker,
                        f"{r.tasks:,}",
                        f"n/a ({short(r.error)})",
                        "",
                        "",
                    ]
                )
                continue
            p = r.values("process")
            vs = ""
            if r.system == "cytask":
                vs = (
                    f"{ratio(r.median('enqueue'), best[scenario][0])} / "
                    f"{ratio(r.median('process'), best[scenario][1])}"
                )
            table.append(
                [
                    titles[scenario],
                    r.label,
                    r.worker,
                    f"{r.tasks:,}",
                    rate(r.median("enqueue")),
                    f"{rate(statistics.median(p))} ({rate(min(p))}-{rate(max(p))})",
                    vs,
                ]
            )
    out = [
        md_table(
            [
                "scenario",
                "system",
                "worker",
                "tasks",
                "enqueue/s",
                "processed/s (range)",
                "cytask / best peer (enqueue / processed)",
            ],
            table,
            right=3,
        )
    ]

    if ("cytask", "submit_many") not in by:
        return "\n".join(out)

    def med(system: str, scenario: str, key: str) -> float:
        r = by.get((system, scenario))
        return r.median(key) if r is not None else float("nan")

    def err(scenario: str) -> str:
        r = by.get(("cytask", scenario))
        return f" ({short(r.error)})" if r is not None and r.error else ""

    goals = []
    single = med("cytask", "noop", "enqueue")
    goals.append(
        [
            f"single `delay()` enqueue >= best peer's ({rate(best['noop'][0])}/s)",
            rate(single) + err("noop"),
            verdict(single >= best["noop"][0], single * best["noop"][0]),  # nan: no peer
        ]
    )
    for scenario, what in (
        ("submit_many", f"`submit_many` of {by[('cytask', 'submit_many')].tasks:,}"),
        ("producers", "8 producer threads, single `delay()`"),
    ):
        v = med("cytask", scenario, "rate")
        goals.append(
            [
                f"{what} >= {GOAL_PRODUCE // 1000}k/s",
                rate(v) + err(scenario),
                verdict(v >= GOAL_PRODUCE, v),
            ]
        )
    v = med("cytask", "noop", "process")
    goals.append(
        [
            f"processed, one worker process, no-op >= {GOAL_NOOP // 1000}k/s",
            rate(v) + err("noop"),
            verdict(v >= GOAL_NOOP, v),
        ]
    )
    v = med("cytask", "sleep", "process")
    goals.append(
        [
            f"processed, 10 ms sleeps at 200 >= {GOAL_SLEEP // 1000}k/s",
            rate(v) + err("sleep"),
            verdict(v >= GOAL_SLEEP, v),
        ]
    )
    for scenario, what, conc in (
        ("bulk", "no-ops", CONCURRENCY),
        ("bulk-sleep", "10 ms sleeps", SLEEP_CONCURRENCY),
    ):
        bk = by.get(("cytask", scenario))
        if bk is None:
            continue
        detail = (
            f"{rate(bk.median('process'))}/s; the worker's start alone (empty store, to its "
            f"exit): {bk.median('start_s') * 1e3:.0f} ms"
            if bk.results
            else f"n/a{err(scenario)}"
        )
        goals.append(
            [
                f"(for reference) processed, one worker process, {bk.tasks:,} {what} at "
                f"{conc} (`submit_many`), start included",
                detail,
                "",
            ]
        )
    sc = by.get(("cytask", "scale"))
    if sc is not None:
        one, two = sc.median("procs1"), sc.median("procs2")
        if sc.results:
            rounds = ", ".join(ratio(r["procs2"], r["procs1"]) for r in sc.results)
            detail = (
                f"{ratio(two, one)} (1 process {rate(one)}/s = {1e3 / one:.1f} ms a task, "
                f"2 processes {rate(two)}/s; rounds: {rounds})"
            )
            partial = [r for r in sc.results if min(r["done1"], r["done2"]) < sc.tasks]
            if partial:
                detail += (
                    f"; {len(partial)} of {len(sc.results)} round(s) timed on the tasks done "
                    f"within 4x the compiled time + 10 s (e.g. {partial[0]['done1']} by 1 "
                    f"process, {partial[0]['done2']} by 2, of {sc.tasks})"
                )
        else:
            detail = f"n/a{err('scale')}"
        result = verdict(two / one >= GOAL_SCALE, two / one)
        if one == one and 1e3 / one > 3 * CPU_TASK_MS:  # not the compiled speed
            result = "FAIL (tasks ran at Python speed)"
        goals.append(
            [
                f"two worker processes vs one, compiled ~{CPU_TASK_MS:g} ms tasks "
                f"(1 worker thread each) >= {GOAL_SCALE}x",
                detail,
                result,
            ]
        )
    wk = by.get(("cytask", "wake"))
    if wk is not None:
        res = [x for r in wk.results for x in r["result_ms"]]
        sta = [x for r in wk.results for x in r["start_ms"]]
        p50 = statistics.median(res) if res else float("nan")
        detail = (
            f"p50 {p50:.2f} ms, p99 {pct(res, 0.99):.2f} ms (to start: p50 "
            f"{statistics.median(sta):.2f}, p99 {pct(sta, 0.99):.2f})"
            if res
            else f"n/a{err('wake')}"
        )
        goals.append(
            [
                f"cross-process wake, idle worker, submit to result p50 <= {GOAL_WAKE_MS:g} ms",
                detail,
                verdict(p50 <= GOAL_WAKE_MS, p50),
            ]
        )
    out += ["", md_table(["goal (issue 10)", "cytask", "result"], goals)]
    return "\n".join(out)


def header(url: str, server: str, vers: dict[str, dict[str, str]], rounds: int) -> str:
    def fmt(v: dict[str, str]) -> str:
        return ", ".join(f"{k} {x}" for k, x in v.items())

    return (
        f"{server} on {url} (no persistence); Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n"
        f"cytask's interpreter: {fmt(vers.get('cytask', {}))}\n"
        f"peers' interpreter: {fmt(vers.get('peers', {}))}\n"
        f"medians of {rounds} round(s), interleaved, one subprocess per run; every system "
        f"stores results in the same Redis"
    )


def show(key: str, value: Any) -> str:
    """One figure of a child's result, for the progress line."""
    if not isinstance(value, float):
        return "..."
    return f"{value:.3g}" if key.endswith(("_s", "_ms")) else rate(value)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round, 1,000 tasks")
    ap.add_argument("--rounds", type=int, help=f"rounds (median reported; {ROUNDS})")
    ap.add_argument("--tasks", type=int, help=f"tasks per run ({TASKS:,}; RQ: a tenth)")
    ap.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated ({','.join(SYSTEMS)})"
    )
    ap.add_argument("--peers-venv", type=Path, default=PEERS_VENV, help=f"({PEERS_VENV})")
    ap.add_argument("--redis-server", default="redis-server", help="the server binary")
    ap.add_argument("--child", nargs=2, metavar=("SYSTEM", "SCENARIO"), help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, default=CONCURRENCY, help=argparse.SUPPRESS)
    ap.add_argument("--redis-url", help=argparse.SUPPRESS)
    ap.add_argument("--versions", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        ap.error(f"Expected --systems from {','.join(SYSTEMS)}, got {','.join(bad)}")
    if args.rounds is not None and args.rounds < 1:
        ap.error(f"Expected --rounds >= 1, got {args.rounds}")
    if args.tasks is not None and args.tasks < 8:
        ap.error(f"Expected --tasks >= 8, got {args.tasks}")
    if args.versions:
        versions()
        return 0
    if args.child:
        child(args.child[0], args.child[1], args.tasks or TASKS, args.concurrency, args.redis_url)
        return 0
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    n = args.tasks or (1_000 if args.quick else TASKS)
    pythons = {"cytask": sys.executable}
    if any(s != "cytask" for s in systems):
        pythons["peers"] = peers_python(args.peers_venv.resolve())
    vers = {
        k: json.loads(
            subprocess.run(
                [py, __file__, "--versions"], capture_output=True, text=True, check=True
            ).stdout
        )
        for k, py in pythons.items()
    }
    if "redis" not in vers["cytask"]:
        log("cytask's interpreter has no redis-py: pip install -e '.[redis]' (its rows fail)")
    rows = plan(systems, n, args.quick)
    # SIGTERM ends the run through the finally blocks (redis-server, the current child)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    with redis_server(args.redis_server) as (url, server):
        print(header(url, server, vers, rounds), flush=True)
        for rnd in range(rounds):
            for row in rows:
                if row.error:
                    continue
                py = pythons["cytask" if row.system == "cytask" else "peers"]
                t0 = time.perf_counter()
                run_child(py, row, conc_of(row), url)
                got = row.error or ", ".join(
                    f"{k} {show(k, v)}" for k, v in row.results[-1].items()
                )
                log(
                    f"  round {rnd + 1}: {row.scenario} / {row.label}: {got} "
                    f"({time.perf_counter() - t0:.1f} s)"
                )
    log(f"  total {time.perf_counter() - started:.0f} s")
    print()
    print(report(rows))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
