"""An HTTP endpoint's latency while a pool in the same process chews CPU-bound Python
tasks: cytask beside ThreadPoolExecutor, in one run.

    python benchmarks/http_gil/run.py [--duration S] [--rounds N] [--task-us US]

Needs ``uvicorn`` and ``starlette`` (``pip install uvicorn starlette``) and ``wrk``
(Debian: ``apt-get install wrk``).  Each scenario starts ``uvicorn app:app`` (one
process, see app.py), whose lifespan starts a pool and a thread that keeps it busy
with busy-loop tasks; wrk then drives ``GET /ping`` with the reference's settings
(4 threads, 100 connections; ``--duration`` seconds, 10 in the reference).
Scenarios, interleaved per round: no pool (the baseline), ThreadPoolExecutor,
cytask as configured by default (``gil_share=1.0``: plain interpreter switching)
and cytask with polite workers (``gil_share=0.2``, as the README advises web apps).
The table shows the median over rounds of p50, p99 and requests/s, and p99 over
the baseline's.  Goal (issue 12): cytask's
p99 within 1.2x of the baseline (with gil_share=0.2).  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _report import md_table

HERE = Path(__file__).resolve().parent
SCENARIOS = {
    "no pool": {"GIL_POOL": "none"},
    "ThreadPoolExecutor": {"GIL_POOL": "executor"},
    "cytask (default, gil_share=1.0)": {"GIL_POOL": "cytask", "GIL_SHARE": "1.0"},
    "cytask gil_share=0.2": {"GIL_POOL": "cytask", "GIL_SHARE": "0.2"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not come up in {timeout} s")


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m[2]]


def run_scenario(env_extra: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, **env_extra, "GIL_WORKERS": str(args.workers)}
    env["GIL_TASK_US"] = str(args.task_us)
    cmd = [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], cwd=HERE, env=env)
    try:
        url = f"http://127.0.0.1:{port}/ping"
        wait_up(url, proc)
        time.sleep(0.5)  # the pool is busy by now
        out = subprocess.run(
            ["wrk", "-t4", "-c100", f"-d{args.duration}s", "--latency", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if len(lat) != 2 or rps is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return {"p50": to_ms(lat["50"]), "p99": to_ms(lat["99"]), "rps": float(rps[1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--task-us", type=float, default=200.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SCENARIOS}
    for r in range(args.rounds):
        for name, env in SCENARIOS.items():
            got = run_scenario(env, args)
            results[name].append(got)
            print(f"round {r + 1}: {name}: {got}", file=sys.stderr, flush=True)
    med = {
        name: {k: statistics.median(x[k] for x in runs) for k in ("p50", "p99", "rps")}
        for name, runs in results.items()
    }
    base = med["no pool"]["p99"]
    print(
        f"# /ping under wrk -t4 -c100 -d{args.duration}s while {args.workers} worker(s) chew "
        f"{args.task_us:g} us Python tasks ({os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}, medians of {args.rounds} rounds)\n"
    )
    rows = [
        [
            name,
            f"{m['p50']:.2f}",
            f"{m['p99']:.2f}",
            f"{m['rps']:,.0f}",
            f"{m['p99'] / base:.2f}x",
        ]
        for name, m in med.items()
    ]
    print(md_table(["pool", "p50 ms", "p99 ms", "requests/s", "p99 vs no pool"], rows))
    ratio = med["cytask gil_share=0.2"]["p99"] / base
    verdict = "PASS" if ratio <= 1.2 else "FAIL"
    print(f"\ncytask (gil_share=0.2) p99 {ratio:.2f}x the baseline (goal <= 1.2x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
