"""``import cytask`` never imports a web framework (the integrations are optional extras)."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = [
    "starlette",
    "fastapi",
    "uvicorn",
    "flask",
    "werkzeug",
    "django",
    "django_tasks",
    "asgiref",
    "gunicorn",
    "cytask.contrib.asgi",
    "cytask.contrib.flask",
    "cytask.contrib.django",
]


def test_import_cytask_imports_no_framework() -> None:
    code = (
        "import sys, cytask, cytask.contrib\n"
        "e = cytask.Engine(workers=1); e.submit(int).result(timeout=10); e.shutdown()\n"
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
