"""Worker hubs and the parking protocol.

Each worker of an :class:`~greenpipe.Executor` is one OS thread running
gevent's hub for that thread. Tasks are greenlets whose parent is that hub,
so gevent's own blocking calls (``gevent.sleep``, sockets, monkey-patched
modules) park only the calling task, exactly as they would in a gevent
program.

A worker keeps two queues:

* ``runq``: tasks that have not started. The owner pops the newest end and
  idle workers steal from the oldest end. Nothing else ties such a task to a
  thread, so any worker may start it.
* ``ready``: waiters of started tasks that were woken. A started greenlet
  belongs to its thread for good (greenlet forbids switching into it from
  another one), so any thread may append here but only the owner resumes.

Wake-ups from other threads append to ``ready`` and then send one gevent
``async`` watcher signal. The ``_signalled`` flag coalesces them: a burst of
wake-ups costs one signal, and the owner clears the flag before it drains
the queue, so a wake-up that arrives during the drain sends a new signal.

The parking protocol: a task that must wait creates a :class:`Waiter`,
registers it wherever the wake-up will come from (a channel, a future, a
timer) and calls :meth:`Waiter.park`. Whoever wants to wake it first calls
:meth:`Waiter.claim`, an atomic test-and-set, and only the single winner
calls :meth:`Waiter.wake`. A data transfer, a cancellation and a timeout may
race for the same waiter; the claim makes exactly one of them happen, so an
item handed to a waiter is never also reported as a timeout, and a cancelled
waiter never receives an item. Primitives drop waiters that lost the race
when they next pop them.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from greenlet import GreenletExit, getcurrent, greenlet

from ._compat import RealEvent, get_ident, monotonic, perf_counter, thread_local
from ._errors import Cancelled

if TYPE_CHECKING:
    from ._executor import Executor

logger = logging.getLogger(__name__)

_tls = thread_local()

# The plain greenlet switch. gevent's Hub overrides ``switch`` to call the
# current greenlet's ``switch_out`` first; greenpipe's own parks bypass that.
_raw_switch = greenlet.switch

# Idle runner greenlets kept per worker for reuse.
_MAX_FREE_RUNNERS = 64

# Seconds between checks for a pending signal while a plain thread waits.
# gevent's libuv loop checks every 300 ms (SIGNAL_CHECK_INTERVAL_MS in
# gevent/libuv/loop.py). A shorter interval makes Ctrl-C respond sooner.
_SIGNAL_CHECK_INTERVAL = 0.1


class _TimedOut:
    """Sentinel value passed to a waiter whose timeout expired."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TIMED_OUT"


TIMED_OUT: Any = _TimedOut()


class TaskGreenlet(greenlet):
    """The greenlet that runs tasks; ``gp_task`` links to the current one.

    A runner greenlet runs one task after another (see ``Worker._start``).
    ``gp_gevent`` records that the current task parked inside gevent; such
    a greenlet is not reused, because gevent objects of that task (timers,
    waiters) may still refer to it.
    """

    __slots__ = ("gp_task", "gp_gevent")

    def switch_out(self) -> None:
        # gevent calls this just before one of its primitives parks the
        # greenlet (``Hub.switch``). Raising here makes every gevent wait of
        # a cancelled task a cancellation point, like greenpipe's own.
        # greenpipe's parks switch with the raw ``greenlet.switch`` and
        # never come here.
        self.gp_gevent = True
        task = self.gp_task
        if task is not None and task._cancel_flag and not task._shield_depth:
            raise Cancelled(task._cancel_message())


def current_worker() -> Worker | None:
    """Return the worker whose thread is the calling thread, or ``None``."""
    return getattr(_tls, "worker", None)


def current_task() -> Any:
    """Return the task running in the calling greenlet, or ``None``."""
    return getattr(getcurrent(), "gp_task", None)


# ---------------------------------------------------------------------------
# Waiters
# ---------------------------------------------------------------------------


class Waiter:
    """One wait of one caller: the claim token and the delivered outcome.

    Attributes:
        value: The value passed to :meth:`wake`.
        exc: The exception passed to :meth:`wake`, raised by :meth:`park`.
        what: The object waited on, named by deadlock reports.
        undo: Called with the delivered value when the wait ended by an
            exception thrown into the waiting greenlet after a value had
            already been delivered, so the primitive can take it back.
        payload: Data the waiter brings along, such as the item of a
            parked sender.
    """

    __slots__ = ("_token", "value", "exc", "what", "undo", "payload")

    def __init__(self, what: object = None) -> None:
        self._token = [True]
        self.value: Any = None
        self.exc: BaseException | None = None
        self.what = what
        self.undo: Callable[[Any], None] | None = None
        self.payload: Any = None

    def claim(self) -> bool:
        """Take the exclusive right to wake this waiter; never blocks.

        ``list.pop`` is a single atomic operation, so exactly one caller
        across all threads gets ``True``.
        """
        try:
            self._token.pop()
        except IndexError:
            return False
        return True

    def is_claimed(self) -> bool:
        return not self._token

    def try_wake(self, value: Any = None, exc: BaseException | None = None) -> bool:
        """Claim the waiter and wake it; return whether this call won."""
        if not self.claim():
            return False
        self.wake(value, exc)
        return True

    def wake(self, value: Any = None, exc: BaseException | None = None) -> None:
        """Deliver the outcome; only the winner of :meth:`claim` may call it."""
        raise NotImplementedError

    def park(self, timeout: float | None = None, shield: bool = False) -> Any:
        """Block the caller until woken; return the value or raise the error.

        Returns :data:`TIMED_OUT` when ``timeout`` seconds passed first.
        """
        raise NotImplementedError

    def _recover(self) -> None:
        # An exception was thrown into the waiting greenlet. Either it wins
        # the claim (nothing was delivered) or it gives back what was.
        if not self.claim() and self.undo is not None and self.exc is None:
            self.undo(self.value)


class TaskWaiter(Waiter):
    """Waiter of a task running on a worker hub."""

    __slots__ = ("task", "counted", "shield", "external")

    def __init__(self, task: Any, what: object = None) -> None:
        # The base initialiser is inlined: tasks create one waiter per park.
        self._token = [True]
        self.value = None
        self.exc = None
        self.what = what
        self.undo = None
        self.payload = None
        self.task = task
        self.counted = False
        self.shield = False
        # True when the wake-up comes from outside this executor (another
        # executor's task), so the wait does not count toward a deadlock.
        self.external = False

    def wake(self, value: Any = None, exc: BaseException | None = None) -> None:
        self.value = value
        self.exc = exc
        worker: Worker = self.task._worker
        if self.counted:
            worker.executor._note_unblocked()
        worker.resume(self)

    def park(self, timeout: float | None = None, shield: bool = False) -> Any:
        task = self.task
        worker: Worker = task._worker
        executor = worker.executor
        self.shield = shield
        task._waiter = self
        # Cancellation checkpoint. The cancelling side sets the flag before
        # it reads ``task._waiter``, and this side publishes ``_waiter``
        # before it reads the flag, so at least one of them sees the other.
        if not shield and task._cancel_flag and not task._shield_depth and self.claim():
            task._waiter = None
            raise Cancelled(task._cancel_message())

        timer = None
        if timeout is not None:
            timer = executor._call_later(worker, timeout, self._expire)
        if not self.external:
            self.counted = True
            executor._note_blocked()
        try:
            _raw_switch(worker.ghub)
        except BaseException:
            task._waiter = None
            if self.claim():
                if self.counted:
                    executor._note_unblocked()
            elif self.undo is not None and self.exc is None:
                self.undo(self.value)
            raise
        finally:
            if timer is not None:
                timer.cancel()

        task._waiter = None
        if self.exc is not None:
            exc, self.exc = self.exc, None
            raise exc
        return self.value

    def _expire(self) -> None:
        self.try_wake(TIMED_OUT)


class ThreadWaiter(Waiter):
    """Waiter of a plain OS thread: blocks the thread on a real lock."""

    __slots__ = ("_event",)

    def __init__(self, what: object = None) -> None:
        super().__init__(what)
        self._event = RealEvent()

    def wake(self, value: Any = None, exc: BaseException | None = None) -> None:
        self.value = value
        self.exc = exc
        self._event.set()

    def park(self, timeout: float | None = None, shield: bool = False) -> Any:
        try:
            signalled = self._wait_in_slices(timeout)
        except BaseException:
            self._recover()
            raise
        if not signalled and self.claim():
            return TIMED_OUT
        # Woken (or claimed by a waker at the last moment): wait for the value.
        self._event.wait()
        if self.exc is not None:
            raise self.exc
        return self.value

    def _wait_in_slices(self, timeout: float | None) -> bool:
        # Python runs signal handlers only in the main thread, between
        # bytecodes. A signal that the kernel hands to another thread, or
        # ``_thread.interrupt_main()``, does not wake a main thread blocked
        # on a lock, so the wait wakes up now and then to let a pending
        # KeyboardInterrupt surface.
        if timeout is None:
            while not self._event.wait(_SIGNAL_CHECK_INTERVAL):
                pass
            return True
        deadline = monotonic() + timeout
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                return self._event.is_set()
            if self._event.wait(min(remaining, _SIGNAL_CHECK_INTERVAL)):
                return True


class GeventWaiter(Waiter):
    """Waiter of a greenlet that is not a task, on a thread with a gevent hub.

    It parks by switching to that thread's gevent hub, so the other
    greenlets of a gevent program keep running.
    """

    __slots__ = ("_glet", "_ghub", "_ident", "_parked")

    def __init__(self, ghub: Any, what: object = None) -> None:
        super().__init__(what)
        self._glet = getcurrent()
        self._ghub = ghub
        self._ident = get_ident()
        self._parked = False

    def wake(self, value: Any = None, exc: BaseException | None = None) -> None:
        self.value = value
        self.exc = exc
        loop = self._ghub.loop
        if get_ident() == self._ident:
            loop.run_callback(self._resume)
        else:
            loop.run_callback_threadsafe(self._resume)

    def _resume(self) -> None:
        # Runs in the waiter's own hub. A gevent.Timeout or kill may have
        # ended the wait after the wake was queued; then the greenlet is
        # elsewhere and must not be switched into.
        if self._parked:
            self._glet.switch()

    def park(self, timeout: float | None = None, shield: bool = False) -> Any:
        loop = self._ghub.loop
        # A wake-up from another thread arrives as a threadsafe callback,
        # which does not keep the loop running. This watcher does, so gevent
        # does not raise LoopExit while the greenlet waits.
        # NOTE: on the main thread, a SIGINT that the kernel gives to another
        # thread, or _thread.interrupt_main(), is not seen while this loop
        # sleeps, so it does not end the wait. A SIGINT to the main thread does.
        keepalive = loop.async_()
        keepalive.start(_do_nothing)
        timer = None
        if timeout is not None:
            timer = loop.timer(timeout)
            # libev measures a timer from the loop's cached time, which is
            # as old as the loop's last iteration: seconds old on a thread
            # whose hub has not run for a while, so the wait would end early.
            timer.start(self._expire, update=True)
        self._parked = True
        try:
            self._ghub.switch()
        except BaseException:
            self._recover()
            raise
        finally:
            self._parked = False
            keepalive.close()
            if timer is not None:
                timer.close()
        if self.exc is not None:
            raise self.exc
        return self.value

    def _expire(self) -> None:
        self.try_wake(TIMED_OUT)


def _do_nothing() -> None:
    pass


def make_waiter(what: object = None) -> Waiter:
    """Create the right kind of waiter for the calling greenlet.

    Raises:
        RuntimeError: The caller is a gevent hub greenlet, which must never
            block.
    """
    current = getcurrent()
    task = getattr(current, "gp_task", None)
    if task is not None:
        return TaskWaiter(task, what)
    from gevent._hub_local import get_hub_if_exists

    ghub = get_hub_if_exists()
    if ghub is not None:
        if current is ghub:
            raise RuntimeError(
                "cannot block inside the gevent hub greenlet; "
                "spawn a task or a greenlet to wait"
            )
        return GeventWaiter(ghub, what)
    return ThreadWaiter(what)


class ParkingLot:
    """A first-in first-out queue of waiters, the base of every primitive.

    Not thread-safe by itself: callers hold the lock of the primitive that
    owns the lot.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        # Created on the first add: most futures and scopes never get a
        # waiter, and an empty deque costs a whole memory block.
        self._waiters: deque[Waiter] | None = None

    def __len__(self) -> int:
        return len(self._waiters) if self._waiters else 0

    def add(self, waiter: Waiter) -> None:
        if self._waiters is None:
            self._waiters = deque()
        self._waiters.append(waiter)

    def pop_claimed(self) -> Waiter | None:
        """Pop and claim the oldest waiter still unclaimed, or return ``None``."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if waiter.claim():
                return waiter
        return None

    def take_all(self) -> list[Waiter]:
        """Remove every waiter and return those this call claimed."""
        waiters = self._waiters
        if not waiters:
            return []
        claimed = [waiter for waiter in waiters if waiter.claim()]
        waiters.clear()
        return claimed

    def live_waiters(self) -> list[Waiter]:
        if not self._waiters:
            return []
        return [waiter for waiter in self._waiters if not waiter.is_claimed()]


# ---------------------------------------------------------------------------
# Worker
# ---------------------------------------------------------------------------


class LoopProbe:
    """A request to a worker hub to report whether its gevent loop has work.

    The deadlock monitor sends one to every hub before it declares a
    deadlock, and the hub fills it in from its own wake-signal callback.
    There, every gevent greenlet of the thread is suspended at a switch
    point, so each one that can still run is counted. A started watcher or
    a queued callback is in ``activecnt``, and an expired watcher whose
    callback has not run yet is in ``pendingcnt``. Read from the monitor's
    thread instead, the same counters miss a greenlet that is running
    (it keeps the hub busy and has no watcher started). They also miss a
    timer that libev has already stopped while its callback waits for the
    GIL.

    Attributes:
        filled: Set once the hub has filled in ``busy``.
        busy: Whether the loop had more than the worker's own wake-signal
            watcher.
    """

    __slots__ = ("filled", "busy")

    def __init__(self) -> None:
        self.filled = RealEvent()
        self.busy = False

    def fill(self, loop: Any) -> None:
        """Record the gevent work of ``loop``; the caller is the loop's thread."""
        # A loop without these libev counters (libuv) reports no work, as
        # the monitor always assumed for it.
        work = getattr(loop, "activecnt", 1) + getattr(loop, "pendingcnt", 0)
        self.busy = work > 1
        self.filled.set()



def resolve_hub_settings() -> None:
    """Resolve, in the calling thread, the gevent settings a new hub imports.

    After ``gevent.monkey.patch_all()`` the import system's module locks
    are gevent locks. A thread without a hub that waits on one creates a
    hub, and the hub imports its ``format_context`` setting
    (``pprint.saferepr`` by default), so worker threads that make their
    first hubs at once can deadlock on that import. gevent 26.9 resolves
    its ``loop`` setting on import for the same reason, but not this one.
    """
    from gevent import config

    _ = config.loop
    _ = config.format_context


class Worker:
    """One worker thread and its hub.

    Only the owning thread touches ``ghub`` and the tick state; other
    threads use :meth:`resume`, :meth:`signal` and :meth:`post`.
    """

    def __init__(self, executor: Executor, index: int) -> None:
        self.executor = executor
        self.index = index
        self.runq: deque[Any] = deque()
        self.ready: deque[TaskWaiter] = deque()
        self.ghub: Any = None
        self.loop: Any = None
        self.ident: int | None = None
        self.slice_start = 0.0
        self.running: Any = None
        self._free_runners: list[TaskGreenlet] = []
        self.idle = False
        self.tasks_started = 0
        self.steals = 0
        self._signalled = False
        self._probe: LoopProbe | None = None
        self._tick_scheduled = False
        self._async: Any = None
        self._continue_timer: Any = None
        self._started = RealEvent()
        self.stopped = RealEvent()
        self._start_error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.index} of {self.executor.name!r}>"

    # -- thread entry ------------------------------------------------------

    def main(self) -> None:
        """Run the hub of this worker until :meth:`stop`; the thread's body."""
        import gevent
        from gevent.exceptions import LoopExit

        try:
            self.ident = get_ident()
            _tls.worker = self
            self.ghub = gevent.get_hub()
            self.loop = self.ghub.loop
            self._async = self.loop.async_()
            self._async.start(self._on_signal)
            self._continue_timer = self.loop.timer(0.0)
        except BaseException as exc:  # pragma: no cover - start-up failure
            self._start_error = exc
            self._started.set()
            self.stopped.set()
            return
        self._started.set()
        logger.debug("%r started", self)
        try:
            while True:
                try:
                    self.ghub.switch()
                except LoopExit:
                    break
                except BaseException as error:
                    # gevent throws a system error (SystemExit,
                    # KeyboardInterrupt) that one of its greenlets on this
                    # thread raised into the hub's parent, which is this
                    # greenlet. Leaving here would strand every task of
                    # this hub, so the executor fails its root tasks with
                    # the error and this hub keeps running their cleanup.
                    self.executor._worker_error(self, error)
                    continue
                break
        finally:
            _tls.worker = None
            try:
                self.ghub.destroy(destroy_loop=True)
            except BaseException:  # pragma: no cover - a bug in gevent
                logger.exception("destroying the hub of %r failed", self)
            self.ghub = None
            self.loop = None
            logger.debug("%r stopped", self)
            self.stopped.set()

    def wait_started(self) -> None:
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def stop(self) -> None:
        """Ask the worker thread to leave its loop; safe from any thread."""
        self.post(self._stop_in_hub)

    def _stop_in_hub(self) -> None:
        if self._async is not None:
            self._async.stop()
            self._async.close()
            self._async = None
        self._continue_timer.close()
        self._close_runners()
        # Leave the loop the way gevent expects: the hub greenlet then
        # throws LoopExit into main() and ends cleanly when main() destroys
        # it. Switching to main() from here left the hub greenlet
        # suspended in this callback, and with it the worker and its
        # executor, for the life of the process.
        self.loop.break_()

    # -- cross-thread entry points -----------------------------------------

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` in this worker's hub greenlet; safe from any thread."""
        if get_ident() == self.ident:
            self.loop.run_callback(fn)
        else:
            self.loop.run_callback_threadsafe(fn)

    def signal(self) -> None:
        """Wake the hub so it looks at its queues; safe from any thread."""
        if not self._signalled:
            self._signalled = True
            watcher = self._async
            if watcher is not None:
                watcher.send()

    def request_probe(self, probe: LoopProbe) -> None:
        """Have the hub fill in ``probe`` at its next wake signal; safe from any thread."""
        self._probe = probe
        self.signal()

    def resume(self, waiter: TaskWaiter) -> None:
        """Queue a woken waiter for its task; safe from any thread."""
        self.ready.append(waiter)
        if get_ident() == self.ident:
            self.ensure_tick()
        else:
            self.signal()

    def push_new(self, task: Any) -> None:
        """Queue a task that has not started; the caller is this worker's thread."""
        self.runq.append(task)
        self.ensure_tick()

    def ensure_tick(self) -> None:
        """Make sure a tick will run; the caller is this worker's thread."""
        if not self._tick_scheduled:
            self._tick_scheduled = True
            self.loop.run_callback(self._tick)

    # -- the scheduler -----------------------------------------------------

    def _on_signal(self) -> None:
        self._signalled = False
        probe = self._probe
        if probe is not None:
            # Filled in before ensure_tick(), whose callback would count
            # as gevent work of its own.
            self._probe = None
            probe.fill(self.loop)
        self.ensure_tick()

    def _tick(self) -> None:
        # Runs as a gevent callback in the hub greenlet, in rounds. A round
        # resumes the tasks that were woken before it began and starts the
        # tasks that were queued before it began (newest first). Whatever
        # becomes runnable during a round waits for the next one, so a task
        # that yields goes behind every task that was already runnable.
        # NOTE: a tick gives the gevent loop back after one timeslice, so
        # timers and sockets keep being served under load.
        executor = self.executor
        if self.idle:
            executor._leave_idle(self)
        if executor.randomize:
            self._tick_random()
            return
        ready = self.ready
        runq = self.runq
        limit = perf_counter() + executor.timeslice

        try:
            while True:
                woken = len(ready)
                new = len(runq)
                if not woken and not new:
                    stolen = executor._steal_for(self)
                    if stolen is None:
                        break
                    self._start(stolen)
                    continue

                for _ in range(woken):
                    waiter = ready.popleft()
                    task = waiter.task
                    if task._waiter is waiter:
                        self.slice_start = perf_counter()
                        self.running = task
                        task._glet.switch()
                        self.running = None

                for _ in range(new):
                    try:
                        task = runq.pop()
                    except IndexError:  # stolen meanwhile
                        break
                    self._start(task)
                    if self.slice_start > limit:
                        break

                if perf_counter() > limit:
                    self._continue_later()
                    return
        except BaseException:  # pragma: no cover - a bug in the scheduler
            logger.exception("scheduler tick of %r failed", self)
            self._continue_later()
            return
        self._tick_scheduled = False
        executor._enter_idle(self)

    def _continue_later(self) -> None:
        # A zero-delay timer rather than a callback: gevent runs many
        # callbacks in a row before it looks at timers and sockets, so a
        # tick that re-queued itself as a callback could starve them.
        self._continue_timer.start(self._tick)

    def _tick_random(self) -> None:
        # Schedule-fuzzing variant: every step picks uniformly among the
        # woken and the new tasks of this worker, using the executor's rng.
        executor = self.executor
        rng = executor.rng
        ready = self.ready
        runq = self.runq
        try:
            while True:
                total = len(ready) + len(runq)
                if total == 0:
                    stolen = executor._steal_for(self)
                    if stolen is None:
                        break
                    self._start(stolen)
                    continue
                index = rng.randrange(total)
                if index < len(ready):
                    waiter = ready[index]
                    del ready[index]
                    task = waiter.task
                    if task._waiter is waiter:
                        self.slice_start = perf_counter()
                        self.running = task
                        task._glet.switch()
                        self.running = None
                else:
                    index -= len(ready)
                    task = runq[index]
                    del runq[index]
                    self._start(task)
        except BaseException:  # pragma: no cover - a bug in the scheduler
            logger.exception("scheduler tick of %r failed", self)
            self._continue_later()
            return
        self._tick_scheduled = False
        executor._enter_idle(self)

    def _start(self, task: Any) -> None:
        # Starting a new greenlet costs several microseconds in CPython 3.11
        # (its first switch sets up a fresh frame stack), far more than a
        # switch. A finished task's greenlet therefore waits in a free list
        # and runs the next task, as a pool thread would.
        runners = self._free_runners
        glet = None
        while runners:
            glet = runners.pop()
            if not glet.dead:
                break
            glet = None
        if glet is None:
            glet = TaskGreenlet(self._run_tasks, self.ghub)
        glet.gp_task = task
        glet.gp_gevent = False
        task._glet = glet
        task._worker = self
        self.tasks_started += 1
        self.slice_start = perf_counter()
        self.running = task
        glet.switch()
        self.running = None

    def _run_tasks(self) -> None:
        # The body of a runner greenlet: run the task that _start() put in
        # ``gp_task``, then offer the greenlet for the next one. Each task
        # starts in an empty contextvars context, as a new greenlet would.
        glet = getcurrent()
        runners = self._free_runners
        while True:
            task = glet.gp_task
            if task is None:
                # Only _start() switches into an idle runner, after it set
                # ``gp_task``; a stray switch goes straight back to the hub.
                _raw_switch(self.ghub)
                continue
            glet.gr_context = None  # a fresh, empty contextvars context
            task._main()
            task = None  # an idle runner must not keep the finished task alive
            glet.gp_task = None
            if glet.gp_gevent or len(runners) >= _MAX_FREE_RUNNERS:
                return
            runners.append(glet)
            try:
                _raw_switch(self.ghub)
            except BaseException:
                # Something threw into the idle runner (a late kill of the
                # task that finished); end it rather than reuse it.
                if glet in runners:
                    runners.remove(glet)
                return

    def _close_runners(self) -> None:
        # In the hub greenlet: end the idle runners so no greenlet outlives
        # its thread.
        runners, self._free_runners = self._free_runners, []
        # A runner removes itself from this same list as it ends, so iterate
        # over a copy: iterating the list itself skipped every other runner,
        # which then stayed suspended after its thread exited.
        for glet in tuple(runners):
            glet.throw(GreenletExit)


def yield_now(task: Any) -> None:
    """Let the other ready tasks of the hub run, then continue; a checkpoint.

    Raises:
        Cancelled: The task has a pending cancellation.
    """
    worker: Worker = task._worker
    waiter = TaskWaiter(task, "yield")
    waiter.claim()
    task._waiter = waiter
    worker.resume(waiter)
    try:
        _raw_switch(worker.ghub)
    finally:
        task._waiter = None
    if task._cancel_flag and not task._shield_depth:
        raise Cancelled(task._cancel_message())


def check_cancelled(task: Any) -> None:
    """Raise :class:`Cancelled` if ``task`` has a pending, unshielded cancellation."""
    if task._cancel_flag and not task._shield_depth:
        raise Cancelled(task._cancel_message())
