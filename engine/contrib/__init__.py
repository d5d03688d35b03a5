"""Optional integrations with web frameworks, one module per framework.

``import cytask`` imports none of them, and none of them is imported here: each
module needs its framework installed (``pip install 'cytask[asgi]'``, ``[flask]``,
``[django]``).

* :mod:`cytask.contrib.asgi`: ``lifespan()`` for Starlette and FastAPI apps.
* :mod:`cytask.contrib.flask`: the ``Cytask`` Flask extension.
* :mod:`cytask.contrib.django`: ``CytaskBackend`` for Django's Tasks framework.
"""
