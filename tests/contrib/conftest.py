"""Django's settings for tests/contrib/test_django.py (``djsettings``): configured before
any test module is imported, since ``@task`` validates each task against its backend at
import."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

try:
    import django
    from django.conf import settings
except ImportError:  # pragma: no cover - Django is an optional extra
    pass
else:
    if not settings.configured:
        if "CYTASK_DJANGO_STORES" not in os.environ:  # inherited by the tests' subprocesses
            stores = tempfile.mkdtemp(prefix="cytask-django-")
            atexit.register(shutil.rmtree, stores, ignore_errors=True)
            os.environ["CYTASK_DJANGO_STORES"] = stores
        from . import djsettings

        settings.configure(
            USE_TZ=djsettings.USE_TZ,
            INSTALLED_APPS=djsettings.INSTALLED_APPS,
            TASKS=djsettings.TASKS,
        )
        django.setup()
