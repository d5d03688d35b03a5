"""Endpoints that enqueue a no-op task and answer with an id, under wrk, side by side.

    python benchmarks/http/run.py [--duration S] [--rounds N] [--threads T] [--connections C]

Needs ``wrk`` (Debian: ``apt-get install wrk``) and ``pip install 'cytask[web]'``
(uvicorn, starlette, flask, django + django-tasks, gunicorn).  For each framework one
server process (same server, same worker count for every row of that framework):

* Starlette on uvicorn: ``/ceiling`` (enqueues nothing), ``/cytask`` (the engine of
  ``cytask.contrib.asgi.lifespan``), ``/cytask-plain`` (an ``Engine()`` with its own
  defaults), ``/cytask-native`` (a compiled no-op: no GIL on the worker),
  ``/threadpool`` (``ThreadPoolExecutor(1).submit``, the plain baseline),
  ``/background`` (Starlette's ``BackgroundTasks``), ``/cytask-sqlite`` (an engine with an
  SQLite store: each task committed before the answer), ``/celery`` (Celery's ``.delay()``
  on Redis, when ``celery[redis]`` and ``redis-server`` are installed: the script starts a
  private redis-server and a Celery worker with 8 threads);
* the same app on granian (when installed): ``/ceiling``, ``/cytask``, ``/cytask-sqlite``,
  ``/background``;
* Flask on gunicorn (1 process, gthread): ``/ceiling``, ``/cytask`` (``cytask.contrib.flask``);
* Django on gunicorn (1 process, gthread): ``/ceiling``, ``/cytask`` (a Django Task on
  ``cytask.contrib.django.CytaskBackend``).

Each round runs every endpoint once, interleaved, and medians are reported.  After each
wrk run the script waits for the server to say that every task it accepted has run
(``/count``) and reports any that did not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _report import md_table  # noqa: E402

BIN = Path(sys.executable).parent


@dataclass
class Framework:
    name: str
    argv: list[str]
    ready: str
    endpoints: list[str]
    counted: dict[str, str] = field(default_factory=dict)  # endpoint -> /count key


FRAMEWORKS = [
    Framework(
        "Starlette on uvicorn",
        [
            str(BIN / "uvicorn"),
            "--app-dir",
            str(HERE),
            "starlette_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        r"Uvicorn running on http://127\.0\.0\.1:(\d+)",
        ["/ceiling", "/cytask", "/cytask-plain", "/cytask-native", "/threadpool", "/background"],
        {
            "/cytask": "cytask",
            "/cytask-plain": "cytask-plain",
            "/cytask-native": "cytask-native",
            "/threadpool": "threadpool",
            "/background": "background",
        },
    ),
    Framework(
        "Flask on gunicorn",
        [
            str(BIN / "gunicorn"),
            "--chdir",
            str(HERE),
            "-b",
            "127.0.0.1:0",
            "-w",
            "1",
            "--threads",
            "8",
            "flask_app:create_app()",
        ],
        r"Listening at: http://127\.0\.0\.1:(\d+)",
        ["/ceiling", "/cytask"],
        {"/cytask": "cytask"},
    ),
    Framework(
        "Django on gunicorn",
        [
            str(BIN / "gunicorn"),
            "--chdir",
            str(HERE),
            "-b",
            "127.0.0.1:0",
            "-w",
            "1",
            "--threads",
            "8",
            "django_app:application",
        ],
        r"Listening at: http://127\.0\.0\.1:(\d+)",
        ["/ceiling", "/cytask"],
        {"/cytask": "cytask"},
    ),
]

# uvicorn prints to stderr at warning level only; ask it to say where it listens
FRAMEWORKS[0].argv[-1] = "info"
FRAMEWORKS[0].endpoints += ["/await-only", "/cytask-sqlite"]
FRAMEWORKS[0].counted["/cytask-sqlite"] = "cytask-sqlite"
GRANIAN_ARGS = ["--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}", "--workers",
                "1", "--no-ws", "--working-dir", str(HERE), "starlette_app:app"]  # fmt: skip
if shutil.which("granian", path=str(BIN)) or shutil.which("granian"):
    FRAMEWORKS.insert(
        1,
        Framework(
            "Starlette on granian",
            [shutil.which("granian", path=str(BIN)) or "granian", *GRANIAN_ARGS],
            r"Listening at: http://127\.0\.0\.1:(\d+)",
            ["/ceiling", "/cytask", "/await-only", "/cytask-sqlite", "/background"],
            {"/cytask": "cytask", "/cytask-sqlite": "cytask-sqlite", "/background": "background"},
        ),
    )

#: what every server gets in its environment (the SQLite store's folder, Celery's broker)
SERVER_ENV: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_celery(folder: str) -> list[subprocess.Popen[bytes]]:
    """A private redis-server and a Celery worker (8 threads); [] if either is missing."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        print("celery[redis] is not installed: no /celery row", file=sys.stderr)
        return []
    server = shutil.which("redis-server") or shutil.which("valkey-server")
    if server is None:
        print("redis-server is not installed: no /celery row", file=sys.stderr)
        return []
    port = free_port()
    redis_argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--dir", folder]  # fmt: skip
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen(redis_argv, **quiet)]
    broker = f"redis://127.0.0.1:{port}/0"
    import redis as redis_py

    deadline = time.monotonic() + 20
    while True:
        try:
            redis_py.Redis.from_url(broker).ping()
            break
        except redis_py.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    SERVER_ENV["BENCH_CELERY_BROKER"] = broker
    celery_argv = [str(BIN / "celery"), "-A", "celery_tasks", "worker", "--pool", "threads",
                   "-c", "8", "--loglevel", "warning", "--without-gossip", "--without-mingle",
                   "--without-heartbeat"]  # fmt: skip
    procs.append(subprocess.Popen(celery_argv, cwd=HERE, env={**os.environ, **SERVER_ENV}, **quiet))
    FRAMEWORKS[0].endpoints.append("/celery")
    FRAMEWORKS[0].counted["/celery"] = "celery"
    return procs


def start(fw: Framework) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [arg.replace("{port}", str(free_port())) for arg in fw.argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **SERVER_ENV, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(fw.ready, line)
        if m:
            base = f"http://127.0.0.1:{m.group(1)}"
            while time.monotonic() < deadline:  # granian says so before its worker listens
                try:
                    urllib.request.urlopen(base + "/ceiling", timeout=5).close()
                    return proc, base
                except OSError:
                    time.sleep(0.05)
            break
    proc.kill()
    raise RuntimeError(f"{fw.name} did not start:\n{''.join(seen)}")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM if "gunicorn" in str(proc.args) else signal.SIGINT)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


TICK = os.sysconf("SC_CLK_TCK")


def serving_pid(proc: subprocess.Popen[str]) -> int:
    """The process that serves: uvicorn itself, or gunicorn's (one) worker."""
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except OSError:
        children = []
    return int(children[0]) if children else proc.pid


def cpu_by_thread(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def cpu_split(pid: int, before: dict[int, float], after: dict[int, float]) -> tuple[float, float]:
    """CPU seconds spent meanwhile by the serving thread (the main one) and by the others."""
    main = after.get(pid, 0.0) - before.get(pid, 0.0)
    others = sum(v - before.get(t, 0.0) for t, v in after.items() if t != pid)
    return main, others


def get_json(url: str) -> dict[str, dict[str, int]]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        out: dict[str, dict[str, int]] = json.loads(resp.read())
        return out


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(f"cannot read wrk's latency {text!r}")
    return float(m[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m[2]]


def wrk(url: str, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if len(lat) != 2 or rps is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "p50": to_ms(lat["50"]),
        "p99": to_ms(lat["99"]),
        "rps": float(rps[1]),
        "non2xx": float(bad[1]) if bad else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def settle(base: str, key: str, timeout: float = 60.0) -> tuple[int, int]:
    """Wait until every accepted task of `key` ran; (accepted, ran)."""
    deadline = time.monotonic() + timeout
    while True:
        c = get_json(base + "/count")[key]
        if c["ran"] >= c["accepted"] or time.monotonic() > deadline:
            return c["accepted"], c["ran"]
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per endpoint")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=100, help="wrk connections")
    parser.add_argument("--only", help="run only the frameworks whose name contains this")
    parser.add_argument("--no-celery", action="store_true", help="no /celery row")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory() as folder:
        helpers = start_celery(folder) if not args.no_celery else []
        try:
            return measure(args, folder)
        finally:
            for proc in reversed(helpers):
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def start_store_worker(folder: str, n: int) -> subprocess.Popen[bytes]:
    """A fresh SQLite store for the next server, and a ``cytask worker`` consuming it."""
    url = SERVER_ENV["BENCH_STORE_URL"] = f"sqlite:///{folder}/http-{n}.db"
    argv = [sys.executable, "-m", "cytask", "worker", "http_tasks", "--store", url,
            "--workers", "1", "--quiet"]  # fmt: skip
    return subprocess.Popen(argv, cwd=HERE)


def measure(args: argparse.Namespace, folder: str) -> int:
    frameworks = [f for f in FRAMEWORKS if not args.only or args.only.lower() in f.name.lower()]
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    starts = 0
    for r in range(args.rounds):
        for fw in frameworks:
            starts += 1
            worker = start_store_worker(folder, starts)
            try:
                proc, base = start(fw)
            except BaseException:
                worker.terminate()
                raise
            try:
                time.sleep(0.5)  # gunicorn forks its worker after it listens
                pid = serving_pid(proc)
                wrk(base + "/ceiling", argparse.Namespace(**{**vars(args), "duration": 1}))
                for ep in fw.endpoints:
                    cpu0 = cpu_by_thread(pid)
                    got = wrk(base + ep, args)
                    main_s, other_s = cpu_split(pid, cpu0, cpu_by_thread(pid))
                    requests = got["rps"] * args.duration
                    got["main_us"] = 1e6 * main_s / requests
                    got["other_us"] = 1e6 * other_s / requests
                    runs.setdefault((fw.name, ep), []).append(got)
                    if ep in fw.counted:  # a fresh server each round, a counter per endpoint
                        accepted, ran = settle(base, fw.counted[ep])
                        got["accepted"], got["ran"] = accepted, ran
                    print(f"round {r + 1}: {fw.name} {ep}: {got}", file=sys.stderr, flush=True)
            finally:
                stop(proc)
                worker.terminate()
                worker.wait(60)
    print(
        f"# wrk -t{args.threads} -c{args.connections} -d{args.duration}s per endpoint, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, medians of "
        f"{args.rounds} round(s); one server process per framework\n"
    )
    rows = []
    for fw in frameworks:
        ceil = runs[(fw.name, "/ceiling")]
        c_rps = statistics.median(x["rps"] for x in ceil)
        c_p99 = statistics.median(x["p99"] for x in ceil)
        for ep in fw.endpoints:
            xs = runs[(fw.name, ep)]
            rps = statistics.median(x["rps"] for x in xs)
            p50 = statistics.median(x["p50"] for x in xs)
            p99 = statistics.median(x["p99"] for x in xs)
            main_us = statistics.median(x["main_us"] for x in xs)
            other_us = statistics.median(x["other_us"] for x in xs)
            if ep in fw.counted:
                accepted = sum(int(x["accepted"]) for x in xs)
                ran = sum(int(x["ran"]) for x in xs)
                count = f"{ran:,}/{accepted:,}" + (" LOST" if ran < accepted else "")
            else:
                count = "-"
            rows.append(
                [
                    fw.name,
                    ep,
                    f"{rps:,.0f}",
                    f"{100 * rps / c_rps:.0f}%",
                    f"{p50:.2f}",
                    f"{p99:.2f}",
                    f"{p99 / c_p99:.2f}x",
                    f"{main_us:.0f} + {other_us:.0f}",
                    count,
                ]
            )
    print(
        md_table(
            [
                "framework",
                "endpoint",
                "requests/s",
                "vs ceiling",
                "p50 ms",
                "p99 ms",
                "p99 vs ceiling",
                "server CPU us/req (main + other threads)",
                "tasks ran/accepted",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
