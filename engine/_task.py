"""``@task``: declare a function as a background task.

Calling the task runs the plain function inline; ``.delay()`` and
``.apply_async()`` submit it to an engine (the default one unless ``engine=``).
The decorator keeps the signature (``ParamSpec``), so a type checker flags
``add.delay(1, "x")`` for a function typed ``(int, int)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from cytask._core import TaskHandle, TaskOptions
from cytask._enums import Priority
from cytask._errors import InvalidTaskOptions
from cytask._validate import check_callable, check_duration, check_int, check_priority

if TYPE_CHECKING:
    import datetime as dt

    from cytask._engine import Engine

__all__ = ["Task", "task"]

P = ParamSpec("P")
R = TypeVar("R")

_VALID_OPTIONS = (
    "compile_to_c",
    "engine",
    "examples",
    "name",
    "priority",
    "retries",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "retry_on",
    "timeout",
)


class Task(Generic[P, R]):
    """A function declared with ``@task``: call it inline, or ``delay()`` it."""

    __cytask_task__ = True

    def __init__(
        self,
        fn: Callable[P, R],
        options: TaskOptions,
        engine: Engine | None,
        compile_to_c: bool | str,
        examples: Sequence[tuple[Any, ...]],
    ) -> None:
        self.fn = fn
        self.options = options
        self.engine = engine
        self.compile_to_c = compile_to_c
        self.examples = list(examples)
        import inspect  # here, not at module level: `import cytask` stays fast

        self.is_async = inspect.iscoroutinefunction(fn)
        self._compiled: Any = None  # a cytask.compiler.CompiledTask once compiled
        self._compile_future: Any = None  # its Future while compiling in the background
        self._warned = False  # CompileFallbackWarning emitted
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Task {self.options.name}>"

    @property
    def name(self) -> str:
        return str(self.options.name)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def _engine(self) -> Engine:
        if self.engine is not None:
            return self.engine
        from cytask._default import default_engine

        return default_engine()

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Submit with the task's default priority; returns its handle at once."""
        return self._engine()._submit_task(self, args, kwargs, self.options.priority, None)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """``delay`` for ``async def`` code (see ``Engine.asubmit``): with a store, the
        requests of one event loop turn share one commit, made off the loop's thread."""
        return await self._engine().asubmit(self, *args, **kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: Priority | None = None,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
    ) -> TaskHandle[R]:
        """Submit with per-call options: ``countdown`` seconds or an ``eta`` datetime."""
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"Expected a tuple or list for args, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"Expected a dict or None for kwargs, got {type(kwargs).__name__}")
        prio = self.options.priority if priority is None else int(check_priority(priority))
        delay = _delay_from(countdown, eta)
        return self._engine()._submit_task(self, tuple(args), kwargs or {}, prio, delay)

    # the compile stage (cytask.compiler) fills these in lazily
    @property
    def backend(self) -> str:
        return "python" if self._compiled is None else str(self._compiled.backend)

    @property
    def fallback_reason(self) -> str | None:
        if self._compiled is None:
            return "not compiled (compile_to_c=False)" if not self.compile_to_c else None
        return self._compiled.fallback_reason  # type: ignore[no-any-return]


def _delay_from(countdown: float | None, eta: dt.datetime | None) -> float | None:
    if countdown is not None and eta is not None:
        raise InvalidTaskOptions("Expected countdown or eta, not both")
    if countdown is not None:
        return check_duration(countdown, "countdown")
    if eta is not None:
        import datetime as dt  # on the first eta=, not at `import cytask`

        if not isinstance(eta, dt.datetime):
            raise TypeError(f"Expected a datetime for eta, got {type(eta).__name__}")
        now = dt.datetime.now(eta.tzinfo)
        return max(0.0, (eta - now).total_seconds())
    return None


def _check_option_names(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(_VALID_OPTIONS))
    if unknown:
        raise InvalidTaskOptions(
            f"Unknown @task option(s) {', '.join(map(repr, unknown))}; "
            f"valid options are: {', '.join(_VALID_OPTIONS)}"
        )


def _build(fn: Callable[P, R], options: dict[str, Any]) -> Task[P, R]:
    check_callable(fn, "the decorated object")
    import inspect  # here, not at module level: `import cytask` stays fast

    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        kind = "an async generator" if inspect.isasyncgenfunction(fn) else "a generator"
        raise TypeError(
            f"Expected a plain or async function for the decorated object, got {kind} "
            f"function {getattr(fn, '__qualname__', fn)!r}: calling it only creates a "
            f"generator, so its body would never run; make it return a list (or a value)"
        )
    _check_option_names(options)
    priority = check_priority(options.get("priority", Priority.NORMAL))
    retries = check_int(options.get("retries", 0), "retries", minimum=0, maximum=2**31 - 1)
    backoff = check_duration(options.get("retry_backoff", 0.0), "retry_backoff")
    backoff_max = check_duration(options.get("retry_backoff_max", 300.0), "retry_backoff_max")
    jitter = options.get("retry_jitter", True)
    if not isinstance(jitter, bool):
        raise TypeError(f"Expected bool for retry_jitter, got {type(jitter).__name__}")
    retry_on = options.get("retry_on", (Exception,))
    if isinstance(retry_on, type):
        retry_on = (retry_on,)
    if not isinstance(retry_on, tuple) or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in retry_on
    ):
        raise TypeError(
            f"Expected an exception class or a tuple of them for retry_on, got {retry_on!r}"
        )
    timeout = check_duration(
        options.get("timeout"), "timeout", allow_none=True, none_means="no limit"
    )
    if timeout == 0:
        raise ValueError("Expected timeout > 0 or None, got 0")
    name = options.get("name") or f"{fn.__module__}.{getattr(fn, '__qualname__', fn)}"
    if not isinstance(name, str):
        raise TypeError(f"Expected str for name, got {type(name).__name__}")
    engine = options.get("engine")
    from cytask._engine import Engine

    if engine is not None and not isinstance(engine, Engine):
        raise TypeError(f"Expected a cytask.Engine or None for engine, got {type(engine).__name__}")
    compile_to_c = options.get("compile_to_c", False)
    if compile_to_c not in (True, False, "strict"):
        raise InvalidTaskOptions(
            f"Expected True, False or 'strict' for compile_to_c, got {compile_to_c!r}"
        )
    examples = options.get("examples", ())
    if not isinstance(examples, (list, tuple)) or not all(isinstance(e, tuple) for e in examples):
        raise TypeError("Expected a list of argument tuples for examples")
    opts = TaskOptions(
        name,
        priority=int(priority),
        retries=retries,
        retry_backoff=backoff or 0.0,
        retry_backoff_max=backoff_max or 0.0,
        retry_jitter=jitter,
        retry_on=retry_on,
        timeout=timeout or 0.0,
    )
    t: Task[P, R] = Task(fn, opts, engine, compile_to_c, examples)
    if compile_to_c:
        from cytask._compile import attach_compiler

        attach_compiler(t)
    return t


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    priority: Priority = ...,
    retries: int = ...,
    retry_backoff: float = ...,
    retry_backoff_max: float = ...,
    retry_jitter: bool = ...,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = ...,
    timeout: float | None = ...,
    engine: Engine | None = ...,
    name: str | None = ...,
    compile_to_c: bool | str = ...,
    examples: Sequence[tuple[Any, ...]] = ...,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Declare a background task, bare (``@task``) or with options (``@task(retries=3)``).

    Options: ``priority`` (a Priority), ``retries`` (extra attempts after a failure),
    ``retry_backoff`` (seconds before the first retry, doubling each time, with
    jitter; capped by ``retry_backoff_max``), ``retry_on`` (exception classes that
    are retried; default any Exception), ``timeout`` (seconds), ``engine`` (default:
    the default engine), ``name``, ``compile_to_c`` (True, False or "strict") and
    ``examples`` (argument tuples for ``cytask check --verify``).
    """
    if fn is not None:
        if options:
            raise TypeError("use @task or @task(**options), not @task(fn, **options)")
        return _build(fn, {})

    def decorate(f: Callable[P, R]) -> Task[P, R]:
        return _build(f, options)

    _check_option_names(options)  # fail at decoration, before a function is even given
    return decorate
