"""The worker side of the Dask backend: one task body per Dask task.

Dask calls :func:`run_task` in one of its worker threads. It unpickles the
task's spec, starts a fresh :class:`~greenpipe.Executor` for the body (so
scopes, channels and spawns work inside it), waits for the body under the
per-task timeout, and shuts the executor down before it returns.

Outcomes. A value is returned to Dask as it is. Every other outcome (an
exception of any kind, ``Cancelled`` and ``KeyboardInterrupt`` included,
a timeout, a cancellation of the run) is raised as :class:`TaskFailure`, a
plain ``Exception`` that carries the original exception as data. Dask then
marks the task as erred and never runs its dependents, and no
``BaseException`` ever reaches the worker's own machinery.

Cancellation. Dask cannot interrupt a running task, so the client calls
:func:`cancel_run` on every worker. It marks the run as cancelled and
cancels the root task of each body of the run running in this process.
Each body then gets :class:`~greenpipe.Cancelled` at its next blocking
call. A body that starts after the mark ends at once without running. The registry of running bodies and the marks share one lock, so
a body is either found by :func:`cancel_run` or finds the mark.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import cloudpickle

from .._compat import allocate_lock
from .._errors import Cancelled
from .._executor import Executor
from .._task import coroutine
from ._remote import ExceptionRecord, capture

logger = logging.getLogger(__name__)

__all__ = ["TaskFailure", "TaskSpec", "cancel_run", "live_executors", "run_task"]

# Marks of cancelled runs kept per process; the oldest are forgotten first.
_MAX_CANCELLED_RUNS = 4096

_lock = allocate_lock()
_running: dict[str, dict[str, Any]] = {}
_cancelled_runs: OrderedDict[str, None] = OrderedDict()
_live_executors = 0


@dataclass(frozen=True)
class TaskSpec:
    """The data a worker needs to run one task of a pipeline.

    Attributes:
        run_id: The run the task belongs to.
        key: The task's Dask key.
        task_name: The task's name in the pipeline.
        pipeline: The pipeline's name.
        fn: The task body.
        timeout: The per-task timeout in seconds, or ``None``.
        threads: Worker threads of the body's executor.
    """

    run_id: str
    key: str
    task_name: str
    pipeline: str
    fn: Callable[..., Any]
    timeout: Optional[float]
    threads: int


class TaskFailure(Exception):
    """Raised to Dask for every outcome of a body other than a value.

    Dask hands this same exception to every dependent task, so ``key``
    separates the task where it started from the tasks that inherited it.

    Attributes:
        kind: ``"failed"`` (the body raised), ``"timeout"`` (the per-task
            timeout cancelled it) or ``"cancelled"`` (the run was
            cancelled).
        key: The Dask key of the task whose body ended this way.
        task_name: That task's name.
        record: The exception the body ended with, or ``None``.
    """

    def __init__(
        self, kind: str, key: str, task_name: str, record: ExceptionRecord | None
    ) -> None:
        super().__init__(kind, key, task_name, record)
        self.kind = kind
        self.key = key
        self.task_name = task_name
        self.record = record

    def __str__(self) -> str:
        detail = ""
        if self.record is not None:
            detail = f": {self.record.type_name}: {self.record.message}"
        return f"task {self.task_name!r} {self.kind}{detail}"

    def __repr__(self) -> str:
        # Dask's worker logs the repr of a task's exception; keep the
        # pickled record out of it.
        return f"TaskFailure({str(self)!r})"


def live_executors() -> int:
    """Return how many body executors this process is running now."""
    return _live_executors


def cancel_run(run_id: str) -> list[str]:
    """Cancel the bodies of run ``run_id`` in this process; return their keys.

    Called by the client on every worker through ``Client.run``. Never
    blocks: the bodies get the cancellation at their next blocking call.
    """
    with _lock:
        _cancelled_runs[run_id] = None
        while len(_cancelled_runs) > _MAX_CANCELLED_RUNS:
            _cancelled_runs.popitem(last=False)
        running = dict(_running.get(run_id, {}))
    for root in running.values():
        root.cancel()
    if running:
        logger.debug("run %s: cancelled %d running task bodies", run_id, len(running))
    return sorted(running)


@dataclass(frozen=True)
class _WorkerContext:
    """Dask's per-task state in the worker thread that called :func:`run_task`.

    Dask finds the current worker through a context variable and the
    current task through a thread-local. The body runs in a greenlet on
    another thread, where ``get_worker()`` and ``get_client()`` need both.
    """

    context: contextvars.Context
    thread_state: dict[str, Any]

    @classmethod
    def capture(cls) -> _WorkerContext:
        from distributed.worker import thread_state

        return cls(contextvars.copy_context(), dict(vars(thread_state)))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        from distributed.worker import thread_state

        tokens = [(var, var.set(value)) for var, value in self.context.items()]
        vars(thread_state).update(self.thread_state)
        try:
            yield
        finally:
            for name in self.thread_state:
                vars(thread_state).pop(name, None)
            for var, token in reversed(tokens):
                var.reset(token)


def _run_body(scope: Any, fn: Callable[..., Any], values: tuple, worker: _WorkerContext) -> Any:
    with worker.applied():
        if inspect.isgeneratorfunction(fn):
            return coroutine(fn)(scope, *values).wait()
        return fn(scope, *values)


def _wait(root: Any, timeout: float | None) -> bool:
    """Wait for ``root`` to end; return whether its timeout cancelled it."""
    if timeout is None:
        root.exception()
        return False
    try:
        root.exception(timeout=timeout)
    except TimeoutError:
        if root.cancel():
            root.exception()
            return True
    return False


def run_task(blob: bytes, *values: Any) -> Any:
    """Run one pipeline task inside a Dask worker and return its value.

    Blocking: occupies the calling Dask worker thread until the body and
    everything it spawned have ended.

    Args:
        blob: The pickled :class:`TaskSpec`.
        values: The values of the task's parents, in ``depends_on`` order.

    Raises:
        TaskFailure: The body raised, timed out or was cancelled, or the
            spec could not be unpickled.
    """
    try:
        spec: TaskSpec = cloudpickle.loads(blob)
    except Exception as error:
        raise TaskFailure("failed", _current_key(), "?", capture(error)) from None

    worker = _WorkerContext.capture()
    _count_executor(1)
    try:
        root, timed_out, run_cancelled = _run_on_executor(spec, values, worker)
    finally:
        _count_executor(-1)

    if root is None:
        raise TaskFailure("cancelled", spec.key, spec.task_name, None)
    try:
        value = root.result()
    except Cancelled as error:
        if timed_out:
            kind, record = "timeout", None
        elif run_cancelled:
            kind, record = "cancelled", capture(error)
        else:
            # Nothing asked for it, so the client reports it as a failure.
            kind, record = "failed", capture(error)
    except BaseException as error:
        kind = "timeout" if timed_out else "failed"
        record = capture(error)
    else:
        if not timed_out:
            return value
        # As with the local backend, a body that returned after its
        # timeout cancelled it still counts as timed out.
        kind, record = "timeout", None
    raise TaskFailure(kind, spec.key, spec.task_name, record)


def _run_on_executor(
    spec: TaskSpec, values: tuple, worker: _WorkerContext
) -> tuple[Any, bool, bool]:
    """Run the body on a fresh executor; return its root future and flags.

    Returns ``(root, timed_out, run_cancelled)``, with ``root`` ``None``
    when the run was cancelled before the body could start.
    """
    root = None
    timed_out = False
    with Executor(spec.threads, name=f"{spec.pipeline}/{spec.task_name}") as executor:
        with _lock:
            if spec.run_id not in _cancelled_runs:
                root = executor.submit(_run_body, spec.fn, values, worker, name=spec.task_name)
                _running.setdefault(spec.run_id, {})[spec.key] = root
        try:
            if root is not None:
                timed_out = _wait(root, spec.timeout)
        finally:
            with _lock:
                bodies = _running.get(spec.run_id)
                if bodies is not None:
                    bodies.pop(spec.key, None)
                    if not bodies:
                        del _running[spec.run_id]
                run_cancelled = spec.run_id in _cancelled_runs
    return root, timed_out, run_cancelled


def _count_executor(change: int) -> None:
    global _live_executors

    with _lock:
        _live_executors += change


def _current_key() -> str:
    try:
        from distributed.worker import thread_state
    except ImportError:  # pragma: no cover - distributed is a requirement here
        return "?"
    return str(getattr(thread_state, "key", "?"))
