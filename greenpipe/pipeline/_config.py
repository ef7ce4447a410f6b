"""PipelineConfig: the builder that sets up a pipeline's executor and watchdog."""

from __future__ import annotations

import enum
import importlib.util
import math
import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Optional, Union

__all__ = [
    "BACKENDS",
    "DEFAULT_CANCEL_GRACE",
    "DEFAULT_DEADLOCK_TIMEOUT",
    "DEFAULT_HOLD_THRESHOLD",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_WATCHDOG_INTERVAL",
    "DaskOptions",
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
DEFAULT_CANCEL_GRACE = 10.0

BACKENDS = ("local", "dask")


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


@dataclass(frozen=True)
class DaskOptions:
    """Connection and executor settings of the Dask backend.

    Set them with :meth:`PipelineConfig.with_backend`.

    At most one of ``address``, ``scheduler_file`` and ``client`` is set.
    With none of them, a run uses the current default Dask client.

    Attributes:
        address: The scheduler's address, such as ``"tcp://10.0.0.5:8786"``.
        scheduler_file: Path of the JSON file that ``dask scheduler
            --scheduler-file`` writes.
        client: A connected ``distributed.Client``, which the run borrows
            and never closes.
        task_threads: Worker threads of the executor that runs each task
            body inside a Dask worker.
        cancel_grace: Seconds the client waits, after it cancelled a run,
            for the running bodies to end.
    """

    address: Optional[str] = None
    scheduler_file: Optional[str] = None
    client: Any = None
    task_threads: int = 1
    cancel_grace: float = DEFAULT_CANCEL_GRACE


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
        self.backend = "local"
        self.dask: Optional[DaskOptions] = None

    def __repr__(self) -> str:
        return (
            f"<PipelineConfig {self.name!r} threads={self.threads} "
            f"policy={self.failure_policy.value} backend={self.backend}>"
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
        watchdog off turns all of these checks off, so on the local backend
        it cannot be combined with a global or per-task timeout.

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
                worker thread of the pipeline (with the Dask backend, from
                the thread that called :meth:`Pipeline.execute`), before
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

    def with_backend(
        self,
        name: str,
        *,
        address: str | None = None,
        scheduler_file: str | os.PathLike[str] | None = None,
        client: Any = None,
        task_threads: int = 1,
        cancel_grace: Duration = DEFAULT_CANCEL_GRACE,
    ) -> PipelineConfig:
        """Choose where the tasks run: ``"local"`` (the default) or ``"dask"``.

        The local backend runs every task on one executor in this process.
        The Dask backend submits each task as one Dask task to a
        ``distributed`` cluster, and each body runs on an executor of its
        own inside a Dask worker. ``docs/dask.md`` describes the semantics.
        This call only records the choice: nothing connects and Dask is not
        imported until the pipeline runs.

        With ``"dask"``, give at most one of ``address``, ``scheduler_file``
        and ``client``. With none of them, the run uses the current default
        Dask client (the last ``distributed.Client`` created in this process
        without ``set_as_default=False``, or the worker's client inside a
        Dask task). A client made
        from ``address`` or ``scheduler_file`` is opened for each run and
        closed after it; a given ``client`` is borrowed and left open.

        Args:
            name: ``"local"`` or ``"dask"``.
            address: The Dask scheduler's address.
            scheduler_file: The scheduler file the Dask scheduler wrote.
            client: A connected ``distributed.Client``.
            task_threads: Worker threads of the executor that runs each task
                body on a Dask worker. One is enough for bodies that wait on
                I/O; :meth:`with_compute_threads` applies to the local
                backend only.
            cancel_grace: When a run stops (a failure under the fail-fast
                policy, the global timeout), the client cancels the running
                bodies and waits this long for them to end. A body still
                running then is left to finish on its worker, because Dask
                cannot interrupt a running task, and counts as cancelled.

        Raises:
            ValueError: ``name`` is not a known backend, options are given
                for the local backend, more than one of ``address``,
                ``scheduler_file`` and ``client`` is given, ``task_threads``
                is below 1, or ``cancel_grace`` is not positive.
            TypeError: An option has the wrong type.
            ImportError: ``"dask"`` is chosen but ``distributed`` is not
                installed.
        """
        if name not in BACKENDS:
            choices = ", ".join(repr(backend) for backend in BACKENDS)
            raise ValueError(f"backend must be one of {choices}, not {name!r}")
        options: dict[str, Any] = {
            "address": address,
            "scheduler_file": scheduler_file,
            "client": client,
        }
        options = {key: value for key, value in options.items() if value is not None}
        if name == "local":
            if task_threads != 1:
                options["task_threads"] = task_threads
            if cancel_grace != DEFAULT_CANCEL_GRACE:
                options["cancel_grace"] = cancel_grace
            if options:
                listed = ", ".join(sorted(options))
                raise ValueError(
                    f"the local backend takes no options; remove {listed} "
                    "or use with_backend('dask', ...)"
                )
            self.backend = "local"
            self.dask = None
            return self

        if len(options) > 1:
            raise ValueError(
                "give at most one of address, scheduler_file and client, "
                f"not {' and '.join(sorted(options))}"
            )
        if address is not None and (not isinstance(address, str) or not address):
            raise TypeError(f"address must be a non-empty string, not {address!r}")
        if scheduler_file is not None:
            if not isinstance(scheduler_file, (str, os.PathLike)):
                raise TypeError(
                    f"scheduler_file must be a path (str or os.PathLike), not {scheduler_file!r}"
                )
            scheduler_file = os.fspath(scheduler_file)
        if client is not None and not callable(getattr(client, "submit", None)):
            raise TypeError(f"client must be a distributed.Client, not {client!r}")
        if isinstance(task_threads, bool) or not isinstance(task_threads, int):
            raise TypeError(f"task_threads must be an int, not {task_threads!r}")
        if task_threads < 1:
            raise ValueError(f"task_threads must be >= 1, not {task_threads!r}")
        grace = positive_seconds(cancel_grace, "cancel_grace")
        if importlib.util.find_spec("distributed") is None:
            raise ImportError(
                "the dask backend needs Dask's distributed scheduler, which is not "
                "installed; install it with: pip install 'greenpipe[dask]'"
            )

        self.backend = "dask"
        self.dask = DaskOptions(
            address=address,
            scheduler_file=scheduler_file,
            client=client,
            task_threads=task_threads,
            cancel_grace=grace,
        )
        return self

    def validate(self) -> None:
        """Check that the settings fit together.

        Raises:
            ValueError: A timeout is set while the watchdog of the local
                backend is off, or a clock is set for the Dask backend.
        """
        if self.backend == "dask" and self.clock is not None:
            raise ValueError(
                "with_clock() works only with the local backend, because the "
                "Dask backend measures timeouts in real time on the client and "
                "the workers; remove the clock or use with_backend('local')"
            )
        # The Dask backend enforces its timeouts without the watchdog.
        if self.watchdog or self.backend == "dask":
            return
        for name in ("global_timeout", "task_timeout"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"{name} needs the watchdog, which is off; "
                    "call with_watchdog(True) or remove the timeout"
                )
