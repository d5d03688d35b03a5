"""Django's settings for tests/contrib/test_django.py: configured before any test module
is imported, since ``@task`` validates each task against its backend at import."""

from __future__ import annotations

BACKEND = "cytask.contrib.django.CytaskBackend"

try:
    import django
    from django.conf import settings
except ImportError:  # pragma: no cover - Django is an optional extra
    pass
else:
    if not settings.configured:
        settings.configure(
            USE_TZ=True,
            INSTALLED_APPS=[],
            TASKS={
                "default": {
                    "BACKEND": BACKEND,
                    "QUEUES": ["default", "queue-1"],
                    "OPTIONS": {"WORKERS": 2},
                },
                "single": {"BACKEND": BACKEND, "OPTIONS": {"WORKERS": 1}},
                "doomed": {"BACKEND": BACKEND, "OPTIONS": {"WORKERS": 1}},
            },
        )
        django.setup()
