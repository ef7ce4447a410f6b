"""Lazy coroutines (``CoroTask``) and the trampoline that runs them.

A :class:`CoroTask` describes a computation without starting it. It starts
when awaited, with ``.wait()`` (inline, in the caller's greenlet) or with
``yield`` inside a generator body, or when spawned as a task.

Generator bodies and combinators run on an explicit stack instead of the
Python call stack. When a generator yields another lazy coroutine, the
trampoline pushes it and carries on in the same loop. When that one
finishes, its value goes to the frame below. A chain of any depth of nested awaits, or of
``then`` combinators, therefore never deepens the C stack nor reaches the
recursion limit, and an await that completes at once costs one loop turn.
"""

from __future__ import annotations

import functools
import inspect
from types import GeneratorType
from typing import Any, Callable, Generic, TypeVar

from ._hub import current_task, yield_now

__all__ = ["CoroTask", "coroutine", "evaluate", "wait_awaitable"]

T = TypeVar("T")
U = TypeVar("U")

_FN = 0  # a plain function: call it
_GEN = 1  # a generator function: drive the generator
_THEN = 2  # map the value of the source
_TAP = 3  # call a side effect with the value, pass the value on
_OR = 4  # run the fallback only when the source raised
_KIND_NAMES = {_FN: "fn", _GEN: "gen", _THEN: "then", _TAP: "tap", _OR: "or"}


class CoroTask(Generic[T]):
    """A lazy, single-use computation built by ``@coroutine`` or combinators.

    Nothing runs until the task is awaited with :meth:`wait` (or ``yield``
    in a generator body) or spawned with ``scope.spawn(coro)``. A CoroTask
    runs at most once; call the coroutine function again for a new one.

    Combinators return new lazy tasks and consume their sources:

    * ``coro.then(f)`` or ``coro > f``: the value ``f(v)`` of the result
      ``v``. When ``f`` returns a CoroTask, that task is awaited too.
    * ``coro.tap(f)``: calls ``f(v)`` for its side effect; ``v`` passes on.
    * ``coro | fallback``: when ``coro`` raises an :class:`Exception`, runs
      ``fallback`` instead (a CoroTask, or a callable taking the
      exception). When ``coro`` succeeds, the fallback never starts.
      :class:`~greenpipe.Cancelled` is never caught.
    """

    __slots__ = ("_kind", "_a", "_b", "_args", "_kwargs", "_started")

    def __init__(
        self,
        kind: int,
        a: Any,
        b: Any = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._kind = kind
        self._a = a
        self._b = b
        self._args = args
        self._kwargs = kwargs
        self._started = False

    def __repr__(self) -> str:
        return f"<CoroTask {self.name} ({_KIND_NAMES[self._kind]})>"

    @property
    def name(self) -> str:
        """The name of the function at the root of this computation."""
        node = self
        while node._kind in (_THEN, _TAP, _OR):
            node = node._a
        fn = node._a
        return getattr(fn, "__qualname__", None) or repr(fn)

    def wait(self) -> T:
        """Run the computation in the calling greenlet and return its value.

        Blocking: as long as the computation blocks. Cancellation: every
        blocking call inside it is a cancellation point.

        Raises:
            RuntimeError: This CoroTask already ran.
            BaseException: Whatever the computation raised.
        """
        return evaluate(self)

    def then(self, fn: Callable[[T], Any]) -> CoroTask[Any]:
        """Return a lazy task whose value is ``fn(value of self)``."""
        _check_callable(fn, "then")
        return CoroTask(_THEN, self, fn)

    def __gt__(self, fn: Callable[[T], Any]) -> CoroTask[Any]:  # type: ignore[override]
        return self.then(fn)

    def tap(self, fn: Callable[[T], Any]) -> CoroTask[T]:
        """Return a lazy task that calls ``fn(value)`` and keeps ``value``."""
        _check_callable(fn, "tap")
        return CoroTask(_TAP, self, fn)

    def __or__(self, fallback: Any) -> CoroTask[Any]:
        if not isinstance(fallback, CoroTask) and not callable(fallback):
            raise TypeError(
                "the right side of | must be a CoroTask or a callable taking "
                f"the exception, not {fallback!r}"
            )
        return CoroTask(_OR, self, fallback)

def _check_callable(fn: Any, method: str) -> None:
    if not callable(fn):
        raise TypeError(f"CoroTask.{method}() needs a callable, not {fn!r}")


def coroutine(fn: Callable[..., Any]) -> Callable[..., CoroTask[Any]]:
    """Turn a plain or generator function into a factory of lazy CoroTasks.

    Calling the decorated function runs nothing: it returns a
    :class:`CoroTask` holding the arguments. Inside a generator body,
    ``value = yield awaitable`` awaits a CoroTask, a future or any object
    with ``wait()``, and a bare ``yield`` is a checkpoint that lets other
    tasks run.

    Example:
        >>> @coroutine
        ... def double(x):
        ...     return 2 * x
        >>> (double(3) > (lambda v: v + 1)).wait()
        7
    """
    if not callable(fn):
        raise TypeError(f"@coroutine needs a function, not {fn!r}")
    kind = _GEN if inspect.isgeneratorfunction(fn) else _FN

    @functools.wraps(fn)
    def factory(*args: Any, **kwargs: Any) -> CoroTask[Any]:
        return CoroTask(kind, fn, None, args, kwargs or None)

    factory.__greenpipe_coroutine__ = fn  # type: ignore[attr-defined]
    return factory


# Every factory made by @coroutine shares this code object, which lets
# spawn() recognise one with an identity check.
COROUTINE_FACTORY_CODE = coroutine(lambda: None).__code__


def generator_task(fn: Callable[..., Any], args: tuple[Any, ...]) -> CoroTask[Any]:
    """Return a CoroTask that drives the generator function ``fn(*args)``."""
    return CoroTask(_GEN, fn, None, args)


def wait_awaitable(awaitable: Any) -> Any:
    """Wait for anything a generator body may yield and return its value.

    Raises:
        TypeError: ``awaitable`` has no ``wait()`` method.
    """
    if awaitable is None:
        task = current_task()
        if task is not None:
            yield_now(task)
        return None
    wait = getattr(awaitable, "wait", None)
    if wait is None:
        raise TypeError(
            "a generator body can only yield an awaitable (a CoroTask, a "
            f"SpawnFuture or an object with wait()), not {awaitable!r}"
        )
    return wait()


def evaluate(root: Any) -> Any:
    """Run a CoroTask or awaitable to completion on an explicit stack.

    See the module docstring for why this is a loop and not recursion.
    """
    stack: list[Any] = []
    node: Any = root
    value: Any = None
    exc: BaseException | None = None
    task = current_task()

    while True:
        # Step 1: start ``node``, which either pushes frames or produces an
        # outcome in ``value`` / ``exc``.
        if node is not None:
            current, node = node, None
            if type(current) is CoroTask:
                if current._started:
                    exc = RuntimeError(
                        f"{current!r} already ran; a CoroTask runs once, so "
                        "call the coroutine function again for a new one"
                    )
                    value = None
                else:
                    current._started = True
                    kind = current._kind
                    if kind >= _THEN:
                        stack.append(current)
                        node = current._a
                        continue
                    value, exc = _call_leaf(current, kind, stack)
            else:
                try:
                    value = wait_awaitable(current)
                except BaseException as error:
                    exc = error

        # Step 2: hand the outcome to the frame on top of the stack.
        if not stack:
            if exc is not None:
                try:
                    raise exc
                finally:
                    exc = None
            return value
        top = stack[-1]
        if type(top) is GeneratorType:
            if task is not None:
                task._current_gen = top
            try:
                if exc is not None:
                    error, exc = exc, None
                    node = top.throw(error)
                else:
                    node = top.send(value)
            except StopIteration as stop:
                stack.pop()
                value = stop.value
                continue
            except BaseException as error:
                stack.pop()
                exc = error
                value = None
                continue
            if node is None:
                node = _CHECKPOINT
            value = None
            continue

        stack.pop()
        kind = top._kind
        if kind == _THEN:
            if exc is None:
                try:
                    value = top._b(value)
                except BaseException as error:
                    exc = error
                    value = None
                else:
                    if type(value) is CoroTask:
                        node, value = value, None
        elif kind == _TAP:
            if exc is None:
                try:
                    top._b(value)
                except BaseException as error:
                    exc = error
                    value = None
        elif exc is not None and isinstance(exc, Exception):  # _OR
            failure, exc = exc, None
            fallback = top._b
            if type(fallback) is CoroTask:
                node = fallback
            else:
                try:
                    value = fallback(failure)
                except BaseException as error:
                    exc = error
                    value = None
                else:
                    if type(value) is CoroTask:
                        node, value = value, None


def _call_leaf(
    leaf: CoroTask[Any], kind: int, stack: list[Any]
) -> tuple[Any, BaseException | None]:
    # Calls a function leaf. A generator is pushed for the loop to drive.
    try:
        kwargs = leaf._kwargs
        if kwargs:
            result = leaf._a(*leaf._args, **kwargs)
        else:
            result = leaf._a(*leaf._args)
    except BaseException as error:
        return None, error
    if kind == _GEN and type(result) is GeneratorType:
        stack.append(result)
        return None, None
    return result, None


class _Checkpoint:
    """The awaitable behind a bare ``yield``: one pass through the scheduler."""

    __slots__ = ()

    def wait(self) -> None:
        task = current_task()
        if task is not None:
            yield_now(task)


_CHECKPOINT = _Checkpoint()
