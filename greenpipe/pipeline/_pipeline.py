"""Pipeline: runs a graph of tasks on an executor under a watchdog.

One run works like this. ``execute()`` starts a fresh
:class:`~greenpipe.Executor` and submits a scheduler as its root task. The
scheduler spawns every task whose parents have all succeeded, each as a
child task with its own scope, and parks on an unbounded channel that the
tasks' done callbacks feed. Each message records one outcome, applies the
failure policy and releases the children that became ready. Spawning only
ready tasks keeps the executor's queues short and makes the start order
follow the completion order, which a seeded single-thread run repeats.

Stopping a run (global timeout, the watchdog's deadlock timeout) cancels
the root task: the cancellation reaches the scheduler and every running
task, the root scope joins them, and ``execute()`` then reads the outcome
of each task from its future. A deadlock that the runtime itself detects
arrives the same way, as the root task's :class:`~greenpipe.DeadlockError`.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections import deque
from typing import Any, Callable

from .._channel import Channel
from .._errors import BaseExceptionGroup, Cancelled, DeadlockError, ExceptionGroup
from .._executor import Executor, HubHolder
from .._scope import CoroScope, SpawnFuture, shield
from .._task import coroutine
from ._config import FailurePolicy, PipelineConfig
from ._errors import add_note
from ._task import FINAL_STATES, Task, TaskState, flatten_tasks
from ._watchdog import Watchdog, format_holder

logger = logging.getLogger(__name__)

__all__ = ["Pipeline", "ProgressCallback", "RunOutcomes"]

ProgressCallback = Callable[[int, int], None]


class Pipeline:
    """A graph of tasks run together, with a failure policy and a watchdog.

    Build the graph with :func:`make_task` and :meth:`Task.depends_on`,
    name its entry points with :meth:`set_source` and its result with
    :meth:`set_destination`, then call :meth:`execute`. The pipeline runs
    every task connected to its sources and destination, following
    dependencies both up and down. A pipeline runs once.

    Args:
        config: The settings; a copy is taken, so later changes to
            ``config`` do not affect this pipeline. ``None`` uses the
            defaults of :class:`PipelineConfig`.

    Raises:
        ValueError: ``config`` sets a timeout while the watchdog is off.
    """

    def __init__(self, config: PipelineConfig | None = None) -> None:
        config = copy.copy(config) if config is not None else PipelineConfig()
        config.validate()
        self._config = config
        self._sources: list[Task] = []
        self._destination: Task | None = None
        self._progress: ProgressCallback | None = None
        self._ran = False
        self._holders: list[HubHolder] = []

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r}>"

    @property
    def name(self) -> str:
        """The name set with :meth:`PipelineConfig.with_name`."""
        return self._config.name

    @property
    def config(self) -> PipelineConfig:
        """This pipeline's own copy of its settings."""
        return self._config

    def set_source(self, tasks: Any) -> Pipeline:
        """Set the tasks the pipeline starts from, replacing earlier ones.

        Args:
            tasks: A :class:`Task`, a :class:`~greenpipe.graph.TaskGroup`, a
                :class:`~greenpipe.graph.TaskGraph`, or an iterable of them.

        Returns:
            This pipeline, so calls chain.

        Raises:
            TypeError: Something in ``tasks`` is not a task.
            ValueError: The same task appears twice.
        """
        sources = flatten_tasks(tasks, "set_source()")
        seen: set[Task] = set()
        for task in sources:
            if task in seen:
                raise ValueError(
                    f"task {task.name!r} was added twice to pipeline {self.name!r}"
                )
            seen.add(task)
        self._sources = sources
        return self

    def set_destination(self, task: Task) -> Pipeline:
        """Set the task whose value :meth:`execute` returns.

        Raises:
            TypeError: ``task`` is not a :class:`Task`.
        """
        if not isinstance(task, Task):
            raise TypeError(f"set_destination() takes a Task, not {task!r}")
        self._destination = task
        return self

    def set_progress_callback(self, callback: ProgressCallback | None) -> Pipeline:
        """Call ``callback(completed, total)`` as tasks reach a final state.

        ``completed`` counts the tasks that succeeded, failed, were
        cancelled or were skipped; ``total`` is the number of tasks of the
        run. The callback runs in a worker thread of the pipeline (with the
        Dask backend, in the thread that called :meth:`execute`), one call
        at a time, with ``completed`` growing; every call happens before
        :meth:`execute` returns. It must not block. An exception it raises
        is logged at ERROR and the callback is not called again.

        Raises:
            TypeError: ``callback`` is not callable.
        """
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        self._progress = callback
        return self

    def tasks(self) -> list[Task]:
        """Return the tasks of the pipeline in a dependency order.

        Raises:
            ValueError: The pipeline has no tasks.
        """
        seeds = list(self._sources)
        if self._destination is not None and self._destination not in seeds:
            seeds.append(self._destination)
        if not seeds:
            raise ValueError(
                f"pipeline {self.name!r} has no tasks; call set_source() or "
                "set_destination() first"
            )
        found: dict[Task, None] = {}
        queue = deque(seeds)
        while queue:
            task = queue.popleft()
            if task in found:
                continue
            found[task] = None
            queue.extend(task._parents)
            queue.extend(task._children)
        return _topological_order(list(found), self.name)

    def hub_holders(self) -> list[HubHolder]:
        """Return the hub-holding reports of the last run, longest per task."""
        return list(self._holders)

    def execute(self) -> Any:
        """Run every task of the pipeline and wait for the end.

        Blocking: blocks the calling thread (a gevent greenlet parks) until
        every task has ended. With the Dask backend
        (:meth:`PipelineConfig.with_backend`) the tasks run on the cluster
        and this call waits for their outcomes; ``docs/dask.md`` lists what
        differs there. Call it from a plain thread or from a gevent
        greenlet. From a task of another executor, offload it with
        ``scope.spawn_io(pipeline.execute)``, or that executor may take the
        wait for a deadlock.

        Returns:
            The destination's value, or ``None`` without a destination.

        Raises:
            ValueError: The pipeline has no tasks.
            RuntimeError: The pipeline or one of its tasks has already run.
            PipelineTimeoutError: The global timeout passed.
            TaskTimeoutError: A task ran past the per-task timeout.
            DeadlockError: Every task waited and nothing could wake them,
                or they waited past the deadlock timeout.
            BaseException: Under the fail-fast policy, the first failure of
                a task, with a note naming the task. Under the continue
                policy, one failure as itself and several as an exception
                group.
        """
        if self._ran:
            raise RuntimeError(
                f"pipeline {self.name!r} has already run; build a new pipeline to run again"
            )
        order = self.tasks()
        for task in order:
            if task._pipeline is not None or task.state is not TaskState.PENDING:
                raise RuntimeError(
                    f"task {task.name!r} has already run; create new tasks for a new run"
                )
        self._ran = True
        for task in order:
            task._pipeline = self
        config = self._config
        if config.backend == "dask":
            # Imported here so that Dask is loaded only when it is used.
            from ..dask._client import execute_on_dask

            return execute_on_dask(self, order)

        logger.debug(
            "pipeline %r: running %d tasks on %d threads", self.name, len(order), config.threads
        )
        executor = Executor(config.threads, rng=config.rng, clock=config.clock, name=config.name)
        try:
            run = _Run(self, order, executor)
            return run.execute()
        finally:
            executor.shutdown()
            logger.debug("pipeline %r: finished", self.name)


def _topological_order(tasks: list[Task], pipeline: str) -> list[Task]:
    """Order ``tasks`` parents first, ties in discovery order (Kahn)."""
    remaining = {task: len(task._parents) for task in tasks}
    ready = deque(task for task in tasks if remaining[task] == 0)
    order = []
    while ready:
        task = ready.popleft()
        order.append(task)
        for child in task._children:
            remaining[child] -= 1
            if remaining[child] == 0:
                ready.append(child)
    if len(order) != len(tasks):  # pragma: no cover - depends_on rejects cycles
        stuck = ", ".join(repr(t.name) for t in tasks if t not in order)
        raise ValueError(f"pipeline {pipeline!r} has a cycle through {stuck}")
    return order


class RunOutcomes:
    """Bookkeeping of task outcomes shared by the local and the Dask runs.

    Subclasses set the attributes below and record each outcome through
    :meth:`_count`, :meth:`_call_error_handler` and
    :meth:`_skip_descendants`. :meth:`_raise_failures` ends the run.
    """

    _pipeline: Pipeline
    _config: PipelineConfig
    _order: list[Task]
    _failures: list[tuple[Task, BaseException]]
    _completed: int
    _progress: ProgressCallback | None
    _on_error: Callable[[str, BaseException], None] | None

    def _skip_descendants(self, failed: Task) -> int:
        skipped = 0
        queue = deque(failed._children)
        while queue:
            task = queue.popleft()
            if task.state is TaskState.PENDING:
                task._skip(f"it depends on task {failed.name!r}, which did not succeed")
                skipped += 1
                queue.extend(task._children)
        return skipped

    def _count(self, finished: int) -> None:
        self._completed += finished
        callback = self._progress
        if callback is None:
            return
        try:
            callback(self._completed, len(self._order))
        except Exception:
            logger.exception(
                "progress callback of pipeline %r failed; it is disabled", self._config.name
            )
            self._progress = None

    def _call_error_handler(self, task: Task, error: BaseException) -> None:
        handler = self._on_error
        if handler is None:
            return
        try:
            handler(task.name, error)
        except Exception:
            logger.exception(
                "error handler of pipeline %r failed; it is disabled", self._config.name
            )
            self._on_error = None

    def _raise_failures(self, stopped_by: BaseException | None) -> None:
        failures = self._failures
        if stopped_by is not None:
            # Tasks cancelled by the stop are not failures of their own.
            failures = [(t, e) for t, e in failures if not isinstance(e, Cancelled)]
        if self._config.failure_policy is FailurePolicy.FAIL_FAST and failures:
            first_task, first = failures[0]
            for task, error in failures[1:]:
                add_note(
                    first,
                    f"task {task.name!r} also failed while the pipeline was stopping: "
                    f"{type(error).__name__}: {error}",
                )
            failures = [(first_task, first)]
        errors = [error for _, error in failures]
        # A SystemExit raised by a task is both its failure and what
        # stopped the run; it is reported once.
        if stopped_by is not None and all(error is not stopped_by for error in errors):
            errors.append(stopped_by)
        if not errors:
            return
        if len(errors) == 1:
            raised = errors[0]
        else:
            message = f"{len(errors)} failures in pipeline {self._config.name!r}"
            if all(isinstance(error, Exception) for error in errors):
                raised = ExceptionGroup(message, errors)
            else:
                raised = BaseExceptionGroup(message, errors)
        for holder in self._pipeline._holders:
            add_note(raised, format_holder(holder))
        raise raised


class _Run(RunOutcomes):
    """The state of one execution of a pipeline."""

    def __init__(self, pipeline: Pipeline, order: list[Task], executor: Executor) -> None:
        self._pipeline = pipeline
        self._config = pipeline._config
        self._order = order
        self._executor = executor
        self._watchdog = Watchdog(self._config, executor, self._on_trip, order)
        self._events: Channel[Task] = Channel(0)
        self._running: dict[Task, SpawnFuture[Any]] = {}
        self._failures: list[tuple[Task, BaseException]] = []
        self._stopping = False
        self._first_failure: Task | None = None
        self._completed = 0
        self._progress = pipeline._progress
        self._on_error = self._config.error_handler
        self._root: SpawnFuture[Any] | None = None
        self._stopped_by: BaseException | None = None

    # -- driving the run -----------------------------------------------------------

    def execute(self) -> Any:
        config = self._config
        root = self._executor.submit(self._schedule, name=f"{config.name} scheduler")
        self._root = root
        if self._watchdog.tripped is not None:
            root.cancel()
        if config.watchdog:
            self._watchdog.start()
        runtime_deadlock: DeadlockError | None = None
        root_error: BaseException | None = None
        interrupted: BaseException | None = None
        try:
            root.result()
        except DeadlockError as error:
            runtime_deadlock = error
        except BaseException as error:
            if root.done():
                root_error = error
            else:
                # The wait itself was interrupted (Ctrl-C raises
                # KeyboardInterrupt here) while the run goes on: stop it so
                # every task's finally blocks run, then re-raise.
                interrupted = error
                root.cancel()
                root.exception()
        finally:
            if config.watchdog:
                self._watchdog.stop()
        self._pipeline._holders = self._watchdog.holders()
        # A root error means that the runtime ended the scheduler itself, for
        # example with a SystemExit that a gevent greenlet raised on a
        # worker. The tasks cancelled on the way count as stopped.
        stopped_by = runtime_deadlock or self._watchdog.tripped or interrupted or root_error
        self._finish_unrecorded(stopped_by)
        if interrupted is not None:
            raise interrupted
        self._raise_failures(stopped_by)
        destination = self._pipeline._destination
        return destination.get() if destination is not None else None

    def _on_trip(self, error: BaseException) -> None:
        # Runs in the watchdog thread or the timekeeper task; never blocks.
        logger.debug("pipeline %r stopped: %s", self._config.name, error)
        root = self._root
        if root is not None:
            root.cancel()

    def _schedule(self, scope: CoroScope) -> None:
        config = self._config
        keeper = None
        if config.watchdog and self._watchdog._virtual and (
            config.global_timeout is not None or config.task_timeout is not None
        ):
            keeper = scope.spawn(self._watchdog.keep_time, name=f"{config.name} timekeeper")
        remaining = {task: len(task._parents) for task in self._order}
        ready = deque(task for task in self._order if remaining[task] == 0)
        try:
            while True:
                while ready and not self._stopping:
                    self._start(scope, ready.popleft())
                if not self._running:
                    break
                task = self._events.receive()
                assert task is not None
                future = self._running.pop(task)
                # Reading a done future is still a cancellation point. A stop
                # arriving now must not cut the recording short, or the
                # outcome of this task, already off the books, would be lost.
                with shield():
                    succeeded = self._record(task, future)
                if succeeded:
                    for child in task._children:
                        remaining[child] -= 1
                        if remaining[child] == 0 and child.state is TaskState.PENDING:
                            ready.append(child)
        finally:
            if keeper is not None:
                keeper.cancel()

    def _start(self, scope: CoroScope, task: Task) -> None:
        values = [parent._value for parent in task._parents]
        task.state = TaskState.RUNNING
        future = scope.spawn(self._run_task, task, values, name=task.name)
        self._running[task] = future
        future.add_done_callback(lambda _future: self._task_done(task))

    def _task_done(self, task: Task) -> None:
        # A done callback: runs in the thread where the task ended, after its
        # children were joined, so the per-task timeout covers that join.
        self._watchdog.task_ended(task)
        self._events.try_send(task)

    def _run_task(self, scope: CoroScope, task: Task, values: list[Any]) -> Any:
        self._watchdog.task_started(task, scope)
        if inspect.isgeneratorfunction(task.fn):
            return coroutine(task.fn)(scope, *values).wait()
        return task.fn(scope, *values)

    # -- outcomes ------------------------------------------------------------------

    def _record(self, task: Task, future: SpawnFuture[Any]) -> bool:
        """Store the outcome of a finished task; return whether it succeeded."""
        error = future.exception()
        if self._watchdog.timed_out(task):
            timeout = self._watchdog.timeout_error(task)
            if error is not None and not isinstance(error, Cancelled):
                timeout.__context__ = error
            self._failed(task, timeout)
        elif future.cancelled():
            stopped = self._stopped_by is not None or self._watchdog.tripped is not None
            if self._stopping or stopped:
                task._cancel(error)
                self._count(1)
            else:
                # Nothing in the pipeline asked for it, so it is a failure:
                # dropping it would hide why the descendants never ran.
                assert error is not None
                self._failed(task, error)
        elif error is not None:
            self._failed(task, error)
        else:
            task._succeed(future.result())
            self._count(1)
            return True
        return False

    def _failed(self, task: Task, error: BaseException) -> None:
        add_note(error, f"raised by task {task.name!r} of pipeline {self._config.name!r}")
        task._fail(error)
        self._failures.append((task, error))
        self._call_error_handler(task, error)
        skipped = 0
        if self._config.failure_policy is FailurePolicy.CONTINUE:
            skipped = self._skip_descendants(task)
        elif not self._stopping:
            self._stopping = True
            self._first_failure = task
            for future in list(self._running.values()):
                future.cancel()
        self._count(1 + skipped)

    def _finish_unrecorded(self, stopped_by: BaseException | None) -> None:
        # After a stop, the scheduler may not have seen every outcome; the
        # root scope joined all tasks, so every future here is done.
        self._stopped_by = stopped_by
        for task, future in list(self._running.items()):
            del self._running[task]
            self._record(task, future)
        if stopped_by is not None:
            # The scheduler may have taken a cancellation caused by the stop
            # for a failure before the stop reached the scheduler itself.
            for task in self._order:
                if task.state is TaskState.FAILED and isinstance(task.error, Cancelled):
                    task._cancel(task.error)
            reason = f"the pipeline stopped: {type(stopped_by).__name__}"
        elif self._first_failure is not None:
            reason = f"the pipeline stopped after task {self._first_failure.name!r} failed"
        else:  # pragma: no cover - every task is recorded or skipped by now
            reason = "the pipeline stopped before the task could start"
        pending = [task for task in self._order if task.state not in FINAL_STATES]
        for task in pending:
            if task.state is TaskState.RUNNING:  # pragma: no cover - never recorded
                task._cancel(None)
            else:
                task._skip(reason)
        if pending:
            self._count(len(pending))
