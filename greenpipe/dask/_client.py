"""The client side of the Dask backend: one pipeline run on a cluster.

A run submits the whole graph at once, one Dask task per pipeline task, so
the scheduler places tasks near their inputs and values move between
workers without passing through the client. Keys read
``"<pipeline>/<task>-<run id>"``, with ``#2``, ``#3`` after task names that
repeat. Every future reports its end through a done callback into one
queue, which the calling thread drains in batches. For each batch it
fetches the values with one ``gather`` and records each outcome. It also
calls the progress callback and applies the failure policy, as the local
scheduler does.

Which task failed. Dask hands a task's exception to all its dependents. A
body's own failure arrives as :class:`~greenpipe.dask._worker.TaskFailure`
carrying the key of the task it came from. An error of Dask itself (a
killed worker) belongs to the task whose parents all succeeded. An error
inherited from an ancestor is ignored: the ancestor's own outcome skips
its descendants, or stops the run.

Stopping a run (the first failure under the fail-fast policy, the global
timeout, an exception in the calling thread). The client asks every worker
to cancel the run's running bodies, which answer with the keys they
cancelled. Every other unfinished task is cancelled through Dask and
counts as skipped. The client then waits up to the cancel grace for the
running bodies to report, and releases the ones that do not.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import uuid
from typing import TYPE_CHECKING, Any, Iterator

from .._compat import monotonic
from .._errors import Cancelled
from ..pipeline._config import DaskOptions, FailurePolicy
from ..pipeline._errors import PipelineTimeoutError, TaskTimeoutError, add_note
from ..pipeline._pipeline import RunOutcomes
from ..pipeline._task import FINAL_STATES, Task, TaskState
from ._patching import check_unpatched
from ._remote import dumps_by_value, restore
from ._worker import TaskFailure, TaskSpec, cancel_run, run_task

if TYPE_CHECKING:
    from ..pipeline._pipeline import Pipeline

logger = logging.getLogger(__name__)

__all__ = ["connect", "execute_on_dask", "task_keys"]


def task_keys(order: list[Task], pipeline: str, run_id: str) -> dict[Task, str]:
    """Return a readable, unique Dask key for each task of a run."""
    keys = {}
    uses: dict[str, int] = {}
    for task in order:
        count = uses.get(task.name, 0) + 1
        uses[task.name] = count
        name = task.name if count == 1 else f"{task.name}#{count}"
        keys[task] = f"{pipeline}/{name}-{run_id}"
    return keys


@contextlib.contextmanager
def connect(options: DaskOptions) -> Iterator[Any]:
    """Yield the client that ``options`` names; close it after if it was opened here.

    Raises:
        GeventPatchedError: This process is patched by ``gevent.monkey``.
        ImportError: ``distributed`` is not installed.
        ValueError: No client is given and there is no default client.
    """
    check_unpatched()
    try:
        import distributed
    except ImportError as error:
        raise ImportError(
            "the dask backend needs Dask's distributed scheduler, which is not "
            "installed; install it with: pip install 'greenpipe[dask]'"
        ) from error

    if options.client is not None:
        yield options.client
        return
    if options.address is not None or options.scheduler_file is not None:
        client = distributed.Client(
            options.address,
            scheduler_file=options.scheduler_file,
            set_as_default=False,
        )
        try:
            yield client
        finally:
            client.close()
        return
    try:
        client = distributed.get_client()
    except ValueError:
        raise ValueError(
            "the dask backend found no Dask client; pass address=, scheduler_file= "
            "or client= to with_backend('dask', ...), or create a distributed.Client "
            "before execute()"
        ) from None
    yield client


def execute_on_dask(pipeline: Pipeline, order: list[Task]) -> Any:
    """Run the tasks of ``pipeline`` on its Dask cluster; see ``Pipeline.execute``."""
    options = pipeline.config.dask
    assert options is not None
    pipeline._holders = []
    with connect(options) as client:
        logger.debug(
            "pipeline %r: running %d tasks on Dask scheduler %s",
            pipeline.name,
            len(order),
            client.scheduler.address,
        )
        run = _DaskRun(pipeline, order, client, options)
        return run.execute()


class _DaskRun(RunOutcomes):
    """The state of one execution of a pipeline on a Dask cluster."""

    def __init__(self, pipeline: Pipeline, order: list[Task], client: Any, options: DaskOptions) -> None:
        self._pipeline = pipeline
        self._config = pipeline.config
        self._order = order
        self._client = client
        self._options = options
        self._run_id = uuid.uuid4().hex
        self._keys = task_keys(order, self._config.name, self._run_id)
        self._tasks = {key: task for task, key in self._keys.items()}
        self._futures: dict[str, Any] = {}
        self._pending: set[str] = set()
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._failures: list[tuple[Task, BaseException]] = []
        self._completed = 0
        self._progress = pipeline._progress
        self._on_error = self._config.error_handler
        self._stopping = False
        self._stopped_by: BaseException | None = None
        self._first_failure: Task | None = None
        self._grace_deadline: float | None = None
        self._skip_reason = ""
        # Keys whose error came from an ancestor not recorded yet.
        self._inherited: set[str] = set()

    # -- driving the run -----------------------------------------------------------

    def execute(self) -> Any:
        timeout = self._config.global_timeout
        deadline = None if timeout is None else monotonic() + timeout
        self._submit()
        try:
            self._drive(deadline)
        except BaseException:
            self._abandon()
            raise
        finally:
            self._futures.clear()
        self._raise_failures(self._stopped_by)
        destination = self._pipeline._destination
        return destination.get() if destination is not None else None

    def _submit(self) -> None:
        config = self._config
        specs = [
            TaskSpec(
                run_id=self._run_id,
                key=self._keys[task],
                task_name=task.name,
                pipeline=config.name,
                fn=task.fn,
                timeout=config.task_timeout,
                threads=self._options.task_threads,
            )
            for task in self._order
        ]
        blobs = _pickle_specs(specs, self._order, config.name)
        graph = {
            self._keys[task]: (run_task, blob, *(self._keys[parent] for parent in task._parents))
            for task, blob in zip(self._order, blobs)
        }
        keys = [self._keys[task] for task in self._order]
        # NOTE: tasks stay PENDING until their outcome arrives, because Dask
        # does not report to the client when a task starts.
        futures = self._client.get(graph, keys, sync=False)
        for key, future in zip(keys, futures):
            self._futures[key] = future
            self._pending.add(key)
        for future in futures:
            future.add_done_callback(self._done.put)

    def _drive(self, deadline: float | None) -> None:
        while self._pending:
            limit = self._grace_deadline if self._stopping else deadline
            wait = None if limit is None else max(0.0, limit - monotonic())
            try:
                first = self._done.get(timeout=wait)
            except queue.Empty:
                if self._stopping:
                    self._release_stragglers()
                    return
                self._stop(self._timeout_error)
                continue
            batch = [first]
            while True:
                try:
                    batch.append(self._done.get_nowait())
                except queue.Empty:
                    break
            self._handle(batch)

    def _handle(self, batch: list[Any]) -> None:
        batch = [future for future in batch if future.key in self._pending]
        finished = [future for future in batch if future.status == "finished"]
        values: dict[str, Any] = {}
        if finished:
            try:
                gathered = self._client.gather(finished)
            except Exception:
                # One of them was lost or failed since; fetch one by one.
                gathered = [_result_or_error(future) for future in finished]
            values = {future.key: value for future, value in zip(finished, gathered)}
        for future in batch:
            if future.key not in self._pending:
                continue
            value = values.get(future.key, _MISSING)
            if isinstance(value, _Errored):
                self._record_error(future, value.error, value.traceback)
            elif value is not _MISSING:
                self._settle(future.key)
                self._tasks[future.key]._succeed(value)
                self._count(1)
            elif future.status == "cancelled":
                self._record_cancelled(future)
            elif future.status == "error" and future.exception() is not None:
                self._record_error(future, future.exception(), future.traceback())
            else:
                # Its result was lost with a worker and the scheduler runs it
                # again: its next outcome comes through the callback.
                future.add_done_callback(self._done.put)

    # -- outcomes ------------------------------------------------------------------

    def _settle(self, key: str) -> None:
        self._pending.discard(key)

    def _record_cancelled(self, future: Any) -> None:
        task = self._tasks[future.key]
        self._settle(future.key)
        if self._stopping:
            task._cancel(None)
            self._count(1)
            return
        self._failed(
            task,
            Cancelled(
                f"task {task.name!r} was cancelled through Dask, not by its pipeline; "
                "the key was probably released by another client or the scheduler restarted"
            ),
        )

    def _record_error(self, future: Any, error: BaseException, traceback: Any) -> None:
        task = self._tasks[future.key]
        if isinstance(error, TaskFailure):
            inherited = error.key != future.key
        else:
            inherited = any(parent.state is not TaskState.SUCCEEDED for parent in task._parents)
        if inherited:
            # The ancestor's own outcome decides: it skips its descendants,
            # or it stopped the run, which skips what did not run.
            if self._stopping:
                self._settle(future.key)
                task._skip(self._skip_reason)
                self._count(1)
            else:
                self._inherited.add(future.key)
            return

        self._settle(future.key)
        if isinstance(error, TaskFailure):
            self._record_failure(task, error)
            return
        if traceback is not None and error.__traceback__ is None:
            error = error.with_traceback(traceback)
        self._failed(task, error)

    def _record_failure(self, task: Task, failure: TaskFailure) -> None:
        error = restore(failure.record) if failure.record is not None else None
        if failure.kind == "timeout":
            timeout = self._timeout_of(task)
            if error is not None and not isinstance(error, Cancelled):
                timeout.__context__ = error
            self._failed(task, timeout)
        elif failure.kind == "cancelled" or (
            self._stopped_by is not None and isinstance(error, Cancelled)
        ):
            task._cancel(error)
            self._count(1)
        else:
            assert error is not None
            self._failed(task, error)

    def _failed(self, task: Task, error: BaseException) -> None:
        add_note(error, f"raised by task {task.name!r} of pipeline {self._config.name!r}")
        task._fail(error)
        self._failures.append((task, error))
        self._call_error_handler(task, error)
        skipped = 0
        if self._config.failure_policy is FailurePolicy.CONTINUE:
            skipped = self._skip_descendants(task)
            for descendant in _descendants(task):
                if descendant.state is TaskState.SKIPPED:
                    self._settle(self._keys[descendant])
        elif not self._stopping:
            self._first_failure = task
            self._count(1)
            self._stop(None)
            return
        self._count(1 + skipped)

    def _timeout_of(self, task: Task) -> TaskTimeoutError:
        seconds = self._config.task_timeout
        assert seconds is not None
        return TaskTimeoutError(
            f"task {task.name!r} of pipeline {self._config.name!r} timed out "
            f"after {seconds:g} s and was cancelled",
            pipeline=self._config.name,
            seconds=seconds,
            task_name=task.name,
        )

    def _timeout_error(self, running: list[Task]) -> BaseException:
        config = self._config
        assert config.global_timeout is not None
        names = [task.name for task in running]
        listed = ", ".join(repr(name) for name in names) or "none"
        return PipelineTimeoutError(
            f"pipeline {config.name!r} timed out after {config.global_timeout:g} s; "
            f"running tasks: {listed}",
            pipeline=config.name,
            seconds=config.global_timeout,
            running_tasks=names,
        )

    # -- stopping ------------------------------------------------------------------

    def _stop(self, make_error: Any) -> None:
        """Cancel the run: the running bodies cooperatively, the rest through Dask.

        ``make_error`` builds the error that stopped the run from the tasks
        that were running; ``None`` for a failure under fail-fast.
        """
        self._stopping = True
        running_keys = self._cancel_bodies()
        running = [task for task in self._order if self._keys[task] in running_keys]
        if make_error is not None:
            self._stopped_by = make_error(running)
            reason = f"the pipeline stopped: {type(self._stopped_by).__name__}"
        else:
            assert self._first_failure is not None
            reason = f"the pipeline stopped after task {self._first_failure.name!r} failed"
        self._skip_reason = reason
        logger.debug("pipeline %r: stopping; %s", self._config.name, reason)

        # A future that is done already keeps its outcome, which is in the
        # batch being handled or waiting in the queue.
        queued = {
            key
            for key in self._pending
            if key not in running_keys and not self._futures[key].done()
        }
        if queued:
            self._client.cancel([self._futures[key] for key in queued])
        skipped = 0
        for task in self._order:
            key = self._keys[task]
            if (key in queued or key in self._inherited) and task.state not in FINAL_STATES:
                self._settle(key)
                task._skip(reason)
                skipped += 1
        if skipped:
            self._count(skipped)
        self._grace_deadline = monotonic() + self._options.cancel_grace

    def _cancel_bodies(self) -> set[str]:
        """Cancel the run's bodies on every worker; return the keys that ran."""
        try:
            replies = self._client.run(cancel_run, self._run_id, on_error="return")
        except Exception as error:
            logger.warning(
                "pipeline %r: could not ask the Dask workers to cancel run %s: %s",
                self._config.name,
                self._run_id,
                error,
            )
            return set()
        running: set[str] = set()
        for worker, reply in replies.items():
            if isinstance(reply, BaseException):
                logger.warning(
                    "pipeline %r: Dask worker %s did not cancel run %s: %s",
                    self._config.name,
                    worker,
                    self._run_id,
                    reply,
                )
                continue
            running.update(reply)
        return running & self._pending

    def _release_stragglers(self) -> None:
        stuck = [task for task in self._order if self._keys[task] in self._pending]
        logger.warning(
            "pipeline %r: %d tasks still running %g s after their cancellation: %s; "
            "their Dask futures are released, and each keeps its worker thread busy "
            "until its body returns",
            self._config.name,
            len(stuck),
            self._options.cancel_grace,
            ", ".join(repr(task.name) for task in stuck),
        )
        self._client.cancel([self._futures[self._keys[task]] for task in stuck])
        for task in stuck:
            self._settle(self._keys[task])
            task._cancel(None)
        self._count(len(stuck))

    def _abandon(self) -> None:
        # The calling thread got an exception (KeyboardInterrupt, say): stop
        # the work on the cluster and leave the tasks in a final state.
        try:
            self._cancel_bodies()
            if self._pending:
                self._client.cancel([self._futures[key] for key in self._pending])
        except Exception:
            logger.exception("pipeline %r: failed to cancel run %s", self._config.name, self._run_id)
        for task in self._order:
            if task.state not in FINAL_STATES:
                task._cancel(None)
        self._pending.clear()


class _Errored:
    __slots__ = ("error", "traceback")

    def __init__(self, error: BaseException, traceback: Any) -> None:
        self.error = error
        self.traceback = traceback


_MISSING = object()


def _result_or_error(future: Any) -> Any:
    try:
        return future.result()
    except Exception as error:
        return _Errored(error, future.traceback())


def _descendants(task: Task) -> Iterator[Task]:
    seen: set[Task] = set()
    stack = list(task._children)
    while stack:
        child = stack.pop()
        if child in seen:
            continue
        seen.add(child)
        yield child
        stack.extend(child._children)


def _pickle_specs(specs: list[TaskSpec], order: list[Task], pipeline: str) -> list[bytes]:
    try:
        return dumps_by_value(specs, [spec.fn for spec in specs])
    except Exception:
        pass
    # Find the task that cannot be pickled, to name it.
    blobs = []
    for spec, task in zip(specs, order):
        try:
            blobs.extend(dumps_by_value([spec], [spec.fn]))
        except Exception as error:
            raise TypeError(
                f"task {task.name!r} of pipeline {pipeline!r} cannot be sent to Dask "
                f"workers: its function or a global it uses cannot be pickled "
                f"({type(error).__name__}: {error}); make the function take such "
                "objects as values or create them inside the task body"
            ) from error
    return blobs
