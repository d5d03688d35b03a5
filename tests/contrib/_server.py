"""Run a web server the way a user would (a subprocess), on a free port it picks itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "examples" / "web"
BIN = Path(sys.executable).parent


class Server:
    """A server process: its output collected on a thread, its URL read from it.

    `ready` is a regex with one group, the port the server printed it listens on
    (servers started with port 0 pick a free one, so tests never race for a port).
    """

    def __init__(
        self,
        argv: Sequence[str],
        ready: str,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        timeout: float = 30.0,
    ) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        m = self.wait_for(ready, timeout)
        self.url = f"http://127.0.0.1:{m.group(1)}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    @property
    def output(self) -> str:
        with self._seen:
            return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        with self._seen:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output}")
                self._seen.wait(min(left, 0.5))

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> tuple[int, float]:
        """Send `sig`; return the exit status and the seconds it took to exit."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"server ignored {sig!r} for {timeout} s:\n{self.output}"
            ) from None
        self._reader.join(timeout=5)
        return rc, time.monotonic() - start

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def uvicorn(app: str, env: dict[str, str] | None = None, app_dir: Path = WEB) -> Server:
    return Server(
        [
            str(BIN / "uvicorn"),
            "--app-dir",
            str(app_dir),
            app,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-access-log",
        ],
        ready=r"Uvicorn running on http://127\.0\.0\.1:(\d+)",
        env=env,
    )
