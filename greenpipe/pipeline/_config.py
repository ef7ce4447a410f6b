"""PipelineConfig: the builder that sets up a pipeline's executor and watchdog."""

from __future__ import annotations

import enum
import math
import os
import random
from datetime import timedelta
from typing import Any, Callable, Optional, Union

__all__ = [
    "DEFAULT_DEADLOCK_TIMEOUT",
    "DEFAULT_HOLD_THRESHOLD",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_WATCHDOG_INTERVAL",
    "ErrorHandler",
    "FailurePolicy",
    "PipelineConfig",
]

Duration = Union[float, int, timedelta]
ErrorHandler = Callable[[str, BaseException], None]

DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_DEADLOCK_TIMEOUT = 600.0
DEFAULT_WATCHDOG_INTERVAL = 1.0
DEFAULT_HOLD_THRESHOLD = 1.0


class FailurePolicy(enum.Enum):
    """The reaction of a pipeline to a failed task.

    Attributes:
        FAIL_FAST: Cancel the running tasks, skip the ones not started, and
            re-raise the first failure from :meth:`Pipeline.execute`.
        CONTINUE: Skip only the descendants of a failed task, run every
            independent branch to its end, then raise every failure.
    """

    FAIL_FAST = "fail_fast"
    CONTINUE = "continue"


def positive_seconds(value: Any, name: str) -> float:
    """Convert a positive duration (seconds or ``timedelta``) to float seconds.

    Raises:
        TypeError: ``value`` is neither a number nor a ``timedelta``.
        ValueError: ``value`` is zero, negative, NaN or infinite.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"{name} must be a number of seconds or a timedelta, not {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be > 0 seconds, not {value!r}")
    return seconds


def _optional_seconds(value: Any, name: str) -> Optional[float]:
    return None if value is None else positive_seconds(value, name)


class PipelineConfig:
    """Settings of a :class:`Pipeline`, built with chained ``with_*`` calls.

    Every ``with_*`` method checks its value, stores it and returns the
    config itself, so calls chain::

        config = (
            PipelineConfig()
            .with_name("ingest")
            .with_compute_threads(4)
            .with_global_timeout(timedelta(minutes=10))
        )

    Durations are seconds (``int`` or ``float``) or ``timedelta``. A
    timeout of ``None`` means no limit.

    Defaults: ``os.cpu_count()`` threads, the watchdog on (checks every
    second, hub-holding threshold 1 s), no global or per-task timeout, idle
    timeout 300 s, deadlock timeout 600 s, fail-fast failure policy, the
    monotonic clock.

    Threads: a config is a plain object; build it in one thread. A pipeline
    reads it once, when it is created.
    """

    def __init__(self) -> None:
        self.name = "pipeline"
        self.threads: int = os.cpu_count() or 1
        self.watchdog = True
        self.watchdog_interval = DEFAULT_WATCHDOG_INTERVAL
        self.hold_threshold = DEFAULT_HOLD_THRESHOLD
        self.global_timeout: Optional[float] = None
        self.task_timeout: Optional[float] = None
        self.idle_timeout: Optional[float] = DEFAULT_IDLE_TIMEOUT
        self.deadlock_timeout: Optional[float] = DEFAULT_DEADLOCK_TIMEOUT
        self.failure_policy = FailurePolicy.FAIL_FAST
        self.error_handler: Optional[ErrorHandler] = None
        self.clock: Any = None
        self.rng: Optional[random.Random] = None

    def __repr__(self) -> str:
        return (
            f"<PipelineConfig {self.name!r} threads={self.threads} "
            f"policy={self.failure_policy.value}>"
        )

    def with_name(self, name: str) -> PipelineConfig:
        """Set the name used in logs, errors and as the executor's name.

        Raises:
            ValueError: ``name`` is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, not {name!r}")
        self.name = name
        return self

    def with_compute_threads(self, threads: int) -> PipelineConfig:
        """Set the number of worker threads of the pipeline's executor.

        Raises:
            TypeError: ``threads`` is not an ``int``.
            ValueError: ``threads`` is below 1.
        """
        if isinstance(threads, bool) or not isinstance(threads, int):
            raise TypeError(f"threads must be an int, not {threads!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, not {threads!r}")
        self.threads = threads
        return self

    def with_watchdog(
        self,
        enabled: bool = True,
        *,
        interval: Duration | None = None,
        hold_threshold: Duration | None = None,
    ) -> PipelineConfig:
        """Turn the watchdog on or off and set how it checks.

        The watchdog is an OS thread that wakes every ``interval`` seconds
        of real time. It enforces the global and per-task timeouts and the
        idle and deadlock timeouts, and reports tasks that hold their hub
        without switching for more than ``hold_threshold`` seconds. A
        timeout therefore fires at most one interval late, but a task that
        never reaches a blocking call (a busy loop) is only cancelled once
        it does. Turning the
        watchdog off turns all of these checks off, so it cannot be combined
        with a global or per-task timeout.

        Args:
            enabled: Whether the watchdog runs.
            interval: Seconds between checks; unchanged when ``None``.
            hold_threshold: Seconds a task may run without switching before
                it is reported; unchanged when ``None``.

        Raises:
            ValueError: ``interval`` or ``hold_threshold`` is not positive.
        """
        if interval is not None:
            self.watchdog_interval = positive_seconds(interval, "interval")
        if hold_threshold is not None:
            self.hold_threshold = positive_seconds(hold_threshold, "hold_threshold")
        self.watchdog = bool(enabled)
        return self

    def with_global_timeout(self, seconds: Duration | None) -> PipelineConfig:
        """Limit the whole run; ``None`` removes the limit.

        When the limit passes, every running task is cancelled, the rest are
        skipped and :meth:`Pipeline.execute` raises
        :class:`PipelineTimeoutError` naming the tasks that were running.

        Raises:
            ValueError: ``seconds`` is not positive.
        """
        self.global_timeout = _optional_seconds(seconds, "global_timeout")
        return self

    def with_task_timeout(self, seconds: Duration | None) -> PipelineConfig:
        """Limit each task, measured from its own start; ``None`` removes it.

        A task over the limit is cancelled and fails with
        :class:`TaskTimeoutError` naming it; the failure policy decides the
        rest.

        Raises:
            ValueError: ``seconds`` is not positive.
        """
        self.task_timeout = _optional_seconds(seconds, "task_timeout")
        return self

    def with_executor_idle_timeout(self, seconds: Duration | None) -> PipelineConfig:
        """Set when the watchdog warns about a pipeline that stopped moving.

        The pipeline counts as idle while every task of its executor is
        parked (waiting on a timer, a channel, a future) with no offloaded
        call in flight, and nothing happens: no task starts, ends, wakes or
        parks. Tasks waiting inside gevent (sockets, ``gevent.sleep``)
        count as running. After ``seconds`` of real time in that state, the
        watchdog logs a WARNING under the ``greenpipe.pipeline`` logger
        naming the waiting tasks, and the run goes on. ``None`` turns the
        warning off. The default is 300 s.

        Raises:
            ValueError: ``seconds`` is not positive.
        """
        self.idle_timeout = _optional_seconds(seconds, "idle_timeout")
        return self

    def with_executor_deadlock_timeout(self, seconds: Duration | None) -> PipelineConfig:
        """Bound how long the pipeline may stay idle before it is failed.

        Idle is meant as in :meth:`with_executor_idle_timeout`. A deadlock
        where nothing at all could wake the tasks is found by the runtime
        within a fraction of a second and needs no timeout. This limit
        covers the waits the runtime cannot judge, such as tasks parked on
        a long timer or on a channel that a thread outside the executor
        might still feed. When the pipeline stays idle for ``seconds``,
        every task is cancelled and :meth:`Pipeline.execute` raises
        :class:`greenpipe.DeadlockError` listing what each task waits on.
        ``None`` turns the limit off. The default is 600 s.

        Raises:
            ValueError: ``seconds`` is not positive.
        """
        self.deadlock_timeout = _optional_seconds(seconds, "deadlock_timeout")
        return self

    def with_failure_policy(
        self,
        policy: FailurePolicy | str,
        *,
        on_error: ErrorHandler | None = None,
    ) -> PipelineConfig:
        """Choose what happens after a task fails; see :class:`FailurePolicy`.

        Args:
            policy: A :class:`FailurePolicy` or its value, ``"fail_fast"``
                or ``"continue"``.
            on_error: Called as ``on_error(task_name, exception)`` for every
                failed task, in the order the failures were seen, from a
                worker thread of the pipeline, before
                :meth:`Pipeline.execute` returns. An exception it raises is
                logged at ERROR and the handler is not called again.

        Raises:
            ValueError: ``policy`` is not a known policy.
            TypeError: ``on_error`` is not callable.
        """
        try:
            self.failure_policy = FailurePolicy(policy)
        except ValueError:
            choices = ", ".join(repr(p.value) for p in FailurePolicy)
            raise ValueError(f"policy must be one of {choices}, not {policy!r}") from None
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable, not {on_error!r}")
        self.error_handler = on_error
        return self

    def with_clock(self, clock: Any) -> PipelineConfig:
        """Run the pipeline on ``clock``, for example a test's virtual clock.

        With a :class:`greenpipe.testing.VirtualClock`, timeouts are
        measured in virtual time, so tests of a 60 s limit finish at once.
        The watchdog still wakes in real time for the hub-holding check.

        Raises:
            TypeError: ``clock`` has no ``now()`` method.
        """
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise TypeError(f"clock must have a now() method, not {clock!r}")
        self.clock = clock
        return self

    def with_rng(self, rng: random.Random | None) -> PipelineConfig:
        """Use ``rng`` for every scheduling choice of the executor.

        Raises:
            TypeError: ``rng`` is not a ``random.Random``.
        """
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random, not {rng!r}")
        self.rng = rng
        return self

    def validate(self) -> None:
        """Check that the settings fit together.

        Raises:
            ValueError: A timeout is set while the watchdog is off.
        """
        if self.watchdog:
            return
        for name in ("global_timeout", "task_timeout"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"{name} needs the watchdog, which is off; "
                    "call with_watchdog(True) or remove the timeout"
                )
