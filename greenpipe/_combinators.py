"""Combinators over awaitables: when_all, when_any, timeout and deadlines.

Each combinator returns a lazy :class:`CoroTask`. When it runs inside a
task, lazy inputs are spawned as child tasks of a scope nested in the
caller's current scope, so they run concurrently and are joined before the
combinator returns. A combinator therefore leaves no work running behind
the caller's back. The one exception is ``when_any(...,
cancel_losers=False)``, whose losers join the caller's scope instead.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, NamedTuple

from ._compat import allocate_lock
from ._errors import Cancelled
from ._hub import ParkingLot, current_task, make_waiter
from ._scope import CoroScope, _FutureBase, current_scope, sleep
from ._task import CoroTask, coroutine
from ._util import Duration, to_seconds

logger = logging.getLogger(__name__)

__all__ = [
    "WhenAnyResult",
    "fail_after",
    "move_on_after",
    "timeout",
    "when_all",
    "when_any",
]


class WhenAnyResult(NamedTuple):
    """The winner of :func:`when_any`: its position in the input and its value."""

    index: int
    result: Any


def _as_list(awaitables: tuple[Any, ...], function: str) -> tuple[list[Any], bool]:
    # ``f([a, b])`` and ``f(a, b)`` are both accepted; the second returns a tuple.
    if len(awaitables) == 1 and isinstance(awaitables[0], (list, tuple)):
        items, variadic = list(awaitables[0]), False
    else:
        items, variadic = list(awaitables), True
    for item in items:
        if type(item) is not CoroTask and not hasattr(item, "wait"):
            raise TypeError(
                f"{function}() takes CoroTasks, futures or objects with wait(), "
                f"not {item!r}"
            )
    return items, variadic


def _start_all(scope: CoroScope, items: list[Any]) -> list[Any]:
    """Spawn the lazy inputs in ``scope``; return one waitable per input."""
    started = []
    for item in items:
        if type(item) is CoroTask:
            started.append(scope.spawn(item))
        else:
            started.append(item)
    return started


def _require_scope(function: str) -> CoroScope:
    scope = current_scope()
    if scope is None:
        raise RuntimeError(
            f"{function}() must be awaited inside a greenpipe task, because it "
            "spawns its inputs as tasks; use greenpipe.run() to start one"
        )
    return scope


def when_all(*awaitables: Any) -> CoroTask[Any]:
    """Return a lazy task that waits for every input.

    ``when_all([a, b])`` gives a list and ``when_all(a, b)`` a tuple of the
    values, in input order. Every input runs to its end even when one
    fails. Then the failure that happened first, in completion order, is
    raised and the others are dropped.

    Raises:
        TypeError: An input is not awaitable.
    """
    items, variadic = _as_list(awaitables, "when_all")

    @coroutine
    def run_all() -> Any:
        order: list[int] = []
        lock = allocate_lock()

        def gather(scope: CoroScope) -> list[Any]:
            started = _start_all(scope, items)
            for index, waitable in enumerate(started):
                if isinstance(waitable, _FutureBase):
                    waitable.add_done_callback(_recorder(order, lock, index))
            values: list[Any] = [None] * len(started)
            failures: dict[int, BaseException] = {}
            for index, waitable in enumerate(started):
                try:
                    values[index] = waitable.wait()
                except Cancelled:
                    if isinstance(waitable, _FutureBase) and waitable.cancelled():
                        failures[index] = waitable.exception()  # type: ignore[assignment]
                    else:
                        raise
                except BaseException as error:
                    failures[index] = error
            if failures:
                ranked = [i for i in order if i in failures] + sorted(
                    i for i in failures if i not in order
                )
                raise failures[ranked[0]]
            return values

        values = _require_scope("when_all").scope(gather)
        return tuple(values) if variadic else values

    return run_all()


def _recorder(order: list[int], lock: Any, index: int) -> Any:
    def record(_future: Any) -> None:
        with lock:
            order.append(index)

    return record


def when_any(*awaitables: Any, cancel_losers: bool = True) -> CoroTask[WhenAnyResult]:
    """Return a lazy task that finishes with the first input to finish.

    The result is a :class:`WhenAnyResult`. When several inputs are already
    done, the lowest index wins. A winner that failed raises its exception.
    Losers are cancelled and joined, unless ``cancel_losers=False``, which
    leaves them running as children of the caller's scope.

    Raises:
        ValueError: No inputs were given.
        TypeError: An input is not awaitable.
    """
    items, _ = _as_list(awaitables, "when_any")
    if not items:
        raise ValueError("when_any() needs at least one awaitable")

    @coroutine
    def race() -> WhenAnyResult:
        outer = _require_scope("when_any")
        if cancel_losers:
            return outer.scope(lambda scope: _race(scope, items, True))
        return _race(outer, items, False)

    return race()


def _race(scope: CoroScope, items: list[Any], cancel_losers: bool) -> WhenAnyResult:
    started = _start_all(scope, items)
    lock = allocate_lock()
    lot = ParkingLot()
    fired: list[bool] = []

    def on_done(_future: Any) -> None:
        with lock:
            fired.append(True)
            waiters = lot.take_all()
        for waiter in waiters:
            waiter.wake(None)

    futures = []
    for waitable in started:
        if not isinstance(waitable, _FutureBase):
            raise TypeError(
                f"when_any() can race CoroTasks and futures, not {waitable!r}"
            )
        futures.append(waitable)
        waitable.add_done_callback(on_done)
    with lock:
        if not fired:
            waiter = make_waiter("when_any")
            lot.add(waiter)
        else:
            waiter = None
    if waiter is not None:
        waiter.park()

    index = next(i for i, future in enumerate(futures) if future.done())
    winner = futures[index]
    for position, future in enumerate(futures):
        if position != index:
            if cancel_losers:
                future.cancel()
            if future.done() or cancel_losers:
                future._retrieved = True
    if cancel_losers:
        for position, future in enumerate(futures):
            if position != index and type(items[position]) is CoroTask:
                future.add_done_callback(_mark_retrieved)
    return WhenAnyResult(index, winner.result())


def _mark_retrieved(future: Any) -> None:
    # A loser's outcome no longer matters once the race is decided.
    future._retrieved = True


@coroutine
def _sleep_then_none(seconds: float) -> None:
    sleep(seconds)
    return None


def timeout(seconds: Duration) -> CoroTask[None]:
    """Return a lazy task that sleeps ``seconds`` and finishes with ``None``.

    Raced with :func:`when_any`, it reports its own index when the time ran
    out first.

    Raises:
        ValueError: ``seconds`` is negative.
    """
    duration = to_seconds(seconds)
    return _sleep_then_none(duration)


class _Deadline:
    """A region of a task's code that is cancelled when a deadline passes."""

    def __init__(self, seconds: Duration, raise_timeout: bool) -> None:
        self._seconds = to_seconds(seconds)
        self._raise = raise_timeout
        self._region: CoroScope | None = None
        self._timer: Any = None
        self.deadline: float | None = None
        self.cancelled_caught = False

    def __enter__(self) -> _Deadline:
        task = current_task()
        if task is None:
            raise RuntimeError("a deadline block must run inside a greenpipe task")
        parent = current_scope()
        executor = task._worker.executor
        region = CoroScope(executor, parent, task)
        if parent is not None:
            with parent._lock:
                if parent._nested is None:
                    parent._nested = []
                parent._nested.append(region)
            if parent._cancelled:
                region._cancelled = True
        region._enter()
        self._region = region
        self.deadline = executor.now() + self._seconds
        self._timer = executor._call_later(task._worker, self._seconds, region.cancel)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        region = self._region
        assert region is not None
        self._timer.cancel()
        region._leave()
        parent = region._parent
        if parent is not None:
            with parent._lock:
                parent._nested.remove(region)
        if exc is not None and region._caught_own_cancel(exc):
            self.cancelled_caught = True
            if self._raise:
                raise TimeoutError(
                    f"deadline of {self._seconds:g} s passed"
                ) from exc
            return True
        return False


def move_on_after(seconds: Duration) -> _Deadline:
    """Cancel the code of the ``with`` block after ``seconds`` and go on.

    Blocking calls inside the block raise :class:`Cancelled` once the time
    is up. The block then ends quietly, and ``cancelled_caught`` on the
    context manager records whether the deadline cut it short. Must run inside a task.

    Example:
        >>> with greenpipe.move_on_after(1.5) as deadline:  # doctest: +SKIP
        ...     data = channel.receive()
    """
    return _Deadline(seconds, raise_timeout=False)


def fail_after(seconds: Duration) -> _Deadline:
    """Like :func:`move_on_after`, but raise ``TimeoutError`` when time is up."""
    return _Deadline(seconds, raise_timeout=True)
