"""Django settings of the Django tests: the test process configures them in conftest.py
(before any test module is imported: ``@task`` validates each task against its backend
at import), the processes the tests start (``cytask worker``, readers) name this module
in DJANGO_SETTINGS_MODULE.  The stores live in CYTASK_DJANGO_STORES, a folder the test
session makes and its subprocesses inherit."""

from __future__ import annotations

import os

BACKEND = "cytask.contrib.django.CytaskBackend"
STORES = os.environ["CYTASK_DJANGO_STORES"]
#: tasks a `cytask worker` runs: this alias only enqueues (WORKERS 0)
WORKER_STORE = f"sqlite:///{STORES}/worker.db"
#: tasks the enqueuing process runs itself, through its store
LOCAL_STORE = f"sqlite:///{STORES}/local.db"

USE_TZ = True
INSTALLED_APPS: list[str] = []
SECRET_KEY = "cytask-tests"
TASKS = {
    "default": {
        "BACKEND": BACKEND,
        "QUEUES": ["default", "queue-1"],
        "OPTIONS": {"WORKERS": 2},
    },
    "single": {"BACKEND": BACKEND, "OPTIONS": {"WORKERS": 1}},
    "doomed": {"BACKEND": BACKEND, "OPTIONS": {"WORKERS": 1}},
    "stored": {"BACKEND": BACKEND, "OPTIONS": {"STORE": WORKER_STORE, "WORKERS": 0}},
    "stored-local": {"BACKEND": BACKEND, "OPTIONS": {"STORE": LOCAL_STORE, "WORKERS": 2}},
}
if os.environ.get("CYTASK_DJANGO_REDIS"):  # a Redis store (test_django_store.py sets it)
    TASKS["stored-redis"] = {
        "BACKEND": BACKEND,
        "OPTIONS": {"STORE": os.environ["CYTASK_DJANGO_REDIS"], "WORKERS": 0},
    }
# the worker's log lines, on its stderr, for the tests to read
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        name: {"handlers": ["stderr"], "level": "DEBUG"}
        for name in ("django_tasks", "django.tasks")
    },
}
