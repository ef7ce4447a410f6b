"""The executor: worker threads, work stealing, timers, idle and deadlock.

Stealing. Every worker owns a deque of tasks that have not started. The
owner takes the newest (good cache behaviour, depth-first spawning) and an
idle worker takes the oldest from a victim (the biggest pieces of work in a
divide-and-conquer tree). ``deque.pop`` and ``deque.popleft`` are atomic,
so owner and thieves need no lock. Victims are visited in an order drawn
from the executor's one :class:`random.Random`, the only source of
scheduling randomness, so a seeded single-thread run repeats exactly.

Idle workers sleep in their gevent loop. A worker that queues a new task
while some worker is idle signals one idle worker (chosen by the same
random generator), which then steals. A worker publishes that it is idle
before it looks at the queues one last time, and a spawner pushes before it
reads the idle count, so a task can never sit in a queue while every worker
sleeps.

Quiescence. The executor counts live tasks, tasks parked at greenpipe
blocking points, pending greenpipe timers, offloaded calls and posted
callbacks under one lock. The monitor thread acts when every live task is
parked and nothing is in flight. It first wakes ``wait_all_blocked()``
callers. Otherwise it moves a virtual clock to the next timer. With no
timer left, and once nothing else happened for a short grace period, it
declares a deadlock.
Tasks parked inside gevent's own primitives (sockets, ``gevent.sleep``)
count as running, because gevent may wake them at any time.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import sys
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ._compat import RealEvent, allocate_lock, monotonic, perf_counter, start_new_thread
from ._errors import DeadlockError, ExecutorShutdownError
from ._hub import (
    LoopProbe,
    ParkingLot,
    TaskWaiter,
    Worker,
    current_task,
    current_worker,
    resolve_hub_settings,
)
from ._util import to_seconds

logger = logging.getLogger(__name__)

_executor_ids = itertools.count(1)

# Most tasks a thief takes from one victim at a time.
_MAX_STEAL_BATCH = 256

# Shortest time in seconds that the deadlock monitor waits for a hub to fill
# in a LoopProbe. An idle hub takes microseconds, so the floor only keeps a
# zero or tiny grace period from reading every hub as busy under load.
_MIN_PROBE_WAIT = 0.05


@dataclass(frozen=True)
class HubHolder:
    """A task that has run for a long time without letting its hub switch.

    Attributes:
        task_name: The task's name.
        worker: Index of the worker whose hub it holds.
        seconds: How long it has run since it was last switched in.
        stack: The worker thread's current stack, formatted.
    """

    task_name: str
    worker: int
    seconds: float
    stack: str


class _RealTimer:
    """A gevent timer on a worker's loop; created and cancelled on that thread."""

    __slots__ = ("_executor", "_watcher", "_callback", "_done")

    def __init__(
        self, executor: Executor, worker: Worker, delay: float, callback: Callable[[], None]
    ) -> None:
        self._executor = executor
        self._callback = callback
        self._done = False
        self._watcher = worker.loop.timer(delay)
        # Measured from the current time, not from the loop's cached time,
        # because a tick that a timer resumed may have run for a timeslice
        # (or longer, when a task keeps the hub) since the loop last ran.
        self._watcher.start(self._fire, update=True)

    def _fire(self) -> None:
        if self._done:
            return
        self._done = True
        self._watcher.close()
        self._executor._timer_removed()
        self._callback()

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self._watcher.close()
            self._executor._timer_removed()


class _VirtualTimer:
    """A timer on the executor's virtual clock, fired by the monitor thread."""

    __slots__ = ("_executor", "deadline", "worker", "callback", "done")

    def __init__(
        self, executor: Executor, worker: Worker, deadline: float, callback: Callable[[], None]
    ) -> None:
        self._executor = executor
        self.deadline = deadline
        self.worker = worker
        self.callback = callback
        self.done = False

    def cancel(self) -> None:
        executor = self._executor
        with executor._lock:
            if self.done:
                return
            self.done = True
            executor._timers -= 1
            executor._epoch += 1


class _IOPool:
    """Real OS threads that run blocking calls offloaded with ``spawn_io``."""

    def __init__(self, max_threads: int, name: str) -> None:
        self._max_threads = max_threads
        self._name = name
        self._lock = allocate_lock()
        self._jobs: deque[Callable[[], None]] = deque()
        self._idle: list[RealEvent] = []
        self._threads = 0
        self._closed = False
        self._all_exited = RealEvent()
        self._all_exited.set()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise ExecutorShutdownError(f"executor {self._name!r} is shut down")
            self._jobs.append(job)
            if self._idle:
                self._idle.pop().set()
                return
            if self._threads >= self._max_threads:
                return
            self._threads += 1
            self._all_exited.clear()
        start_new_thread(self._thread_main, ())

    def _thread_main(self) -> None:
        while True:
            with self._lock:
                if self._jobs:
                    job = self._jobs.popleft()
                elif self._closed:
                    self._threads -= 1
                    if self._threads == 0:
                        self._all_exited.set()
                    return
                else:
                    job = None
                    wakeup = RealEvent()
                    self._idle.append(wakeup)
            if job is None:
                wakeup.wait()
                continue
            job()

    def close(self, timeout: float | None) -> bool:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for wakeup in idle:
            wakeup.set()
        return self._all_exited.wait(timeout)


class Executor:
    """Worker threads with one hub each, running greenpipe tasks.

    Args:
        threads: Number of worker OS threads (default ``os.cpu_count()``).
            They are real threads even after ``gevent.monkey.patch_all()``.
        rng: The random generator behind every scheduling choice (victim
            order, which idle worker to wake). Seed it for repeatable runs.
        clock: ``None`` for the monotonic clock, or a
            :class:`greenpipe.testing.VirtualClock`, which jumps to the next
            timer whenever every task is parked.
        timeslice: Seconds a task may run before ``maybe_yield`` switches
            and before a scheduler tick returns to the gevent loop.
        deadlock_grace: Seconds that the all-parked state must last, with
            nothing happening, before a deadlock is declared; ``None``
            turns detection off. Raise it when a thread that the executor
            does not know of (not a task, not ``spawn_io``) will wake tasks.
        io_threads: Maximum threads for ``spawn_io`` calls.
        randomize: Pick the next task of a worker at random (from ``rng``)
            instead of in queue order: schedule fuzzing for tests. With
            ``threads=1`` and a seeded ``rng`` a run repeats exactly.
        name: A name for logs and reports.

    Raises:
        ValueError: ``threads`` is below 1 or a duration is negative.
    """

    def __init__(
        self,
        threads: int | None = None,
        *,
        rng: random.Random | None = None,
        clock: Any = None,
        timeslice: float = 0.01,
        deadlock_grace: float | None = 0.05,
        io_threads: int | None = None,
        randomize: bool = False,
        name: str | None = None,
    ) -> None:
        if threads is None:
            threads = os.cpu_count() or 1
        if isinstance(threads, bool) or not isinstance(threads, int):
            raise TypeError(f"threads must be an int, not {threads!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, not {threads!r}")
        if io_threads is None:
            io_threads = min(32, (os.cpu_count() or 1) + 4)
        if isinstance(io_threads, bool) or not isinstance(io_threads, int):
            raise TypeError(f"io_threads must be an int, not {io_threads!r}")
        if io_threads < 1:
            raise ValueError(f"io_threads must be >= 1, not {io_threads!r}")
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random instance, not {rng!r}")
        if clock is not None and not (
            getattr(clock, "is_virtual", False) and not isinstance(clock, type)
        ):
            raise TypeError(
                "clock must be None or a greenpipe.testing.VirtualClock instance, "
                f"not {clock!r}"
            )
        self.name = name or f"executor-{next(_executor_ids)}"
        self.timeslice = to_seconds(timeslice, "timeslice") or 0.0
        self.deadlock_grace = to_seconds(deadlock_grace, "deadlock_grace")
        self.rng = rng if rng is not None else random.Random()
        self.randomize = randomize
        self.clock = clock
        self._virtual = bool(getattr(clock, "is_virtual", False))
        if self._virtual:
            clock._attach(self)

        self._lock = allocate_lock()
        # Live tasks in spawn order (a dict, so cancelling them all at a
        # deadlock or shutdown goes in a repeatable order).
        self._tasks: dict[Any, None] = {}
        self._blocked = 0
        self._timers = 0
        self._posts = 0
        self._io = 0
        self._epoch = 0
        self._idle_count = 0
        self._vheap: list[tuple[float, int, _VirtualTimer]] = []
        self._vseq = itertools.count()
        self._idle_lot = ParkingLot()
        self._last_deadlock_epoch = -1
        self._closed = False
        self._quiet = RealEvent()
        self._all_done = RealEvent()
        self._all_done.set()
        self._monitor_stop = False
        self._monitor_exited = RealEvent()
        self._io_pool = _IOPool(io_threads, self.name)

        self._workers = [Worker(self, index) for index in range(threads)]
        # Workers start idle, so the first spawns wake them to steal.
        for worker in self._workers:
            worker.idle = True
        self._idle_count = threads
        resolve_hub_settings()
        for worker in self._workers:
            start_new_thread(worker.main, ())
        for worker in self._workers:
            worker.wait_started()
        start_new_thread(self._monitor_main, ())
        logger.debug("%s started with %d workers", self.name, threads)

    def __repr__(self) -> str:
        return f"<Executor {self.name!r} threads={len(self._workers)}>"

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    @property
    def threads(self) -> int:
        """Number of worker threads."""
        return len(self._workers)

    def now(self) -> float:
        """Return the executor's clock time in seconds."""
        if self._virtual:
            return self.clock.now()
        return monotonic()

    # -- submitting work ---------------------------------------------------

    def submit(self, fn: Any, *args: Any, name: str | None = None) -> Any:
        """Start ``fn(scope, *args)`` as a root task; return its future.

        Never blocks. Safe from any thread.

        Raises:
            ExecutorShutdownError: The executor is shut down.
        """
        from ._scope import CoroScope

        scope = CoroScope._detached(self)
        return scope._spawn(fn, args, name)

    def run(self, fn: Any, *args: Any, name: str | None = None) -> Any:
        """Run ``fn(scope, *args)`` as a root task and wait for its result.

        Blocking: parks the calling greenlet (or blocks the calling thread
        when it has no gevent hub) until the task ends. It must not be
        called from a task of this executor. When the wait itself is
        interrupted (a ``KeyboardInterrupt`` from Ctrl-C, a ``gevent.kill``),
        the task is cancelled and waited for, so its ``finally`` blocks
        have run before that exception reaches the caller.

        Raises:
            DeadlockError: Every task waited with nothing left to wake them.
            BaseException: Whatever the task raised, or whatever
                interrupted the wait.
        """
        if current_worker() is not None and current_worker().executor is self:
            raise RuntimeError(
                "Executor.run() cannot be called from one of its own tasks; "
                "use scope.spawn() or scope.scope() there"
            )
        future = self.submit(fn, *args, name=name)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                future.cancel()
                future.exception()
            raise

    def open_scope(self) -> Any:
        """Return a :class:`CoroScope` for code that is not a task.

        Use it as a context manager from a plain thread or a gevent
        greenlet: tasks spawned in it run on this executor, and leaving the
        block joins them, raising their unretrieved errors.
        """
        from ._scope import CoroScope

        return CoroScope._detached(self)

    def _schedule_new(self, task: Any) -> None:
        """Queue a task that has not started yet; safe from any thread."""
        with self._lock:
            # Checked under the lock that shutdown() also takes, so a task
            # is either rejected or in the set that shutdown cancels.
            if self._closed:
                raise ExecutorShutdownError(
                    f"executor {self.name!r} is shut down; create a new one"
                )
            self._tasks[task] = None
            self._epoch += 1
            if self._all_done._flag:
                self._all_done.clear()
        worker = current_worker()
        if worker is not None and worker.executor is self:
            worker.push_new(task)
            if self._idle_count:
                self._wake_idle(worker)
            return
        worker = self._workers[self.rng.randrange(len(self._workers))]
        worker.runq.append(task)
        worker.signal()
        if self._idle_count:
            self._wake_idle(worker)

    def _wake_idle(self, exclude: Worker) -> None:
        with self._lock:
            idle = [w for w in self._workers if w.idle and w is not exclude]
            if not idle:
                return
            chosen = idle[self.rng.randrange(len(idle))]
            chosen.idle = False
            self._idle_count -= 1
        chosen.signal()

    # -- called by workers -------------------------------------------------

    def _enter_idle(self, worker: Worker) -> None:
        with self._lock:
            if not worker.idle:
                worker.idle = True
                self._idle_count += 1
        # Look once more after publishing idleness: a spawner that pushed
        # before reading the idle count is seen here.
        if worker.ready or any(w.runq for w in self._workers):
            self._leave_idle(worker)
            worker.ensure_tick()

    def _leave_idle(self, worker: Worker) -> None:
        with self._lock:
            if worker.idle:
                worker.idle = False
                self._idle_count -= 1

    def _steal_for(self, thief: Worker) -> Any:
        """Take the oldest half of a victim's queue; return one task to start.

        Taking half at once means a thief that finds a long queue of small
        tasks does not come back (and contend with the owner) for each one.
        The rest go into the thief's own queue, where others may steal them.
        """
        workers = self._workers
        if len(workers) == 1:
            return None
        victims = [w for w in workers if w is not thief and w.runq]
        if not victims:
            return None
        if len(victims) > 1:
            self.rng.shuffle(victims)
        for victim in victims:
            runq = victim.runq
            try:
                task = runq.popleft()
            except IndexError:
                continue
            extra = min(len(runq) // 2, _MAX_STEAL_BATCH)
            stolen = []
            for _ in range(extra):
                try:
                    stolen.append(runq.popleft())
                except IndexError:
                    break
            if stolen:
                # Same order as in the victim's queue, so the thief still
                # takes the newest first and its own thieves the oldest.
                thief.runq.extend(stolen)
            thief.steals += 1 + len(stolen)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%r stole %d tasks from %r", thief, 1 + len(stolen), victim)
            return task
        return None

    # -- counters ----------------------------------------------------------

    def _check_quiet(self) -> None:
        # The caller has acquired ``_lock``.
        if (
            self._tasks
            and len(self._tasks) == self._blocked
            and self._posts == 0
            and self._io == 0
        ):
            self._quiet.set()

    def _note_blocked(self) -> None:
        with self._lock:
            self._blocked += 1
            self._epoch += 1
            if self._blocked == len(self._tasks):
                self._check_quiet()

    def _note_unblocked(self) -> None:
        with self._lock:
            self._blocked -= 1
            self._epoch += 1

    def _task_finished(self, task: Any) -> None:
        with self._lock:
            self._tasks.pop(task, None)
            self._epoch += 1
            if not self._tasks:
                self._all_done.set()
            else:
                self._check_quiet()

    def _io_started(self) -> None:
        with self._lock:
            self._io += 1
            self._epoch += 1

    def _io_finished(self) -> None:
        with self._lock:
            self._io -= 1
            self._epoch += 1
            self._check_quiet()

    def _timer_removed(self) -> None:
        with self._lock:
            self._timers -= 1
            self._epoch += 1

    # -- timers ------------------------------------------------------------

    def _call_later(
        self, worker: Worker, delay: float, callback: Callable[[], None]
    ) -> Any:
        """Run ``callback`` in ``worker``'s hub after ``delay`` clock seconds.

        The caller is ``worker``'s thread. Returns a handle with ``cancel()``,
        which must also be called from that thread.
        """
        with self._lock:
            self._timers += 1
            self._epoch += 1
            if self._virtual:
                timer = _VirtualTimer(self, worker, self.clock.now() + delay, callback)
                heapq.heappush(self._vheap, (timer.deadline, next(self._vseq), timer))
                return timer
        return _RealTimer(self, worker, delay, callback)

    def _post_counted(self, worker: Worker, callback: Callable[[], None]) -> None:
        # Posts a callback that the quiescence check must wait for. The
        # caller has already added it to ``_posts`` under ``_lock``.
        def run() -> None:
            try:
                callback()
            finally:
                with self._lock:
                    self._posts -= 1
                    self._epoch += 1
                    self._check_quiet()

        worker.post(run)

    # -- monitor -----------------------------------------------------------

    def _is_quiescent(self) -> bool:
        return bool(
            self._tasks
            and len(self._tasks) == self._blocked
            and self._posts == 0
            and self._io == 0
        )

    def _monitor_main(self) -> None:
        try:
            while True:
                self._quiet.wait()
                if self._monitor_stop:
                    return
                self._quiet.clear()
                try:
                    self._on_quiet()
                except BaseException:  # pragma: no cover - a bug in the monitor
                    logger.exception("monitor of %s failed", self.name)
        finally:
            self._monitor_exited.set()

    def _on_quiet(self) -> None:
        with self._lock:
            if not self._is_quiescent():
                return
            idle_waiters = self._idle_lot.take_all()
            if not idle_waiters and self._timers and self._virtual:
                due = self._advance_virtual_clock()
            else:
                due = []
            epoch = self._epoch
            timers = self._timers
        if idle_waiters:
            for waiter in idle_waiters:
                waiter.wake(None)
            return
        if due:
            for timer in due:
                self._post_counted(timer.worker, timer.callback)
            return
        if timers or self.deadlock_grace is None or epoch == self._last_deadlock_epoch:
            return
        # Every task is parked with no timer left. Wait out the grace
        # period: a foreign thread or a gevent event may still wake one.
        stop = RealEvent()
        stop.wait(self.deadlock_grace)
        with self._lock:
            if not self._is_quiescent() or self._epoch != epoch or self._timers:
                if self._is_quiescent():
                    self._quiet.set()
                return
        # Probed without holding the lock, which the workers need meanwhile.
        if self._hubs_have_gevent_work():
            # A gevent greenlet on a worker may still wake a task: one in a
            # sleep or a socket wait, or one that is running. Look again
            # after another grace period.
            stop.wait(self.deadlock_grace)
            self._quiet.set()
            return
        with self._lock:
            # A greenlet that the probes saw finishing may have woken a task.
            if not self._is_quiescent() or self._epoch != epoch or self._timers:
                if self._is_quiescent():
                    self._quiet.set()
                return
            report = self._deadlock_report()
            self._last_deadlock_epoch = self._epoch
            tasks = list(self._tasks)
        self._declare_deadlock(report, tasks)

    def _hubs_have_gevent_work(self) -> bool:
        # Each hub fills in its probe from its own thread, because the
        # monitor's thread cannot read the loop counters reliably (see
        # LoopProbe). Greenpipe timers are counted apart and are zero here.
        # A hub that does not fill in its probe in time is running
        # something, so it counts as busy.
        probes = []
        for worker in self._workers:
            if worker.loop is not None:
                probe = LoopProbe()
                worker.request_probe(probe)
                probes.append(probe)
        deadline = monotonic() + max(self.deadlock_grace or 0.0, _MIN_PROBE_WAIT)
        for probe in probes:
            if not probe.filled.wait(max(deadline - monotonic(), 0.0)):
                return True
            if probe.busy:
                return True
        return False

    def _advance_virtual_clock(self) -> list[_VirtualTimer]:
        # The caller has acquired ``_lock``.
        heap = self._vheap
        while heap and heap[0][2].done:
            heapq.heappop(heap)
        if not heap:
            return []
        deadline = heap[0][0]
        if deadline > self.clock.now():
            self.clock._set(deadline)
        now = self.clock.now()
        due = []
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timer.done:
                continue
            timer.done = True
            self._timers -= 1
            self._posts += 1
            due.append(timer)
        self._epoch += 1
        return due

    def waiting_tasks_report(self) -> list[str]:
        """Return one line per live task: its name, what it waits on, and where.

        The lines are those of a :class:`DeadlockError` message. Safe from any
        thread; a task that is running shows "nothing known".
        """
        with self._lock:
            return self._deadlock_report().splitlines()[1:]

    def _deadlock_report(self) -> str:
        lines = [
            f"deadlock in {self.name}: all {len(self._tasks)} tasks are waiting "
            "and nothing can wake them"
        ]
        for task in sorted(self._tasks, key=lambda t: t._seq):
            waiter = task._waiter
            what = "nothing known" if waiter is None else describe(waiter.what)
            lines.append(f"  task {task.name!r} waits on {what} at {task._location()}")
        return "\n".join(lines)

    def _declare_deadlock(self, report: str, tasks: list[Any]) -> None:
        logger.debug("%s", report)
        self._fail_roots(DeadlockError(report), tasks)

    def _fail_run(self, error: BaseException) -> bool:
        """End the run with ``error``: a SystemExit or KeyboardInterrupt.

        Like asyncio, which lets these two leave the event loop (see
        ``Task.__step`` in ``asyncio/tasks.py``), greenpipe treats them as a
        request to stop the program rather than as the failure of one task.
        Every live task is cancelled and the root tasks raise ``error`` to
        their callers, even when a sibling of the task that raised it would
        otherwise keep its scope open forever. A root task raises ``error``
        alone, without the failures of other tasks that end meanwhile, as
        it does after a deadlock. Safe from any thread. Returns whether any
        task was still alive.
        """
        with self._lock:
            tasks = list(self._tasks)
        self._fail_roots(error, tasks)
        return bool(tasks)

    def _worker_error(self, worker: Worker, error: BaseException) -> None:
        """Fail the run with ``error``, which escaped ``worker``'s gevent hub.

        The caller is ``worker``'s thread, right after gevent threw the
        error out of its hub.
        """
        if not self._fail_run(error):
            logger.error(
                "%r: a gevent greenlet raised %s after every task had ended",
                worker,
                type(error).__name__,
                exc_info=(type(error), error, error.__traceback__),
            )

    def _fail_roots(self, error: BaseException, tasks: list[Any]) -> None:
        # The tasks directly under a detached scope (from submit(), run() or
        # open_scope()) carry the error to whoever waits on them; then
        # every task is cancelled so its finally blocks run.
        for task in tasks:
            parent = task._parent_scope
            if parent._task is None:
                task._executor_error = error
                parent._executor_error = error
        for task in tasks:
            task.cancel()

    # -- offloading --------------------------------------------------------

    def _run_io(self, job: Callable[[], None]) -> None:
        self._io_started()

        def run() -> None:
            try:
                job()
            finally:
                self._io_finished()

        try:
            self._io_pool.submit(run)
        except BaseException:
            self._io_finished()
            raise

    # -- introspection -----------------------------------------------------

    def hub_holders(self, threshold: float) -> list[HubHolder]:
        """Return the tasks that have run without switching for ``threshold`` s.

        A task that holds its hub that long (a busy loop, a blocking call
        that was not offloaded) stalls every other task of that worker.
        Safe from any thread; the stacks are captured as they are now.
        """
        holders = []
        frames = sys._current_frames()
        now = perf_counter()
        for worker in self._workers:
            task = worker.running
            if task is None:
                continue
            held = now - worker.slice_start
            if held < threshold:
                continue
            frame = frames.get(worker.ident)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
            holders.append(HubHolder(task.name, worker.index, held, stack))
        return holders

    # -- statistics and shutdown ------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """Return a snapshot of the scheduler's counters.

        ``events`` counts every spawn, park, wake-up, finished task, timer
        and offloaded call so far. An unchanged value between two snapshots
        means that nothing happened in between.
        """
        with self._lock:
            return {
                "events": self._epoch,
                "threads": len(self._workers),
                "live_tasks": len(self._tasks),
                "blocked_tasks": self._blocked,
                "pending_timers": self._timers,
                "io_in_flight": self._io,
                "idle_workers": self._idle_count,
                "tasks_started": [w.tasks_started for w in self._workers],
                "steals": [w.steals for w in self._workers],
            }

    def shutdown(self, *, timeout: float = 10.0) -> None:
        """Cancel what still runs, wait for it, and stop the threads.

        Blocking: waits until every task has ended. Each remaining task is
        cancelled in its own thread, so its ``finally`` blocks run. Tasks
        still alive after ``timeout`` seconds get ``GreenletExit`` thrown in
        and are logged at ERROR. A task waiting for a ``spawn_io`` call
        cannot end before the call returns, because a running call cannot be
        interrupted. Safe to call more than once.
        """
        if current_task() is not None and current_worker() in self._workers:
            raise RuntimeError("Executor.shutdown() cannot be called from its own task")
        wait = to_seconds(timeout, "timeout")
        if self._closed and not self._workers:
            return
        with self._lock:
            self._closed = True
            remaining = list(self._tasks)
        for task in remaining:
            task.cancel()
        if not self._all_done.wait(wait):
            with self._lock:
                stuck = list(self._tasks)
                offloaded = self._io
            logger.error(
                "%s: %d tasks still running %.1f s after cancellation "
                "(%d offloaded calls in flight, which cannot be interrupted): %s",
                self.name,
                len(stuck),
                wait,
                offloaded,
                ", ".join(task.name for task in stuck),
            )
            for task in stuck:
                task._force_exit()
            self._all_done.wait(wait)
        self._monitor_stop = True
        self._quiet.set()
        self._monitor_exited.wait(timeout)
        for worker in self._workers:
            worker.stop()
        for worker in self._workers:
            worker.stopped.wait(timeout)
        if not self._io_pool.close(wait):
            logger.warning(
                "%s: offloaded calls still running after shutdown; their "
                "threads end when the calls return",
                self.name,
            )
        if self._virtual:
            self.clock._detach(self)
        self._workers = []
        logger.debug("%s shut down", self.name)


def describe(what: object) -> str:
    """Return the text a deadlock report uses for a waited-on object."""
    describe_fn = getattr(what, "_describe_wait", None)
    if describe_fn is not None:
        return describe_fn()
    if isinstance(what, str):
        return what
    return repr(what)


def run(
    fn: Any,
    *args: Any,
    threads: int | None = None,
    rng: random.Random | None = None,
    clock: Any = None,
    deadlock_grace: float | None = 0.05,
    randomize: bool = False,
) -> Any:
    """Run ``fn(scope, *args)`` on a fresh executor and return its result.

    Blocking: the caller waits for the root task (a gevent greenlet parks
    cooperatively, a plain thread blocks). The executor is shut down before
    this returns, so no thread or task outlives the call.

    Args:
        fn: The root task body, a plain or generator function.
        threads: Worker threads (default ``os.cpu_count()``).
        rng: Random generator for scheduling choices.
        clock: ``None`` or a :class:`greenpipe.testing.VirtualClock`.
        deadlock_grace: See :class:`Executor`.
        randomize: See :class:`Executor`.

    Raises:
        DeadlockError: Every task waited with nothing left to wake them.
        BaseException: Whatever ``fn`` raised.
    """
    with Executor(
        threads,
        rng=rng,
        clock=clock,
        deadlock_grace=deadlock_grace,
        randomize=randomize,
    ) as executor:
        return executor.run(fn, *args)


def wait_blocked_lot(executor: Executor) -> TaskWaiter:
    """Register the calling task to be woken when every task is parked."""
    task = current_task()
    if task is None or task._worker.executor is not executor:
        raise RuntimeError("wait_all_blocked() must be called from a task")
    waiter = TaskWaiter(task, "wait_all_blocked()")
    with executor._lock:
        executor._idle_lot.add(waiter)
    return waiter
