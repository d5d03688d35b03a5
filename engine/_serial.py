"""What a durable task is made of on disk: its id, its name, its encoded arguments.

JSON by default: ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``, ``tuple``
(read back as a list) and ``dict`` with ``str`` keys, nested freely.  Anything else
raises ``TypeError`` at submit, naming the argument and its type.  ``pickle`` only
when the engine is created with ``serializer="pickle"``: unpickling runs code, so
it trusts whoever can write the store.  A worker refuses pickled tasks unless it
was also started with ``serializer="pickle"``.

A task is stored by name: ``@task``'s ``name`` (default ``module.qualname``), or
``module.qualname`` of a plain function.  A worker finds it again among the
``@task`` objects of its imported modules, or by importing the module.  Lambdas,
closures and local functions cannot be found by another process: refused at submit.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import json
import os
import pickle
import sys
import time
import traceback
import types
from collections.abc import Callable
from typing import Any

from cytask._errors import CytaskError

__all__ = [
    "CODECS",
    "TaskFailed",
    "WorkerLost",
    "decode_args",
    "decode_error",
    "decode_result",
    "encode_args",
    "encode_error",
    "encode_result",
    "name_for",
    "new_task_id",
    "resolve",
]

CODECS = ("json", "pickle")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads


class TaskFailed(CytaskError):
    """A durable task failed with an exception that could not be rebuilt here.

    ``exception_type`` is its class path (``"myapp.errors.PaymentDeclined"``),
    ``exception_message`` its message, ``remote_traceback`` the worker's traceback.
    Built-in exceptions (``ValueError``, ``KeyError``, ...) are re-raised as themselves.
    """

    def __init__(self, exception_type: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{exception_type}: {message}")
        self.exception_type = exception_type
        self.exception_message = message
        self.remote_traceback = remote_traceback


class WorkerLost(TaskFailed):
    """The task's worker died while running it (its lease expired) too many times."""


def new_task_id() -> str:
    """32 hex digits: 48 bits of milliseconds (ids sort by time), 80 random bits."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


# -- names --------------------------------------------------------------------------

_registry: dict[str, Callable[..., Any]] = {}


def name_for(fn: Callable[..., Any], task_name: str | None = None) -> str:
    """The stored name of a task or plain function; TypeError if no worker could find it."""
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    what = f"{task_name or qualname or fn!r}"
    if inspect.ismethod(fn):
        raise TypeError(
            f"Expected a module-level function for fn with a store, got the bound method "
            f"{what}: its object cannot be stored; use a module-level function taking the "
            f"object's data as arguments"
        )
    if not isinstance(qualname, str) or not isinstance(module, str):
        raise TypeError(
            f"Expected a module-level function for fn with a store, got "
            f"{type(fn).__name__} {fn!r}: a worker finds a task by module and name"
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        kind = "a lambda" if "<lambda>" in qualname else "a local function or closure"
        raise TypeError(
            f"Expected a module-level function for fn with a store, got {kind} "
            f"({module}.{qualname}): a worker process cannot import it; define it at module "
            f"level (the memory store runs it fine)"
        )
    name = task_name or f"{module}.{qualname}"
    _registry.setdefault(name, fn)
    return name


def register(name: str, fn: Callable[..., Any]) -> None:
    _registry[name] = fn


def resolve(name: str) -> Callable[..., Any] | None:
    """The task (or function) stored under ``name`` in this process, or None."""
    fn = _registry.get(name)
    if fn is not None:
        return fn
    from cytask._task import Task

    for mod in list(sys.modules.values()):  # @task objects of imported modules
        # type(), not isinstance(): a lazy proxy (Django's admin.site, say) answers
        # isinstance through its __class__, which imports and configures things
        namespace = mod.__dict__ if type(mod) is types.ModuleType else {}
        for obj in list(namespace.values()):
            if issubclass(type(obj), Task):
                _registry.setdefault(obj.name, obj)
    fn = _registry.get(name)
    if fn is not None:
        return fn
    module, _, qualname = name.rpartition(".")  # a plain module-level function
    while module:
        try:
            found: Any = importlib.import_module(module)
        except ImportError:
            module, _, head = module.rpartition(".")
            qualname = f"{head}.{qualname}"
            continue
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if callable(found):
            _registry[name] = found
            return found  # type: ignore[no-any-return]
        return None
    return None


# -- arguments and results -------------------------------------------------------------


def encode_args(
    codec: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None, fn: Callable[..., Any]
) -> str | bytes:
    if codec == "json":
        try:
            return _dumps([args, kwargs or {}])
        except (TypeError, ValueError):
            _name_bad_argument(args, kwargs or {}, fn)
            raise
    return pickle.dumps((args, kwargs or {}), protocol=pickle.HIGHEST_PROTOCOL)


def _name_bad_argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], fn: Callable[..., Any]
) -> None:
    try:
        params = list(inspect.signature(getattr(fn, "fn", fn)).parameters.values())
    except (TypeError, ValueError):
        params = []
    items: list[tuple[str, Any]] = []
    for i, value in enumerate(args):
        p = params[i] if i < len(params) and params[i].kind <= 1 else None
        items.append((f"{p.name!r} (position {i})" if p else f"at position {i}", value))
    items += [(repr(k), v) for k, v in kwargs.items()]
    for where, value in items:
        try:
            _dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"Expected JSON-serializable arguments with the default serializer: argument "
                f"{where} of {getattr(fn, '__qualname__', fn)} is a {type(value).__name__} "
                f"({exc}); JSON takes None, bool, int, float, str, list, tuple and dict with str "
                f"keys. Pass plain data, or create the engine with serializer='pickle' (only if "
                f"you trust everyone who can write the store)"
            ) from None


def decode_args(codec: str, payload: str | bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if codec == "json":
        args, kwargs = _loads(payload)
        return tuple(args), kwargs
    assert isinstance(payload, bytes)
    args, kwargs = pickle.loads(payload)  # the user chose pickle
    return tuple(args), kwargs


def encode_result(codec: str, value: Any) -> str | bytes:
    """The stored result; TypeError naming the type if the codec cannot hold it."""
    if codec == "json":
        try:
            return _dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"Expected a JSON-serializable result with the default serializer, got a "
                f"{type(value).__name__} ({exc}); return plain data or use serializer='pickle'"
            ) from None
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def decode_result(codec: str, data: str | bytes | None) -> Any:
    if data is None:
        return None
    if codec == "json":
        return _loads(data)
    assert isinstance(data, bytes)
    return pickle.loads(data)  # the user chose pickle


def encode_error(exc: BaseException) -> str:
    cls = type(exc)
    tb = "".join(traceback.format_exception(exc))
    return _dumps(
        {"type": f"{cls.__module__}.{cls.__qualname__}", "message": str(exc), "traceback": tb}
    )


def decode_error(data: str | None) -> BaseException:
    """The stored error as an exception: a built-in one as itself, else ``TaskFailed``."""
    info = _loads(data) if data else {}
    type_path = str(info.get("type", "builtins.Exception"))
    message = str(info.get("message", ""))
    tb = str(info.get("traceback", ""))
    if type_path == "cytask.WorkerLost":
        return WorkerLost(type_path, message, tb)
    module, _, name = type_path.rpartition(".")
    if module == "builtins":
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                exc = cls(message)
            except Exception:
                pass
            else:
                if tb:
                    exc.add_note(f"Traceback in the worker:\n{tb}")
                return exc
    if type_path.startswith("cytask."):
        import cytask

        cls = getattr(cytask, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                return cls(message)
            except Exception:
                pass
    return TaskFailed(type_path, message, tb)
