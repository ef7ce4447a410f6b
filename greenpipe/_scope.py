"""Structured concurrency: CoroScope, SpawnFuture and cancellation.

A scope owns the tasks spawned in it and is joined before it ends, so no
task outlives the code that started it and no exception is dropped.

Cancellation flows down the tree and is level-triggered. ``scope.cancel()``
marks the scope and cancels every task spawned in it; each of those tasks
cancels its own scope, and so on down. It also cancels the scopes nested in
it and, when the scope is active in its owner task, delivers the
cancellation to that task.
Delivery sets the task's flag and, when the task is parked at a greenpipe
blocking call, claims its waiter and wakes it with :class:`Cancelled`. A
task parked inside gevent (a socket, ``gevent.sleep``) gets the exception
thrown in by its own hub. From then on every blocking call of the task
raises :class:`Cancelled`, until the cancelled scope is left.

A nested ``scope.scope(fn)`` whose own cancellation ended ``fn`` catches the
:class:`Cancelled` and returns ``None``, like a trio cancel scope; a task
whose root scope was cancelled ends as cancelled. Joins at the end of a
scope are shielded: they wait for the children even while the task is
cancelled, because the cancellation has already reached those children.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import os
from types import FunctionType
from typing import Any, Callable, Generic, Iterator, TypeVar

from ._compat import allocate_lock, perf_counter, real_sleep
from ._errors import Cancelled, raise_collected
from ._hub import (
    TIMED_OUT,
    ParkingLot,
    TaskWaiter,
    Worker,
    current_task,
    check_cancelled,
    make_waiter,
    yield_now,
)
from ._task import COROUTINE_FACTORY_CODE, CoroTask, evaluate, generator_task
from ._util import Duration, to_seconds

logger = logging.getLogger(__name__)

T = TypeVar("T")

_PENDING = 0
_RUNNING = 1
_DONE = 2

_task_ids = itertools.count(1)
# The scope stack of every task that is not running; shared, never modified.
_NO_SCOPES: list[Any] = []
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_CONTEXTLIB_FILE = contextlib.__file__


def _async_def_error(fn: Any) -> TypeError:
    return TypeError(
        f"{getattr(fn, '__qualname__', fn)!r} is an 'async def' function; greenpipe "
        "runs plain and generator functions, so drop 'async' and 'await'"
    )


def _is_generator_function(fn: Any) -> bool:
    code = getattr(fn, "__code__", None)
    if code is not None:
        return bool(code.co_flags & inspect.CO_GENERATOR)
    return inspect.isgeneratorfunction(fn)


class _FutureBase(Generic[T]):
    """State, outcome and waiters shared by task and offloaded-call futures."""

    __slots__ = (
        "name",
        "_state",
        "_value",
        "_exc",
        "_cancelled",
        "_retrieved",
        "_lock",
        "_lot",
        "_executor_error",
        "_on_done",
        "__weakref__",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self._state = _PENDING
        self._value: Any = None
        self._exc: BaseException | None = None
        self._cancelled = False
        self._retrieved = False
        self._lock = allocate_lock()
        self._lot: ParkingLot | None = None
        self._executor_error: BaseException | None = None
        self._on_done: list[Callable[[Any], None]] | None = None

    def done(self) -> bool:
        """Return whether the work has ended; never blocks."""
        return self._state == _DONE

    def cancelled(self) -> bool:
        """Return whether the work ended by cancellation; never blocks."""
        return self._state == _DONE and self._cancelled

    def result(self, timeout: Duration | None = None) -> T:
        """Wait for the work to end; return its value or raise its exception.

        Blocking: parks the caller until the work ends. Cancellation: a
        cancellation point for a calling task; cancelling the caller does
        not cancel the awaited work. Threads: safe from any thread, task or
        greenlet.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
            Cancelled: The work was cancelled.
            BaseException: The exception the work raised.
        """
        self._wait_done(timeout)
        self._retrieved = True
        if self._executor_error is not None:
            raise self._executor_error
        if self._exc is not None:
            raise self._exc
        return self._value  # type: ignore[no-any-return]

    def wait(self) -> T:
        """Same as :meth:`result` without a timeout; makes futures awaitable."""
        return self.result()

    def exception(self, timeout: Duration | None = None) -> BaseException | None:
        """Wait for the work to end; return its exception or ``None``.

        A cancelled work returns its :class:`Cancelled` instance. Counts as
        retrieving the exception, so scopes will not raise it again.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        self._wait_done(timeout)
        self._retrieved = True
        return self._exc

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(future)`` once the work ends, in the thread that ends it.

        Runs at once in the calling thread when the work has already ended.
        """
        with self._lock:
            if self._state != _DONE:
                if self._on_done is None:
                    self._on_done = []
                self._on_done.append(fn)
                return
        fn(self)

    def _wait_done(self, timeout: Duration | None) -> None:
        seconds = to_seconds(timeout, "timeout")
        if self._state == _DONE:
            task = current_task()
            if task is not None and task._cancel_flag and not task._shield_depth:
                yield_now(task)
            return
        waiter = make_waiter(self)
        if isinstance(waiter, TaskWaiter) and waiter.task._executor is not self._executor:
            waiter.external = True
        with self._lock:
            if self._state == _DONE:
                return
            if self._lot is None:
                self._lot = ParkingLot()
            self._lot.add(waiter)
        if waiter.park(seconds) is TIMED_OUT:
            raise TimeoutError(f"{self.name!r} did not finish within {seconds} s")

    def _complete(
        self, value: Any, exc: BaseException | None, cancelled: bool
    ) -> None:
        with self._lock:
            self._value = value
            self._exc = exc
            self._cancelled = cancelled
            self._state = _DONE
            waiters = self._lot.take_all() if self._lot is not None else ()
            callbacks, self._on_done = self._on_done, None
        for waiter in waiters:
            waiter.wake(None)
        for callback in callbacks or ():
            try:
                callback(self)
            except BaseException:
                logger.exception("done callback of %r failed", self)

    def _describe_wait(self) -> str:
        return f"the result of {self.name!r}"


class SpawnFuture(_FutureBase[T]):
    """Handle of a spawned task: its result, its state, its cancellation.

    Created by :meth:`CoroScope.spawn` and :meth:`Executor.submit`; do not
    construct it directly.
    """

    __slots__ = (
        "_seq",
        "_executor",
        "_parent_scope",
        "_body",
        "_args",
        "_scope",
        "_glet",
        "_worker",
        "_waiter",
        "_cancel_flag",
        "_cancel_requested",
        "_shield_depth",
        "_scope_stack",
        "_current_gen",
    )

    def __init__(
        self,
        executor: Any,
        parent: CoroScope,
        body: Any,
        args: tuple[Any, ...],
        name: str,
    ) -> None:
        # The base initialiser is inlined: this runs once per spawn.
        self.name = name
        self._state = _PENDING
        self._value: Any = None
        self._exc: BaseException | None = None
        self._cancelled = False
        self._retrieved = False
        self._lock = allocate_lock()
        self._lot: ParkingLot | None = None
        self._executor_error: BaseException | None = None
        self._on_done: list[Callable[[Any], None]] | None = None
        self._seq = next(_task_ids)
        self._executor = executor
        self._parent_scope = parent
        self._body = body
        self._args = args
        self._scope: CoroScope | None = None
        self._glet: Any = None
        self._worker: Worker | None = None
        self._waiter: TaskWaiter | None = None
        self._cancel_flag = False
        self._cancel_requested = False
        self._shield_depth = 0
        # Created when the task starts, to keep queued tasks small.
        self._scope_stack: list[CoroScope] = _NO_SCOPES
        self._current_gen: Any = None

    def __repr__(self) -> str:
        state = ("pending", "running", "done")[self._state]
        if self._state == _DONE:
            if self._cancelled:
                state = "cancelled"
            elif self._exc is not None:
                state = f"failed with {type(self._exc).__name__}"
        return f"<SpawnFuture {self.name!r} {state}>"

    def __del__(self) -> None:
        # A failed root task whose exception was never retrieved is the one
        # place where an error could vanish, so it is logged (asyncio does
        # the same for its tasks).
        if (
            self._state == _DONE
            and self._exc is not None
            and not self._cancelled
            and not self._retrieved
            and self._parent_scope is not None
            and self._parent_scope._task is None
        ):
            exc = self._exc
            logger.error(
                "task %r failed and its exception was never retrieved",
                self.name,
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    def cancel(self) -> bool:
        """Request cancellation; return ``False`` if the task already ended.

        Never blocks; safe from any thread. A task that has not started
        never runs its body. A running task gets :class:`Cancelled` at its
        next blocking call, and so do the tasks it spawned.
        """
        if self._state == _DONE:
            return False
        self._cancel_requested = True
        scope = self._scope
        if scope is not None:
            scope.cancel()
        else:
            self._deliver_cancel()
        return True

    # -- running -----------------------------------------------------------

    def _main(self) -> None:
        # The body of the task's greenlet, on its worker's hub.
        self._scope_stack = []
        scope = CoroScope(self._executor, self._parent_scope, self)
        self._scope = scope
        self._state = _RUNNING
        if self._cancel_requested or self._parent_scope._cancelled:
            scope._cancelled = True
        value = None
        exc: BaseException | None = None
        try:
            value = scope._run(self._call_body, (), root=True)
        except BaseException as error:
            exc = error
        cancelled = isinstance(exc, Cancelled)
        self._glet_done()
        self._finish(value, exc, cancelled)
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            self._executor._fail_run(exc)

    def _call_body(self, scope: CoroScope) -> Any:
        body = self._body
        if type(body) is CoroTask:
            return evaluate(body)
        if _is_generator_function(body):
            return evaluate(generator_task(body, (scope, *self._args)))
        return body(scope, *self._args)

    def _glet_done(self) -> None:
        # The runner greenlet goes on to other tasks; forget it, and drop
        # the scope so a kept future does not keep the scope's state alive.
        self._waiter = None
        self._current_gen = None
        self._scope_stack = _NO_SCOPES
        self._glet = None
        self._scope = None

    def _finish(self, value: Any, exc: BaseException | None, cancelled: bool) -> None:
        self._body = None
        self._args = ()
        self._complete(value, exc, cancelled)
        self._parent_scope._child_done(self)
        self._executor._task_finished(self)

    # -- cancellation delivery ----------------------------------------------

    def _deliver_cancel(self) -> None:
        # Safe from any thread; see the module docstring.
        self._cancel_flag = True
        waiter = self._waiter
        if waiter is not None:
            if not waiter.shield and not self._shield_depth:
                waiter.try_wake(None, Cancelled(self._cancel_message()))
            return
        worker = self._worker
        if worker is not None and self._glet is not None and current_task() is not self:
            worker.post(self._cancel_in_hub)

    def _cancel_in_hub(self) -> None:
        # Runs in the owning hub, where the task is suspended. With no
        # greenpipe waiter it is parked inside gevent: throw into it.
        glet = self._glet
        if glet is None or glet.dead or self._waiter is not None or not glet:
            return
        if glet.gp_task is not self:
            return
        # The cancellation may have been handled, and its scope left, since
        # this call was posted; only a cancellation still pending counts.
        if not self._cancel_flag or self._shield_depth:
            return
        glet.throw(Cancelled(self._cancel_message()))

    def _cancel_message(self) -> str:
        return f"task {self.name!r} was cancelled"

    def _force_exit(self) -> None:
        worker = self._worker
        if worker is None:
            return

        def kill() -> None:
            glet = self._glet
            if glet is not None and glet and not glet.dead and glet.gp_task is self:
                from greenlet import GreenletExit

                glet.throw(GreenletExit)

        worker.post(kill)

    def _location(self) -> str:
        """Return ``file:line in function`` where the task is suspended."""
        glet = self._glet
        frame = getattr(glet, "gr_frame", None) if glet is not None else None
        while frame is not None:
            filename = frame.f_code.co_filename
            if not (
                filename.startswith(_PACKAGE_DIR)
                or filename == _CONTEXTLIB_FILE
                or "/gevent/" in filename
            ):
                return f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
            frame = frame.f_back
        gen_frame = getattr(self._current_gen, "gi_frame", None)
        if gen_frame is not None:
            code = gen_frame.f_code
            return f"{code.co_filename}:{gen_frame.f_lineno} in {code.co_name}"
        waiter = self._waiter
        if waiter is not None and isinstance(waiter.what, CoroScope):
            return "the end of its body, where a scope joins its children"
        return "an unknown place"


class IOFuture(_FutureBase[T]):
    """Handle of a blocking call offloaded with :meth:`CoroScope.spawn_io`."""

    __slots__ = ("_executor", "_parent_scope", "_cancel_requested", "_running")

    def __init__(self, executor: Any, parent: CoroScope, name: str) -> None:
        super().__init__(name)
        self._executor = executor
        self._parent_scope = parent
        self._cancel_requested = False
        self._running = False

    def __repr__(self) -> str:
        return f"<IOFuture {self.name!r} {'done' if self.done() else 'pending'}>"

    def cancel(self) -> bool:
        """Cancel the call if it has not started; return whether it will not run.

        A call already running in its thread cannot be interrupted: it runs
        to its end and the future then completes as cancelled, dropping the
        result. Never blocks; safe from any thread.
        """
        with self._lock:
            if self._state == _DONE:
                return False
            self._cancel_requested = True
            return not self._running

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        # Runs in an I/O pool thread.
        with self._lock:
            cancelled = self._cancel_requested
            self._running = not cancelled
        if cancelled:
            self._finish(None, Cancelled(f"{self.name!r} was cancelled"), True)
            return
        try:
            value = fn(*args)
        except BaseException as error:
            self._finish(None, error, False)
            return
        if self._cancel_requested:
            self._finish(None, Cancelled(f"{self.name!r} was cancelled"), True)
        else:
            self._finish(value, None, False)

    def _finish(self, value: Any, exc: BaseException | None, cancelled: bool) -> None:
        self._complete(value, exc, cancelled)
        self._parent_scope._child_done(self)


class CoroScope:
    """A region that owns the tasks spawned in it and joins them at its end.

    Task bodies receive their scope as the first argument. Nested scopes
    come from :meth:`scope`; code outside the executor gets one from
    :meth:`Executor.open_scope`.
    """

    __slots__ = (
        "_executor",
        "_parent",
        "_task",
        "_lock",
        "_children",
        "_failed",
        "_nested",
        "_join_lot",
        "_cancelled",
        "_active",
        "_closed",
        "_fail_fast",
        "_executor_error",
        "__weakref__",
    )

    def __init__(
        self, executor: Any, parent: CoroScope | None, task: SpawnFuture[Any] | None
    ) -> None:
        self._executor = executor
        self._parent = parent
        self._task = task
        self._lock = allocate_lock()
        # Created on first use: most task scopes never spawn or nest. A dict
        # rather than a set, so iterating it (to cancel) follows spawn order
        # and a seeded run repeats.
        self._children: dict[Any, None] | None = None
        self._failed: list[_FutureBase[Any]] | None = None
        self._nested: list[CoroScope] | None = None
        self._join_lot: ParkingLot | None = None
        self._cancelled = False
        self._active = False
        self._closed = False
        self._fail_fast = False
        self._executor_error: BaseException | None = None

    @classmethod
    def _detached(cls, executor: Any) -> CoroScope:
        scope = cls(executor, None, None)
        scope._active = True
        return scope

    def __repr__(self) -> str:
        owner = self._task.name if self._task is not None else "no task"
        return f"<CoroScope of {owner!r} children={len(self._children or ())}>"

    def _describe_wait(self) -> str:
        names = sorted(child.name for child in list(self._children or ()))
        return f"join of a scope in {self._owner_name()!r} (children: {', '.join(names)})"

    def _owner_name(self) -> str:
        return self._task.name if self._task is not None else "a detached scope"

    # -- spawning ----------------------------------------------------------

    def spawn(self, fn: Any, *args: Any, name: str | None = None) -> SpawnFuture[Any]:
        """Start ``fn(child_scope, *args)`` concurrently; return its future.

        ``fn`` may be a plain function, a generator function or a
        :class:`CoroTask` (which takes no arguments here). Never blocks; the
        new task may start on any worker.

        Raises:
            RuntimeError: This scope has already ended.
            ExecutorShutdownError: The executor is shut down.
        """
        return self._spawn(fn, args, name)

    def _spawn(self, fn: Any, args: tuple[Any, ...], name: str | None) -> SpawnFuture[Any]:
        kind = type(fn)
        if kind is FunctionType:
            code = fn.__code__
            if code is COROUTINE_FACTORY_CODE:
                # A @coroutine function takes no scope: spawn the CoroTask it makes.
                fn = fn(*args)
                args = ()
            elif code.co_flags & inspect.CO_COROUTINE:
                raise _async_def_error(fn)
        elif kind is CoroTask:
            if args:
                raise TypeError("a CoroTask takes no arguments in spawn()")
        elif not callable(fn):
            raise TypeError(f"spawn() needs a function or a CoroTask, not {fn!r}")
        elif inspect.iscoroutinefunction(fn):
            raise _async_def_error(fn)
        if name is None:
            name = fn.name if type(fn) is CoroTask else getattr(fn, "__qualname__", None)
            if name is None:
                name = repr(fn)
        elif type(name) is not str:
            name = str(name)
        future: SpawnFuture[Any] = SpawnFuture(self._executor, self, fn, args, name)
        with self._lock:
            if self._closed:
                raise RuntimeError(
                    f"cannot spawn {name!r}: the scope of {self._owner_name()!r} "
                    "has ended; spawn from a scope that is still running"
                )
            if self._children is None:
                self._children = {}
            self._children[future] = None
        if self._cancelled:
            future._cancel_requested = True
        try:
            self._executor._schedule_new(future)
        except BaseException:
            with self._lock:
                self._children.pop(future, None)
            raise
        return future

    def spawn_io(self, fn: Callable[..., T], *args: Any, name: str | None = None) -> IOFuture[T]:
        """Run the blocking ``fn(*args)`` in an I/O thread; return its future.

        Never blocks: await the future to park the calling task while the
        hub keeps running others. The call counts as a child of this scope,
        so the scope joins it. A call that has started cannot be cancelled.
        """
        if not callable(fn):
            raise TypeError(f"spawn_io() needs a callable, not {fn!r}")
        name = name or getattr(fn, "__qualname__", None) or repr(fn)
        future: IOFuture[T] = IOFuture(self._executor, self, name)
        with self._lock:
            if self._closed:
                raise RuntimeError(
                    f"cannot spawn_io {name!r}: the scope of {self._owner_name()!r} has ended"
                )
            if self._children is None:
                self._children = {}
            self._children[future] = None
        if self._cancelled:
            future._cancel_requested = True
        try:
            self._executor._run_io(lambda: future._run(fn, args))
        except BaseException:
            with self._lock:
                self._children.pop(future, None)
            raise
        return future

    def scope(self, fn: Callable[..., T], *args: Any, fail_fast: bool = False) -> T:
        """Run ``fn(child_scope, *args)`` inline in a new nested scope.

        Blocking: runs ``fn`` in the calling task, then waits for every task
        spawned in the nested scope. Returns ``fn``'s value, or ``None`` when
        the nested scope itself was cancelled and ``fn`` ended by that.

        Args:
            fail_fast: Cancel the nested scope (its body and the other
                children) at the first child failure.

        Raises:
            BaseException: The body's exception or the unretrieved failures
                of children (several as an :class:`ExceptionGroup`).
        """
        if not callable(fn):
            raise TypeError(f"scope() needs a function, not {fn!r}")
        task = current_task()
        if self._task is not None and task is not self._task:
            raise RuntimeError(
                "scope.scope() must be called from the task that owns the scope"
            )
        child = CoroScope(self._executor, self, task)
        child._fail_fast = fail_fast
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the scope of {self._owner_name()!r} has ended")
            if self._nested is None:
                self._nested = []
            self._nested.append(child)
        if self._cancelled:
            child._cancelled = True
        try:
            return child._run(lambda s: fn(s, *args), (), root=False)
        finally:
            with self._lock:
                self._nested.remove(child)

    # -- joining -----------------------------------------------------------

    def join_all(self) -> None:
        """Wait until every task spawned in this scope has ended.

        Blocking: parks until the children end. Cancellation: a
        cancellation point; the children keep running unless the
        cancellation reached them too.

        Raises:
            BaseException: Failures of children that were never retrieved, one
                as itself and several as an :class:`ExceptionGroup`. They
                count as retrieved afterwards.
        """
        self._join(shield=False)
        self._raise_failures()

    def _join(self, shield: bool, close: bool = False) -> None:
        # With ``close``, the scope stops accepting spawns in the same
        # locked step that finds it empty, so no child can slip in after it.
        while True:
            with self._lock:
                if not self._children:
                    if close:
                        self._closed = True
                    return
                waiter = make_waiter(self)
                if self._join_lot is None:
                    self._join_lot = ParkingLot()
                self._join_lot.add(waiter)
            waiter.park(None, shield)

    def _take_failures(self) -> list[BaseException]:
        with self._lock:
            failed, self._failed = self._failed, None
        return _unretrieved(failed)

    def _raise_failures(self) -> None:
        self._raise(self._take_failures())

    def _raise(self, errors: list[BaseException]) -> None:
        # One error is raised as itself, several as an exception group.
        if errors:
            raise_collected(errors, f"failures in the scope of {self._owner_name()!r}")

    def _child_done(self, child: _FutureBase[Any]) -> None:
        # Called in the thread where the child ended.
        failed = child._exc is not None and not child._cancelled
        with self._lock:
            self._children.pop(child, None)
            if failed:
                if self._failed is None:
                    self._failed = []
                self._failed.append(child)
            lot = self._join_lot
            waiters = lot.take_all() if lot is not None and not self._children else []
        for waiter in waiters:
            waiter.wake(None)
        if failed and self._fail_fast:
            self.cancel()

    # -- cancellation ------------------------------------------------------

    def cancel(self) -> None:
        """Cancel every task of this scope and of the scopes inside it.

        Never blocks; safe from any thread. The code running in this scope
        gets :class:`Cancelled` at its next blocking call, and so does
        every task spawned here.
        """
        with self._lock:
            self._cancelled = True
            children = list(self._children or ())
            nested = list(self._nested or ())
        for child in children:
            child.cancel()
        for scope in nested:
            scope.cancel()
        task = self._task
        if task is not None and self._active:
            task._deliver_cancel()
        if self._task is None and self._parent is None:
            logger.debug("cancelled a detached scope with %d children", len(children))

    request_cancellation = cancel

    def is_cancellation_requested(self) -> bool:
        """Return whether this scope or one around it was cancelled; never blocks."""
        task = self._task
        if task is not None and self._active:
            return task._cancel_flag or self._cancelled
        return self._cancelled

    def maybe_yield(self) -> None:
        """Switch to other work if this task ran longer than the timeslice.

        Cancellation: always a cancellation point, even when it does not
        switch.

        Raises:
            Cancelled: The task has a pending cancellation.
        """
        task = current_task()
        if task is None:
            return
        check_cancelled(task)
        worker = task._worker
        if perf_counter() - worker.slice_start > worker.executor.timeslice:
            yield_now(task)

    def receive(self, channel: Any) -> Any:
        """Same as ``channel.receive()``."""
        return channel.receive()

    # -- the body ------------------------------------------------------------

    def _run(self, fn: Callable[[CoroScope], T], args: tuple[Any, ...], root: bool) -> T:
        self._enter()
        body_exc: BaseException | None = None
        value: Any = None
        try:
            if self._cancelled and root:
                task = self._task
                raise Cancelled(task._cancel_message() if task else "cancelled")
            value = fn(self)
        except BaseException as error:
            body_exc = error
            self.cancel()

        if body_exc is None:
            # Fast path for a body that left no child running: one locked
            # step closes the scope and takes its failures.
            with self._lock:
                finished = not self._children
                if finished:
                    self._closed = True
                    failed, self._failed = self._failed, None
            if finished:
                self._active = False
                self._pop_from_task()
                if failed:
                    self._raise(_unretrieved(failed))
                return value  # type: ignore[no-any-return]

        try:
            self._join(shield=True, close=True)
        finally:
            self._leave()
        errors = self._take_failures()
        if body_exc is not None and not (not root and self._caught_own_cancel(body_exc)):
            errors.insert(0, body_exc)
        if errors:
            self._raise(errors)
        if body_exc is not None:
            return None  # type: ignore[return-value]
        return value  # type: ignore[no-any-return]

    def _enter(self) -> None:
        # Makes this scope the innermost active scope of its task.
        task = self._task
        if task is not None:
            task._scope_stack.append(self)
            if self._cancelled:
                task._cancel_flag = True
        self._active = True

    def _leave(self) -> None:
        with self._lock:
            self._closed = True
        self._active = False
        self._pop_from_task()

    def _pop_from_task(self) -> None:
        task = self._task
        if task is not None:
            stack = task._scope_stack
            stack.remove(self)
            task._cancel_flag = bool(stack) and any(s._cancelled for s in stack)

    def _caught_own_cancel(self, error: BaseException) -> bool:
        """Return whether ``error`` is this scope's own cancellation.

        True when this scope was cancelled and no scope around it was, so
        the :class:`Cancelled` should stop here. Call after :meth:`_leave`.
        """
        task = self._task
        return (
            isinstance(error, Cancelled)
            and self._cancelled
            and not (task is not None and task._cancel_flag)
        )

    # -- detached use ---------------------------------------------------------

    def __enter__(self) -> CoroScope:
        if self._task is not None or self._parent is not None:
            raise RuntimeError("only a scope from Executor.open_scope() is a context manager")
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.cancel()
        self._join(shield=True, close=True)
        if self._executor_error is not None:
            raise self._executor_error
        errors = self._take_failures()
        if errors:
            if exc is not None:
                errors.insert(0, exc)
            raise_collected(errors, "failures in a detached scope")


@contextlib.contextmanager
def shield() -> Iterator[None]:
    """Hold off cancellation of the calling task inside the ``with`` block.

    Blocking calls in the block do not raise :class:`Cancelled`, so cleanup
    that must wait (closing a connection, flushing a file, joining helpers)
    can finish after a cancellation. A cancellation that arrived meanwhile
    is still pending after the block and raises at the next blocking call.
    Outside a task this does nothing.

    Example:
        >>> try:  # doctest: +SKIP
        ...     work()
        ... finally:
        ...     with greenpipe.shield():
        ...         connection.close_gracefully()
    """
    task = current_task()
    if task is None:
        yield
        return
    task._shield_depth += 1
    try:
        yield
    finally:
        task._shield_depth -= 1


def _unretrieved(failed: list[_FutureBase[Any]] | None) -> list[BaseException]:
    """Return the exceptions of ``failed`` not yet retrieved; mark them retrieved."""
    errors: list[BaseException] = []
    for future in failed or ():
        if not future._retrieved:
            future._retrieved = True
            errors.append(future._exc)  # type: ignore[arg-type]
    return errors


def current_scope() -> CoroScope | None:
    """Return the innermost scope of the calling task, or ``None``."""
    task = current_task()
    if task is None or not task._scope_stack:
        return None
    return task._scope_stack[-1]


def sleep(seconds: Duration) -> None:
    """Pause the calling task for ``seconds`` (a number or a ``timedelta``).

    Blocking: parks the task on its hub's clock (virtual under a
    :class:`~greenpipe.testing.VirtualClock`); ``sleep(0)`` only lets other
    ready tasks run. Outside a task it uses ``gevent.sleep`` on a thread
    with a gevent hub and a plain thread sleep otherwise. Cancellation: a
    cancellation point.

    Raises:
        Cancelled: The task was cancelled before or during the sleep.
        ValueError: ``seconds`` is negative.
    """
    if seconds is None:
        raise TypeError("seconds must be a number of seconds or a timedelta, not None")
    duration = to_seconds(seconds)
    assert duration is not None
    task = current_task()
    if task is None:
        from gevent._hub_local import get_hub_if_exists

        if get_hub_if_exists() is not None:
            import gevent

            gevent.sleep(duration)
        else:
            real_sleep(duration)
        return
    if duration == 0:
        yield_now(task)
        return
    waiter = TaskWaiter(task, f"sleep({duration:g})")
    waiter.park(duration)
