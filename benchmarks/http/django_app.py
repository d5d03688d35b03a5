"""Django views of benchmarks/http/run.py (served by gunicorn, one process).

/ceiling enqueues nothing; /cytask enqueues a no-op Django task on
``cytask.contrib.django.CytaskBackend``; /count says how many were accepted and ran.
"""

from __future__ import annotations

import itertools
import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="benchmark only",
    USE_TZ=True,
    MIDDLEWARE=[],
    TASKS={
        "default": {
            "BACKEND": "cytask.contrib.django.CytaskBackend",
            "OPTIONS": {"WORKERS": int(os.environ.get("BENCH_WORKERS", "1"))},
        }
    },
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task  # type: ignore[no-redef]

ids = itertools.count(1)
accepted = {"cytask": itertools.count()}
ran = {"cytask": itertools.count()}


def value(counter: itertools.count[int]) -> int:
    return int(repr(counter)[6:-1])


@task
def noop() -> None:
    next(ran["cytask"])


def ceiling(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"id": next(ids)})


def with_cytask(request: HttpRequest) -> JsonResponse:
    next(accepted["cytask"])
    return JsonResponse({"id": noop.enqueue().id})


def count(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {k: {"accepted": value(accepted[k]), "ran": value(ran[k])} for k in accepted}
    )


urlpatterns = [path("ceiling", ceiling), path("cytask", with_cytask), path("count", count)]
application = get_wsgi_application()
