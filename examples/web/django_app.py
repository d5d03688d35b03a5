"""A one-file Django project whose views enqueue Django Tasks onto cytask.

    pip install 'cytask[django]'     # Django, and the django-tasks backport before Django 6
    python examples/web/django_app.py runserver --noreload 8000
    # or:  gunicorn --chdir examples/web -w 1 --threads 8 django_app:application

    curl -X POST 'localhost:8000/tasks?n=7'               # {"id": "..."}: answered at once
    curl -X POST 'localhost:8000/tasks?n=7&priority=60'   # 50..100 run before everything else
    curl -X POST 'localhost:8000/tasks?n=7&delay=5'       # run_after: five seconds from now
    curl localhost:8000/tasks/<id>                        # {"status": "SUCCESSFUL", "result": 49}

TASKS points the "default" backend at ``cytask.contrib.django.CytaskBackend``; the task
below is an ordinary ``@task`` function.  Stopping the server (Ctrl-C, SIGTERM to a
gunicorn worker) drains the engine first, for at most DRAIN_TIMEOUT seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="example only",
    USE_TZ=True,
    TASKS={
        "default": {
            "BACKEND": "cytask.contrib.django.CytaskBackend",
            "OPTIONS": {
                "WORKERS": 4,
                "DRAIN_TIMEOUT": float(os.environ.get("DRAIN_TIMEOUT", "30")),
            },
        }
    },
)
django.setup()
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

try:  # Django >= 6
    from django.tasks import TaskResultStatus, default_task_backend, task
    from django.tasks.exceptions import TaskResultDoesNotExist
except ImportError:  # the django-tasks backport
    from django_tasks import TaskResultStatus, default_task_backend, task  # type: ignore[assignment]
    from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[assignment]

TASK_SECONDS = float(os.environ.get("TASK_SECONDS", "0.05"))


@task
def square(n: int) -> int:
    """Stands in for real work: a slow call to another service."""
    time.sleep(TASK_SECONDS)
    return n * n


@csrf_exempt
def enqueue(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    t = square.using(priority=int(request.GET.get("priority", "0")))
    if "delay" in request.GET:
        after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=float(request.GET["delay"]))
        t = t.using(run_after=after)
    result = t.enqueue(int(request.GET.get("n", "0")))
    return JsonResponse({"id": result.id, "status": result.status})


def show(request: HttpRequest, result_id: str) -> JsonResponse:
    try:
        result = default_task_backend.get_result(result_id)
    except TaskResultDoesNotExist:
        return JsonResponse({"error": "unknown task id"}, status=404)
    body: dict[str, Any] = {"id": result.id, "status": result.status, "pid": os.getpid()}
    if result.status == TaskResultStatus.SUCCESSFUL:
        body["result"] = result.return_value
    elif result.status == TaskResultStatus.FAILED:
        body["errors"] = [e.exception_class_path for e in result.errors]
    return JsonResponse(body)


def ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pong": True})


urlpatterns = [
    path("tasks", enqueue),
    path("tasks/<str:result_id>", show),
    path("ping", ping),
]

application = get_wsgi_application()

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
