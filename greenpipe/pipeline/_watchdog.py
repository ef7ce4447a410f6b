"""The pipeline watchdog: timeouts, hub-holding reports, idle and deadlock.

The watchdog is one OS thread per running pipeline. A thread, unlike a
task, keeps running while a busy task holds a hub. It also adds no timer
to the executor, which matters because the runtime's own deadlock detector
stays quiet while any timer is pending. Every ``interval``
seconds of real time it

* asks :meth:`Executor.hub_holders` for tasks that ran longer than the
  hold threshold without switching, logs each hold once at WARNING with the
  task's stack, and keeps the longest hold of each task for the final error;
* checks the global and per-task deadlines against the executor's clock
  and cancels what is over its limit;
* tracks how long every task has been parked with nothing happening, to
  warn after the idle timeout and fail after the deadlock timeout.

A virtual clock only moves when every task is parked, to the next timer,
so a thread that samples it could miss a deadline or see it late. Under a
virtual clock the deadlines are therefore checked by a timekeeper task
that sleeps on the executor's clock until the next deadline, and the
thread keeps the other checks. While the timekeeper has a deadline
pending, the runtime jumps the virtual clock to it instead of declaring a
deadlock, so under a virtual clock a deadlock with a timeout configured
surfaces as that timeout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .._channel import Channel
from .._compat import RealEvent, allocate_lock, monotonic, start_new_thread
from .._errors import DeadlockError
from .._executor import Executor, HubHolder
from ._errors import PipelineTimeoutError, TaskTimeoutError

if TYPE_CHECKING:
    from .._scope import CoroScope
    from ._config import PipelineConfig
    from ._task import Task

logger = logging.getLogger(__name__)

__all__ = ["Watchdog"]

_STOP = ("stop",)
_RECHECK = ("recheck",)


@dataclass
class _Running:
    scope: CoroScope
    started: float


def _executor_epoch(executor: Executor) -> int:
    # Separates "nothing happened" from "a task woke and parked again",
    # which is what the idle check needs.
    return executor.statistics()["events"]  # type: ignore[no-any-return]


def _waiting_tasks_report(executor: Executor) -> list[str]:
    """Return the runtime's deadlock-report lines, one per parked task."""
    return executor.waiting_tasks_report()


def format_holder(holder: HubHolder) -> str:
    """Return the report of one hub-holding task, stack included."""
    return (
        f"task {holder.task_name!r} held its hub (worker {holder.worker}) for "
        f"{holder.seconds:.2f} s without switching; its stack then:\n"
        f"{holder.stack.rstrip()}"
    )


class Watchdog:
    """Watches one run of a pipeline; created and driven by :class:`Pipeline`.

    Threads: :meth:`task_started`, :meth:`task_ended` and the checks are
    safe from any thread. The trip callback runs in the thread that found
    the problem (the watchdog thread or the timekeeper task) and must not
    block.
    """

    def __init__(
        self,
        config: PipelineConfig,
        executor: Executor,
        on_trip: Callable[[BaseException], None],
        order: list[Task],
    ) -> None:
        self._config = config
        self._rank = {task: index for index, task in enumerate(order)}
        self._executor = executor
        self._on_trip = on_trip
        self._virtual = bool(getattr(config.clock, "is_virtual", False))
        self._lock = allocate_lock()
        self._running: dict[Task, _Running] = {}
        self._timed_out: set[Task] = set()
        self._holders: dict[str, HubHolder] = {}
        self._last_hold: dict[tuple[str, int], float] = {}
        self._tripped: BaseException | None = None
        self._started_at = executor.now()
        self._stop = RealEvent()
        self._exited = RealEvent()
        self._exited.set()
        self._wake: Channel[Any] = Channel(0)
        self._idle_since: float | None = None
        self._idle_epoch = -1
        self._idle_warned = False

    # -- state shared with the scheduler --------------------------------------

    @property
    def tripped(self) -> BaseException | None:
        """The global timeout or deadlock that stopped the run, if any."""
        return self._tripped

    def holders(self) -> list[HubHolder]:
        """Return the longest hold seen of each hub-holding task, by name."""
        with self._lock:
            return [self._holders[name] for name in sorted(self._holders)]

    def timed_out(self, task: Task) -> bool:
        """Return whether ``task`` was cancelled for its per-task timeout."""
        with self._lock:
            return task in self._timed_out

    def task_started(self, task: Task, scope: CoroScope) -> None:
        """Record that ``task`` started now and can be cancelled via ``scope``."""
        with self._lock:
            self._running[task] = _Running(scope, self._executor.now())
        if self._virtual and self._config.task_timeout is not None:
            self._wake.try_send(_RECHECK)

    def task_ended(self, task: Task) -> None:
        """Forget ``task``: its deadline no longer applies."""
        with self._lock:
            self._running.pop(task, None)

    def running_names(self) -> list[str]:
        """Return the names of the running tasks, in the pipeline's task order."""
        with self._lock:
            running = sorted(self._running, key=self._rank.__getitem__)
        return [task.name for task in running]

    # -- deadlines ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Return the earliest pending deadline on the executor's clock."""
        config = self._config
        deadlines = []
        if config.global_timeout is not None:
            deadlines.append(self._started_at + config.global_timeout)
        if config.task_timeout is not None:
            with self._lock:
                deadlines.extend(
                    entry.started + config.task_timeout
                    for task, entry in self._running.items()
                    if task not in self._timed_out
                )
        return min(deadlines) if deadlines else None

    def check_deadlines(self, now: float) -> None:
        """Cancel the tasks over their limit, or the run over the global one."""
        config = self._config
        if config.global_timeout is not None and now >= self._started_at + config.global_timeout:
            names = self.running_names()
            running = ", ".join(repr(name) for name in names) or "none"
            self._trip(
                PipelineTimeoutError(
                    f"pipeline {config.name!r} timed out after "
                    f"{config.global_timeout:g} s; running tasks: {running}",
                    pipeline=config.name,
                    seconds=config.global_timeout,
                    running_tasks=names,
                )
            )
            return
        if config.task_timeout is None:
            return
        with self._lock:
            expired = [
                (task, entry)
                for task, entry in self._running.items()
                if task not in self._timed_out and now >= entry.started + config.task_timeout
            ]
            self._timed_out.update(task for task, _ in expired)
        for task, entry in expired:
            # The pipeline's error reports the timeout, so this stays at DEBUG.
            logger.debug(
                "task %r of pipeline %r ran longer than its timeout of %g s; cancelling it",
                task.name,
                config.name,
                config.task_timeout,
            )
            entry.scope.cancel()

    def timeout_error(self, task: Task) -> TaskTimeoutError:
        """Return the failure recorded for a task cancelled by its timeout."""
        seconds = self._config.task_timeout
        assert seconds is not None
        return TaskTimeoutError(
            f"task {task.name!r} of pipeline {self._config.name!r} timed out "
            f"after {seconds:g} s and was cancelled",
            pipeline=self._config.name,
            seconds=seconds,
            task_name=task.name,
        )

    def _trip(self, error: BaseException) -> None:
        with self._lock:
            if self._tripped is not None:
                return
            self._tripped = error
        self._on_trip(error)

    def keep_time(self, scope: CoroScope) -> None:
        """Check deadlines on the executor's clock; the timekeeper task's body.

        Blocking: parks until the next deadline or until :meth:`stop`.
        Used under a virtual clock only; see the module docstring.
        """
        executor = self._executor
        while self._tripped is None:
            deadline = self.next_deadline()
            try:
                if deadline is None:
                    message = self._wake.receive()
                else:
                    message = self._wake.receive(timeout=max(0.0, deadline - executor.now()))
            except TimeoutError:
                message = _RECHECK
            if message is _STOP or message is None:
                return
            self.check_deadlines(executor.now())

    # -- the thread ----------------------------------------------------------------

    def start(self) -> None:
        """Start the watchdog thread."""
        self._exited.clear()
        start_new_thread(self._main, ())

    def stop(self) -> None:
        """Stop the timekeeper and the thread, and wait for the thread to exit.

        Blocking: waits for the thread's current check to end.
        """
        self._wake.close()
        self._stop.set()
        self._exited.wait()

    def _main(self) -> None:
        interval = self._config.watchdog_interval
        try:
            while not self._stop.wait(interval):
                try:
                    self._check_once()
                except Exception:  # pragma: no cover - a bug in the watchdog
                    logger.exception("watchdog of pipeline %r failed", self._config.name)
        finally:
            self._exited.set()

    def _check_once(self) -> None:
        self._check_holders()
        if not self._virtual:
            self.check_deadlines(self._executor.now())
        self._check_idle(monotonic())

    def _check_holders(self) -> None:
        for holder in self._executor.hub_holders(self._config.hold_threshold):
            key = (holder.task_name, holder.worker)
            with self._lock:
                previous = self._last_hold.get(key)
                self._last_hold[key] = holder.seconds
                longest = self._holders.get(holder.task_name)
                if longest is None or holder.seconds > longest.seconds:
                    self._holders[holder.task_name] = holder
            # A hold that is still growing was reported when it began.
            if previous is not None and holder.seconds > previous:
                continue
            logger.warning("pipeline %r: %s", self._config.name, format_holder(holder))

    def _check_idle(self, now: float) -> None:
        config = self._config
        if config.idle_timeout is None and config.deadlock_timeout is None:
            return
        executor = self._executor
        stats = executor.statistics()
        epoch = _executor_epoch(executor)
        idle = (
            stats["live_tasks"] > 0
            and stats["live_tasks"] == stats["blocked_tasks"]
            and stats["io_in_flight"] == 0
        )
        if not idle or epoch != self._idle_epoch or self._idle_since is None:
            self._idle_epoch = epoch
            self._idle_since = now if idle else None
            self._idle_warned = False
            return
        idle_for = now - self._idle_since
        if (
            config.idle_timeout is not None
            and idle_for >= config.idle_timeout
            and not self._idle_warned
        ):
            self._idle_warned = True
            logger.warning(
                "pipeline %r made no progress for %.1f s; every task is waiting:\n%s",
                config.name,
                idle_for,
                "\n".join(_waiting_tasks_report(executor)),
            )
        if config.deadlock_timeout is not None and idle_for >= config.deadlock_timeout:
            lines = [
                f"deadlock in pipeline {config.name!r}: every task waited for "
                f"{idle_for:.1f} s with no progress (deadlock timeout "
                f"{config.deadlock_timeout:g} s)"
            ]
            lines.extend(_waiting_tasks_report(executor))
            self._trip(DeadlockError("\n".join(lines)))
