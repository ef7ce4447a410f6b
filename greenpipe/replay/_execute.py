"""The operation executor: replays one stream's calls on real files.

Descriptors. A trace names files by path (or path hash) and, in the older
writer generations, by descriptor number. Each traced process gets a
:class:`ProcessTable` shared by its threads' streams. A handle is found by
its traced descriptor number when the event has one; newest-generation
traces record no descriptor numbers, so a handle is found by
``(pid, tid, path)`` instead, then by ``(pid, path)`` in any thread of the
process. When nothing matches but the event names a path, the replayer
opens that path itself and counts an implicit open: streams run
concurrently, so a thread may read a descriptor before the thread that
opened it has replayed its ``open``.

Positions. Every data call is issued with ``pread``/``pwrite`` at a file
position the replayer tracks per handle (starting at 0, advanced by what
the call moved, set by ``lseek``/``fseek``), so streams sharing a handle
never race on the kernel's file offset.

Limits. The real descriptors of all streams stay under the process's
``RLIMIT_NOFILE``: past it the least recently used idle one is closed
and reopened on its next use (see ``_descriptors``).

Bytes. Reads ask for the traced request (``count``, or ``size * count``
for ``fread``); writes write that many bytes of the ``--data`` kind
(zeros by default), because traces record sizes, never data. With
``--verify``, each write and each read holds its file's lock in the
:class:`~greenpipe.replay._data.Verifier` across its system call (see
``_data``).

Timing. ``asap`` issues each call as soon as the previous one of its
stream ends. Open-loop timing (``original``) gives every call a due time,
``t0 + (ts - ts0) / speed``, where ``ts0`` is the earliest traced start
of the whole replay and ``t0`` one instant on a monotonic clock shared by
every stream (and, through a wall-clock epoch, by every worker process).
Due times are computed from that origin, never by adding gaps, so a late
call does not delay the calls after it and no drift builds up. Closed-loop
timing (``think``) issues a call when the previous call of its stream
ended plus the traced think time between the two, divided by the speed.
How late each call starts is recorded, split into the part spent waiting
for the stream's previous call to end ("busy") and the rest ("replayer").
"""

from __future__ import annotations

import dataclasses
import errno
import heapq
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from .._compat import allocate_lock
from .._scope import sleep as _sleep
from ..trace import Event
from . import _calls as calls
from ._data import DataSource, Verifier, path_key, write_key
from ._descriptors import DescriptorCache, Handle, ProcessTable, default_open_limit
from ._order import OrderGates, OrderTracker, Step, namespace_kind
from ._sandbox import PathSandbox, SandboxError
from ._summary import MISMATCH_BYTES, MISMATCH_CLASS, SANDBOX_REASON, StreamStats

if TYPE_CHECKING:
    from ._emit import TraceEmitter
    from ._series import SeriesCollector

logger = logging.getLogger(__name__)

_perf_counter = time.perf_counter

#: Largest single system call issued for a data call; bigger requests are
#: split so buffers stay bounded.
MAX_CHUNK = 16 * 1024 * 1024
#: Events each stream holds back to run them in start-time order.
DEFAULT_REORDER_WINDOW = 256


#: Data calls whose ``ret`` counts items of ``size`` bytes, not bytes.
_ITEM_OPS = frozenset(("fread", "fwrite"))

#: Timing modes: no waiting, open-loop, closed-loop.
TIMING_MODES = ("asap", "original", "think")
#: A timed stream sleeps until this many seconds before a due time, then
#: yields to the other tasks until the due time has passed. The event loop
#: wakes sleepers at about 1 ms granularity: with gevent 26.9 on Linux, a
#: lone 0.3 ms sleep lasted about 1.1 ms.
SPIN_SECONDS = 0.002


@dataclasses.dataclass(frozen=True)
class Timeline:
    """The traced time span of the events of a replay, in trace microseconds.

    Timed replays schedule every event from ``first_ts``, the earliest
    start over all replayed files, so that all streams, files and
    processes share one time origin.

    Attributes:
        first_ts: earliest start time.
        last_ts: latest start time.
        last_end: latest end time (``ts + dur``).
    """

    first_ts: int
    last_ts: int
    last_end: int

    def span_us(self) -> int:
        """Return the microseconds from the first start to the last end."""
        return max(self.last_end - self.first_ts, 0)



class ByteBudget:
    """A cap on the bytes moved by all streams together (``--max-bytes``).

    Threads: safe from any thread.
    """

    def __init__(self, limit: Optional[int]) -> None:
        self.limit = limit
        self._used = 0
        self._lock = allocate_lock()

    def take(self, nbytes: int) -> bool:
        """Reserve ``nbytes``; return ``False`` once the cap is reached."""
        if self.limit is None:
            return True
        with self._lock:
            if self._used + nbytes > self.limit:
                return False
            self._used += nbytes
            return True


class ReplayContext:
    """State shared by the streams of one replay.

    Attributes:
        sandbox: the root and its safe operations.
        budget: the ``--max-bytes`` cap.
        mode: ``"asap"``, ``"original"`` or ``"think"``.
        speed: ``None`` for ``asap``, else the factor by which traced gaps
            are divided (1.0 keeps them).
        window: events each stream holds back for reordering.
        descriptors: the real descriptors, recycled past ``max_open``.
        gates: the lock and the waiting of the ordering gates.
        tracker: counts the calls that broke a trace order dependency.
        data: the bytes that writes write.
        verifier: the record of writes that reads are checked against,
            or ``None`` when reads are not checked.
        series: where the streams fold their time series, or ``None``
            to collect none.
        emitter: where the streams write the replay's own trace, or
            ``None``.
        ts0: the traced start time (microseconds) that ``t0`` stands for.
        t0: the clock time at which the call traced at ``ts0`` is due.
        clock: the monotonic time source of the pacing, in seconds.
        sleep: pauses the calling task for some seconds of ``clock``.

    Args:
        mode: the timing mode; by default ``"original"`` when ``speed``
            is given and ``"asap"`` otherwise.
        max_open: most traced files open at once; by default what
            ``RLIMIT_NOFILE`` leaves (:func:`default_open_limit`).
        data: the bytes that writes write; zeros by default.
        verify: check reads against the writes replayed before them;
            needs ``data`` of the ``pattern`` kind.
        timeline: the traced span of the whole replay. ``ts0`` is its
            first start, and the first and last 1 % of it delimit the
            calls whose lateness measures drift. Without it, ``ts0`` is
            the first call that a stream paces, and drift is not measured.
        start: the value of ``t0``; by default the clock time of the first
            paced call.
        clock, sleep: by default :func:`time.monotonic` and greenpipe's
            :func:`~greenpipe.sleep`; tests pass a virtual clock.
        spin: seconds before a due time from which a stream yields instead
            of sleeping. The default is :data:`SPIN_SECONDS` with the
            default clock. It is 0 with an injected clock, because a
            virtual clock does not move while a task yields.
    """

    def __init__(
        self,
        sandbox: PathSandbox,
        *,
        budget: Optional[ByteBudget] = None,
        speed: Optional[float] = None,
        window: int = DEFAULT_REORDER_WINDOW,
        max_open: Optional[int] = None,
        data: Optional[DataSource] = None,
        verify: bool = False,
        series: Optional[SeriesCollector] = None,
        emitter: Optional[TraceEmitter] = None,
        mode: Optional[str] = None,
        timeline: Optional[Timeline] = None,
        start: Optional[float] = None,
        clock: Optional[Callable[[], float]] = None,
        sleep: Optional[Callable[[float], None]] = None,
        spin: Optional[float] = None,
    ) -> None:
        if verify and (data is None or data.kind != "pattern"):
            raise ValueError("verify needs pattern data: pass data=DataSource('pattern')")
        if mode is None:
            mode = "asap" if speed is None else "original"
        if mode not in TIMING_MODES:
            raise ValueError(f"mode must be one of {', '.join(TIMING_MODES)}, not {mode!r}")
        if mode != "asap" and speed is None:
            speed = 1.0
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be > 0, not {speed!r}")
        self.sandbox = sandbox
        self.data = data or DataSource()
        self.verifier = Verifier(self.data) if verify else None
        self.series = series
        self.emitter = emitter
        self.budget = budget or ByteBudget(None)
        self.mode = mode
        self.speed = None if mode == "asap" else speed
        #: Seconds of replay per traced microsecond.
        self.scale = 1e-6 / speed if self.speed else 0.0
        self.clock: Callable[[], float] = clock or time.monotonic
        self.sleep: Callable[[float], None] = sleep or _sleep
        if spin is None:
            spin = SPIN_SECONDS if clock is None else 0.0
        self.spin = spin
        self.t0 = start
        self.ts0: Optional[int] = None
        #: Calls traced at or before ``head_until`` (at or after
        #: ``tail_from``) are in the first (last) 1 % of the traced span.
        self.head_until: Optional[int] = None
        self.tail_from: Optional[int] = None
        if timeline is not None:
            self.ts0 = timeline.first_ts
            margin = (timeline.last_ts - timeline.first_ts) // 100
            self.head_until = timeline.first_ts + margin
            self.tail_from = timeline.last_ts - margin
        self.window = max(1, window)
        limit = max_open if max_open is not None else default_open_limit()
        self.descriptors = DescriptorCache(sandbox, limit)
        self.gates = OrderGates()
        self.tracker = OrderTracker(sandbox.display)
        self._tables: Dict[Tuple[str, int], ProcessTable] = {}
        self._lock = allocate_lock()
        self._zeros = memoryview(bytes(64 * 1024))

    def begin(self, ts: int) -> None:
        """Set ``ts0`` to ``ts`` and ``t0`` to now, unless they are set already.

        Threads: safe from any thread; the first caller wins.
        """
        with self._lock:
            if self.ts0 is None:
                self.ts0 = ts
            if self.t0 is None:
                self.t0 = self.clock()

    def table(self, file: str, pid: int) -> ProcessTable:
        """Return the descriptor table of process ``pid`` of trace ``file``."""
        key = (file, pid)
        table = self._tables.get(key)
        if table is None:
            with self._lock:
                table = self._tables.setdefault(key, ProcessTable(self.descriptors.lock))
        return table

    def zeros(self, size: int) -> memoryview:
        """Return ``size`` zero bytes to write (at most :data:`MAX_CHUNK`)."""
        # One attribute, replaced whole, so streams on other threads see
        # either the old view or the new one.
        zeros = self._zeros
        if len(zeros) < size:
            zeros = memoryview(bytes(min(max(size, 2 * len(zeros)), MAX_CHUNK)))
            self._zeros = zeros
        return zeros[:size]

    def close_all(self) -> int:
        """Close every handle left open; return how many there were."""
        with self._lock:
            tables = list(self._tables.values())
        closed = 0
        for table in tables:
            closed += len(table.drain())
        self.descriptors.drain()
        return closed


class StreamPacer:
    """The timing of one stream of a timed replay.

    :meth:`wait` parks the stream until its next call is due and records
    how late the call starts; :meth:`ended` records when a call ended.

    Args:
        anchor_ts: the traced start that the context's ``t0`` stands for
            when the context has no ``ts0``; the first paced call's start
            when ``None``.
    """

    def __init__(
        self, context: ReplayContext, stats: StreamStats, anchor_ts: Optional[int] = None
    ) -> None:
        self.context = context
        self.stats = stats
        self._anchor_ts = anchor_ts
        # Clock times at which the previous call of the stream started and
        # ended, and its traced end, for the busy share of lateness and for
        # think time.
        self._previous_start = 0.0
        self._previous_end: Optional[float] = None
        self._previous_traced_end = 0

    def due(self, ts: int) -> float:
        """Return the clock time at which the call traced at ``ts`` is due."""
        context = self.context
        if context.t0 is None or context.ts0 is None:
            context.begin(ts if self._anchor_ts is None else self._anchor_ts)
        t0 = context.t0
        ts0 = context.ts0
        assert t0 is not None and ts0 is not None
        previous_end = self._previous_end
        if context.mode == "think" and previous_end is not None:
            think = ts - self._previous_traced_end
            return previous_end + (think * context.scale if think > 0 else 0.0)
        # The first call of a stream keeps its place on the common timeline
        # in think mode as well.
        return t0 + (ts - ts0) * context.scale

    def wait(self, ts: int) -> None:
        """Park until the call traced at ``ts`` is due, then record its lateness.

        Blocking: sleeps with the context's ``sleep`` and, within
        ``context.spin`` of the due time, yields with ``sleep(0)``.
        Cancellation: a cancellation point when ``sleep`` is greenpipe's.
        """
        context = self.context
        clock = context.clock
        due = self.due(ts)
        now = clock()
        delay = due - now
        if delay > 0:
            spin = context.spin
            if delay > spin:
                context.sleep(delay - spin)
                now = clock()
            if spin:
                while now < due:
                    context.sleep(0)
                    now = clock()
        self.record(ts, due, now)

    def record(self, ts: int, due: float, start: float) -> None:
        """Record that the call traced at ``ts``, due at ``due``, started at ``start``.

        The lateness is the part of ``start - due`` above 0. The share of
        it during which the stream's previous call was running counts as
        busy, the rest as the replayer's. A stream that runs behind its
        schedule therefore shows the delay that put it behind as the
        replayer's, and only the calls' own run times as busy.
        """
        lateness = start - due if start > due else 0.0
        busy = 0.0
        previous_end = self._previous_end
        if previous_end is not None and previous_end > due:
            busy = min(previous_end - max(due, self._previous_start), lateness)
        replayer = lateness - busy
        self._previous_start = start
        stats = self.stats
        stats.lateness_replayer.add(replayer)
        stats.lateness_busy.add(busy)
        context = self.context
        head_until = context.head_until
        if head_until is not None:
            if ts <= head_until:
                stats.lateness_head.add(replayer)
            tail_from = context.tail_from
            if tail_from is not None and ts >= tail_from:
                stats.lateness_tail.add(replayer)

    def ended(self, end: float, traced_end: int) -> None:
        """Record that the stream's current call ended at clock time ``end``.

        ``traced_end`` is its traced ``ts + dur``.
        """
        self._previous_end = end
        self._previous_traced_end = traced_end
        t0 = self.context.t0
        assert t0 is not None
        self.stats.end_offset = end - t0


def _reason(exc: OSError) -> str:
    if isinstance(exc, SandboxError):
        return SANDBOX_REASON
    if exc.errno is not None:
        return errno.errorcode.get(exc.errno, f"errno {exc.errno}")
    return type(exc).__name__


class StreamRunner:
    """Replays the calls of one traced (process, thread) stream in order.

    :meth:`run` takes batches of events from a channel, holds up to
    ``context.window`` of them in a heap keyed by start time, and executes
    the oldest whenever the heap is full, then the rest at the end.

    Threads: a runner is used by one task only.
    """

    def __init__(
        self, context: ReplayContext, stats: StreamStats, anchor_ts: Optional[int] = None
    ) -> None:
        self.context = context
        self.stats = stats
        self.table = context.table(stats.file, stats.pid)
        self._buffer = bytearray(64 * 1024)
        self._view = memoryview(self._buffer)
        self._paced = context.mode != "asap"
        self._pacer = StreamPacer(context, stats, anchor_ts)
        self._last_ts: Optional[int] = None
        # Handles held during the current call; released when it ends.
        self._held: List[Handle] = []
        # Set for the current call: whether it failed when traced, the
        # bytes it moved or, for lseek, the resulting offset, and the traced
        # path of the handle it used (older traces give a descriptor only).
        self._traced_failed = False
        self._ret: Optional[int] = None
        self._moved: Optional[int] = None
        self._handle_path: Optional[str] = None
        # The path an open used (openat joins two), and whether the current
        # call found its file missing; both for the order tracker.
        self._call_path: Optional[str] = None
        self._missing = False
        # Position of the current call in this stream, for its trace order.
        self._sequence = 0
        # Data key of each traced path, for ``pattern`` and ``random`` data.
        self._keys: Dict[str, int] = {}
        # Filled only for --report and --emit-trace; see _observe.
        self._recorder = None if context.series is None else context.series.recorder(stats.file)
        self._emitter = (
            None
            if context.emitter is None
            else context.emitter.stream(stats.pid, stats.tid, context.sandbox.display)
        )
        self._observing = self._recorder is not None or self._emitter is not None
        self._ops: Dict[str, Callable[[Event, str], None]] = {
            "open": self._open,
            "openat": self._open,
            "creat": self._open,
            "fopen": self._open,
            "close": self._close,
            "fclose": self._close,
            "read": self._read,
            "pread": self._read,
            "fread": self._read,
            "write": self._write,
            "pwrite": self._write,
            "fwrite": self._write,
            "lseek": self._seek,
            "fseek": self._seek,
            "ftell": self._tell,
            "fsync": self._fsync,
            "ftruncate": self._ftruncate,
            "fstat": self._fstat,
            "truncate": self._path_call,
            "stat": self._path_call,
            "access": self._path_call,
            "mkdir": self._path_call,
            "rmdir": self._path_call,
            "unlink": self._path_call,
            "remove": self._path_call,
            "rename": self._path_call,
            "opendir": self._path_call,
        }

    # -- the stream loop ------------------------------------------------------

    def run(self, batches: Iterable[List[Event]], maybe_yield: Callable[[], None]) -> None:
        """Execute every event of ``batches`` in start-time order within the window.

        Blocking: iterating ``batches`` (a channel) parks while it is empty;
        replayed calls block in system calls; ``original`` timing sleeps.
        Cancellation: ``maybe_yield`` and the channel are cancellation
        points; a cancelled stream stops between two calls.
        """
        heap: List[Tuple[int, int, Event]] = []
        window = self.context.window
        sequence = 0
        execute = self.execute
        push = heapq.heappush
        pushpop = heapq.heappushpop
        try:
            for batch in batches:
                for event in batch:
                    item = (event.ts, sequence, event)
                    sequence += 1
                    if len(heap) < window:
                        push(heap, item)
                    else:
                        # One step instead of a push and a pop; an event older
                        # than all held ones comes straight back.
                        execute(pushpop(heap, item)[2])
                maybe_yield()
            while heap:
                self.execute(heapq.heappop(heap)[2])
                maybe_yield()
        finally:
            self.finish()

    def finish(self) -> None:
        """Hand over this stream's series and emitted events; call once at its end."""
        if self._recorder is not None:
            self._recorder.finish(self.context.sandbox.display)
            self._recorder = None
        if self._emitter is not None:
            self._emitter.flush()
            self._emitter = None
        self._observing = False

    def run_ordered(
        self,
        batches: Iterable[List[Union[Event, Step]]],
        maybe_yield: Callable[[], None],
    ) -> None:
        """Execute the events of ``batches`` in the order they come, each after its step.

        The dispatcher of ``--order resource`` and ``global`` sends each
        event inside the :class:`Step` it must wait for, or alone when it
        waits for nothing. Events come in dispatch order, so nothing is
        reordered here.

        Blocking: parks on the channel while it is empty and on a step's
        gates until the calls it depends on have ended. Cancellation: both
        are cancellation points; a cancelled stream stops between two
        calls and releases the gates of the call it was waiting to run.
        """
        gates = self.context.gates
        stats = self.stats
        try:
            for batch in batches:
                for item in batch:
                    if item.__class__ is not Step:
                        self.execute(item)  # type: ignore[arg-type]
                        continue
                    step: Step = item  # type: ignore[assignment]
                    try:
                        if step.waits and gates.wait(step):
                            stats.order_waits += 1
                        self.execute(step.event)
                    finally:
                        gates.release(step)
                maybe_yield()
        finally:
            self.finish()

    def execute(self, event: Event) -> None:
        """Replay one event and count its outcome and its parity with the trace."""
        name = event.name
        stats = self.stats
        op = calls.classify(event.category, name)
        if op is None:
            stats.skip(name, calls.skip_reason(name))
            return

        args = event.args
        ret = args.get("ret")
        if ret is not None and ret.__class__ is not int:
            ret = calls.arg_int(args, "ret")
        traced_failed = ret is not None and ret < 0
        if traced_failed and not calls.replays_failed_call(op, args):
            stats.skip(name, calls.REASON_FAILED_IN_TRACE)
            return

        if self._last_ts is not None and event.ts < self._last_ts:
            stats.late += 1
        else:
            self._last_ts = event.ts
        paced = self._paced
        if paced:
            self._pace(event)

        replayed = stats.replayed
        short_reads = stats.short_reads
        self._sequence += 1
        self._traced_failed = traced_failed
        self._ret = ret
        self._handle_path = None
        self._call_path = None
        self._missing = False
        observing = self._observing
        if observing:
            read_before = stats.bytes_read
            written_before = stats.bytes_written
            started_ns = time.perf_counter_ns()
        try:
            try:
                self._ops[op](event, op)
            finally:
                self._release_held()
                if paced:
                    self._end_paced(event)
        except SandboxError as exc:
            # Rejected before any system call, so there is no outcome to compare.
            where = self.context.sandbox.display(event.path) if event.path else "?"
            stats.fail(name, SANDBOX_REASON, f"{name} {where}: {exc.strerror or exc}")
            return
        except (OSError, OverflowError) as exc:
            if isinstance(exc, OverflowError):
                # A traced size or offset too large for size_t or off_t never
                # reaches the kernel, so count it as the kernel's EOVERFLOW.
                exc = OSError(errno.EOVERFLOW, os.strerror(errno.EOVERFLOW))
            self._count_error(event, op, ret, exc)
            self._track(event, op, short_reads)
            if observing:
                self._observe(event, op, ret, started_ns, None, 0, 0)
            return

        if stats.replayed == replayed:
            return  # skipped inside the operation, with its reason
        self._track(event, op, short_reads)
        if observing:
            self._observe(
                event,
                op,
                ret,
                started_ns,
                stats.last_seconds,
                stats.bytes_read - read_before,
                stats.bytes_written - written_before,
            )
        if ret is None:
            stats.parity_no_ret += 1
        elif traced_failed:
            self._mismatch(event, MISMATCH_CLASS, f"failure (ret {ret})", "success")
        elif op in calls.BYTE_OPS:
            expected = calls.done_size(op, args) if op in _ITEM_OPS else ret
            if expected is None or expected == self._moved:
                stats.parity_match += 1
            else:
                self._mismatch(event, MISMATCH_BYTES, f"{expected} bytes", f"{self._moved} bytes")
        elif op == "lseek" and ret != self._moved:
            self._mismatch(event, MISMATCH_BYTES, f"offset {ret}", f"offset {self._moved}")
        else:
            stats.parity_match += 1

    def _track(self, event: Event, op: str, short_reads: int) -> None:
        """Give an executed call to the order tracker, once per path it used."""
        path = self._call_path or event.path or self._handle_path
        if path is None:
            return
        tracker = self.context.tracker
        stats = self.stats
        short = stats.short_reads != short_reads
        kind = namespace_kind(op, event.args)
        tracker.record(stats, event, op, path, kind=kind, short=short, missing=self._missing)
        if op == "rename":
            target = second_path(event)
            if target is not None and target != path:
                tracker.record(stats, event, op, target, kind="rename", missing=self._missing)

    def _observe(
        self,
        event: Event,
        op: str,
        ret: Optional[int],
        started_ns: int,
        seconds: Optional[float],
        read: int,
        written: int,
    ) -> None:
        """Record an executed call in the series and the emitted trace.

        ``ret`` is the traced result. ``seconds`` is the duration of the
        replayed system call, or ``None`` when the call failed; the
        emitted event then spans the whole attempt.
        """
        end_ns = time.perf_counter_ns()
        path = event.path or self._handle_path
        recorder = self._recorder
        if recorder is not None:
            recorder.record(event, op, ret, path, end_ns, seconds, read, written)
        emitter = self._emitter
        if emitter is None:
            return
        second = None
        if op == "openat":
            path = _openat_path(event)
        elif op == "rename":
            second = second_path(event)
        if seconds is None:
            duration = end_ns - started_ns
            result: Optional[int] = -1
        else:
            duration = int(seconds * 1e9)
            result = _replay_ret(op, event.args, self._moved)
        emitter.emit(event, path, second, end_ns - duration, duration, result)

    def _count_error(self, event: Event, op: str, ret: Optional[int], exc: OSError) -> None:
        """Count a call that raised ``exc`` when replayed."""
        name = event.name
        stats = self.stats
        if ret is not None and ret < 0:
            stats.reproduce_failure(name)
            return
        if isinstance(exc, FileNotFoundError) and op in calls.PROBE_OPS and ret is None:
            stats.probes_not_found += 1
            stats.done(name, 0.0)
            stats.parity_no_ret += 1
            return

        reason = "ENOENT" if isinstance(exc, FileNotFoundError) else _reason(exc)
        self._missing = reason == "ENOENT"
        path = event.path or self._handle_path
        where = self.context.sandbox.display(path) if path else "?"
        message = "No such file or directory" if reason == "ENOENT" else exc.strerror or exc
        stats.fail(name, reason, f"{name} {where}: {message}")
        if ret is None:
            stats.parity_no_ret += 1
        else:
            self._mismatch(event, MISMATCH_CLASS, f"success (ret {ret})", reason)

    def _mismatch(self, event: Event, kind: str, expected: str, got: str) -> None:
        key = event.path or self._handle_path or "?"
        cause = self.stats.causes.get(key)
        # The mapped path is needed once per traced path, not per mismatch.
        path = cause[2] if cause is not None else self.context.sandbox.display(key)
        self.stats.mismatch(kind, event.ts, event.name, key, path, expected, got)

    def _pace(self, event: Event) -> None:
        self._pacer.wait(event.ts)

    def _end_paced(self, event: Event) -> None:
        self._pacer.ended(self.context.clock(), event.ts + event.dur)

    # -- descriptors ----------------------------------------------------------

    def _release_held(self) -> None:
        held = self._held
        while held:
            handle = held.pop()
            if self.table.release(handle):
                self.context.descriptors.close(handle)

    def _fd(self, handle: Handle) -> int:
        """Return the real descriptor of a held handle, reopening it if recycled."""
        return self.context.descriptors.use(handle, self.stats)

    def _handle(self, event: Event, op: str, stdio: bool) -> Optional[Handle]:
        """Find the handle of a descriptor call, opening the path if needed.

        The handle stays held until the current call ends.
        """
        fd = event.args.get("fd")
        if fd is not None and fd.__class__ is not int:
            fd = calls.arg_int(event.args, "fd")
        handle = self.table.find(stdio, event.tid, fd, event.path)
        if handle is not None:
            self._held.append(handle)
            self._handle_path = handle.path
            return handle
        if event.path is None:
            reason = calls.REASON_UNKNOWN_FD if fd is not None else calls.REASON_NO_TARGET
            self.stats.skip(event.name, reason)
            return None
        if op in ("close", "fclose"):
            self.stats.skip(event.name, calls.REASON_UNKNOWN_FD)
            return None

        # Open for writing even for a read: later calls of the trace may
        # write through the same descriptor. Fall back to reading only where
        # writing is not allowed (a folder, a file with other hard links).
        writing = op in calls.WRITE_OPS or op == "ftruncate"
        flags = os.O_RDWR
        try:
            real_fd = self.context.descriptors.open(event.path, flags)
        except (IsADirectoryError, PermissionError):
            if writing:
                raise
            flags = os.O_RDONLY
            real_fd = self.context.descriptors.open(event.path, flags)
        handle = Handle(real_fd, event.path, False, stdio, fd, event.tid, flags)
        handle.users = 1
        self._held.append(handle)
        self._register(handle)
        self.stats.implicit_opens += 1
        return handle

    def _register(self, handle: Handle) -> None:
        self.context.descriptors.track(handle)
        stale = self.table.add(handle)
        if stale is not None:
            self.context.descriptors.close(stale)

    def _open(self, event: Event, op: str) -> None:
        args = event.args
        path = event.path
        if op == "openat":
            path = _openat_path(event)
        if path is None:
            self.stats.skip(event.name, calls.REASON_NO_TARGET)
            return
        self._call_path = path

        flags = calls.open_flags(op, args)
        mode = calls.open_mode(op, args)
        stdio = op == "fopen"
        started = _perf_counter()
        try:
            # O_APPEND is emulated: on Linux, pwrite on an O_APPEND descriptor
            # ignores its offset, which would break the emulated positions.
            fd = self.context.descriptors.open(path, flags & ~os.O_APPEND, mode)
        except SandboxError as exc:
            if "O_TMPFILE" in str(exc):
                self.stats.skip(event.name, calls.REASON_TMPFILE)
                return
            raise
        elapsed = _perf_counter() - started
        verifier = self.context.verifier
        if verifier is not None and flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
            verifier.truncate(self.context.sandbox.display(path), 0)
        if self._traced_failed:
            # The traced program got no descriptor, so no later call uses it.
            os.close(fd)
            self.stats.done(event.name, elapsed)
            return
        traced_fd = None if stdio else calls.arg_int(args, "ret")
        if traced_fd is not None and traced_fd < 0:
            traced_fd = None
        handle = Handle(fd, path, bool(flags & os.O_APPEND), stdio, traced_fd, event.tid, flags)
        self._register(handle)
        self.stats.done(event.name, elapsed)

    def _close(self, event: Event, op: str) -> None:
        stdio = op == "fclose"
        fd = calls.arg_int(event.args, "fd")
        handle = self.table.find(stdio, event.tid, fd, event.path)
        if handle is None:
            reason = calls.REASON_UNKNOWN_FD if (fd is not None or event.path) else calls.REASON_NO_TARGET
            self.stats.skip(event.name, reason)
            return
        self._handle_path = handle.path
        self.table.remove(handle)
        started = _perf_counter()
        if self.table.release(handle):
            self.context.descriptors.close(handle)
        # NOTE: when another thread's stream is in a call on this descriptor,
        # that stream closes it when its call ends; the time here excludes it.
        self.stats.done(event.name, _perf_counter() - started)

    # -- data -------------------------------------------------------------------

    def _transfer(self, event: Event, op: str) -> Optional[Tuple[Handle, int, Optional[int]]]:
        args = event.args
        size = args.get("count")
        if size.__class__ is not int or size < 0 or op in _ITEM_OPS:
            size = calls.transfer_size(op, args)
        if size is None:
            self.stats.skip(event.name, calls.REASON_NO_SIZE)
            return None
        handle = self._handle(event, op, op in ("fread", "fwrite"))
        if handle is None:
            return None
        budget = self.context.budget
        if budget.limit is not None and not budget.take(size):
            self.stats.skip(event.name, calls.REASON_MAX_BYTES)
            return None
        offset = None
        if op == "pread" or op == "pwrite":
            offset = args.get("offset")
            if offset.__class__ is not int:
                offset = calls.arg_int(args, "offset")
        return handle, size, offset

    def _traced_size(self, op: str, event: Event) -> Optional[int]:
        """Return :func:`calls.done_size` of the current call, from its ``ret`` when it is enough."""
        ret = self._ret
        if ret is not None and ret >= 0 and op not in _ITEM_OPS:
            return ret
        return calls.done_size(op, event.args)

    def _read(self, event: Event, op: str) -> None:
        found = self._transfer(event, op)
        if found is None:
            return
        handle, size, offset = found
        position = handle.position if offset is None else offset

        if len(self._buffer) < min(size, MAX_CHUNK):
            self._buffer = bytearray(min(max(size, 2 * len(self._buffer)), MAX_CHUNK))
            self._view = memoryview(self._buffer)
        view = self._view
        fd = self._fd(handle)
        verifier = self.context.verifier
        if verifier is None:
            started = _perf_counter()
            total = _read_into(fd, view, size, position)
            elapsed = _perf_counter() - started
        else:
            mapped = self.context.sandbox.display(handle.path)
            lock, write_map = verifier.entry(mapped)
            order = self._order(event)
            with lock:
                started = _perf_counter()
                total = _read_into(fd, view, size, position)
                elapsed = _perf_counter() - started
                # The buffer keeps the last chunk only, so a bigger read is
                # checked on its last MAX_CHUNK bytes.
                last = total - (total - 1) % MAX_CHUNK - 1 if total else 0
                verifier.check(
                    write_map,
                    order,
                    position + last,
                    view[: total - last],
                    self.stats.verify,
                    lambda: (handle.path, mapped),
                )

        if offset is None:
            handle.position = position + total
        self._moved = total
        self.stats.bytes_read += total
        traced = self._traced_size(op, event)
        if traced is not None and total < traced:
            self.stats.short_reads += 1
        self.stats.done(event.name, elapsed)

    def _write(self, event: Event, op: str) -> None:
        found = self._transfer(event, op)
        if found is None:
            return
        handle, size, offset = found
        fd = self._fd(handle)
        context = self.context
        verifier = context.verifier
        if verifier is None:
            started = _perf_counter()
            if offset is None and handle.append:
                handle.position = os.fstat(fd).st_size
            position = handle.position if offset is None else offset
            if context.data.zero:
                total = _write_zeros(fd, context, size, position)
            else:
                key = self._keys.get(handle.path)
                if key is None:
                    key = self._keys[handle.path] = path_key(handle.path)
                total = _write_data(fd, context.data, key, size, position)
            elapsed = _perf_counter() - started
        else:
            stats = self.stats
            key = write_key(handle.path, stats.file, stats.pid, stats.tid, self._sequence)
            lock, write_map = verifier.entry(context.sandbox.display(handle.path))
            with lock:
                started = _perf_counter()
                if offset is None and handle.append:
                    handle.position = os.fstat(fd).st_size
                position = handle.position if offset is None else offset
                total = _write_data(fd, context.data, key, size, position)
                elapsed = _perf_counter() - started
                write_map.add(position, position + total, (self._order(event), key, event.name))

        if offset is None:
            handle.position = position + total
        self._moved = total
        self.stats.bytes_written += total
        traced = self._traced_size(op, event)
        if total < (size if traced is None else min(size, traced)):
            self.stats.short_writes += 1
        self.stats.done(event.name, elapsed)

    def _order(self, event: Event) -> Tuple[Any, ...]:
        """Return the trace order of the current call, for ``--verify``."""
        stats = self.stats
        return (event.ts, stats.file, stats.pid, stats.tid, self._sequence)

    def _seek(self, event: Event, op: str) -> None:
        handle = self._handle(event, op, op == "fseek")
        if handle is None:
            return
        offset = calls.arg_int(event.args, "offset") or 0
        whence = calls.arg_int(event.args, "whence") or 0
        fd = self._fd(handle)
        started = _perf_counter()
        if whence == os.SEEK_CUR:
            target = handle.position + offset
            whence = os.SEEK_SET
        else:
            target = offset
        # The kernel validates the target and computes SEEK_END and
        # SEEK_DATA/SEEK_HOLE; data calls never use its offset.
        handle.position = self._moved = os.lseek(fd, target, whence)
        self.stats.done(event.name, _perf_counter() - started)

    def _tell(self, event: Event, op: str) -> None:
        handle = self._handle(event, op, True)
        if handle is None:
            return
        self.stats.done(event.name, 0.0)

    def _fsync(self, event: Event, op: str) -> None:
        handle = self._handle(event, op, False)
        if handle is None:
            return
        fd = self._fd(handle)
        started = _perf_counter()
        if event.name == "fdatasync":
            os.fdatasync(fd)
        else:
            os.fsync(fd)
        self.stats.done(event.name, _perf_counter() - started)

    def _ftruncate(self, event: Event, op: str) -> None:
        length = calls.arg_int(event.args, "length")
        if length is None:
            self.stats.skip(event.name, calls.REASON_NO_SIZE)
            return
        handle = self._handle(event, op, False)
        if handle is None:
            return
        fd = self._fd(handle)
        started = _perf_counter()
        os.ftruncate(fd, length)
        elapsed = _perf_counter() - started
        if self.context.verifier is not None:
            self.context.verifier.truncate(self.context.sandbox.display(handle.path), length)
        self.stats.done(event.name, elapsed)

    def _fstat(self, event: Event, op: str) -> None:
        handle = self._handle(event, op, False)
        if handle is None:
            return
        fd = self._fd(handle)
        started = _perf_counter()
        os.fstat(fd)
        self.stats.done(event.name, _perf_counter() - started)

    # -- paths ------------------------------------------------------------------

    def _path_call(self, event: Event, op: str) -> None:
        path = event.path
        if path is None:
            self.stats.skip(event.name, calls.REASON_NO_TARGET)
            return
        call = self._path_operation(event, op, path)
        if call is None:
            return

        descriptors = self.context.descriptors
        if op in ("unlink", "remove", "rename"):
            # A recycled handle on the path could not be reopened afterwards.
            descriptors.pin_below(path)
            if op == "rename":
                target = second_path(event)
                assert target is not None
                descriptors.pin_below(target)
        started = _perf_counter()
        descriptors.retry(call)
        elapsed = _perf_counter() - started
        if self.context.verifier is not None:
            self._forget(event, op, path)
        self.stats.done(event.name, elapsed)

    def _forget(self, event: Event, op: str, path: str) -> None:
        """Update the record of writes after a path call changed a file."""
        verifier = self.context.verifier
        assert verifier is not None
        display = self.context.sandbox.display
        if op in ("unlink", "remove"):
            verifier.remove(display(path))
        elif op == "rename":
            target = second_path(event)
            if target is not None:
                verifier.rename(display(path), display(target))
        elif op == "truncate":
            length = calls.arg_int(event.args, "length")
            if length is not None:
                verifier.truncate(display(path), length)

    def _path_operation(
        self, event: Event, op: str, path: str
    ) -> Optional[Callable[[], Any]]:
        """Return the sandbox call replaying ``event``, or ``None`` after a skip."""
        sandbox = self.context.sandbox
        if op == "stat" or op == "access":
            return lambda: sandbox.stat(path)
        if op == "mkdir":
            mode = calls.open_mode("mkdir", event.args)
            return lambda: sandbox.mkdir(path, mode)
        if op == "rmdir":
            return lambda: sandbox.rmdir(path)
        if op == "unlink":
            return lambda: sandbox.unlink(path)
        if op == "remove":
            return lambda: sandbox.remove(path)
        if op == "opendir":
            return lambda: sandbox.list_dir(path)
        if op == "truncate":
            length = calls.arg_int(event.args, "length")
            if length is None:
                self.stats.skip(event.name, calls.REASON_NO_SIZE)
                return None
            return lambda: sandbox.truncate(path, length)
        if op == "rename":
            target = second_path(event)
            if target is None:
                self.stats.skip(event.name, calls.REASON_NO_TARGET)
                return None
            return lambda: sandbox.rename(path, target)
        raise AssertionError(f"no path operation for {op!r}")


def _read_into(fd: int, view: memoryview, size: int, position: int) -> int:
    """Read ``size`` bytes at ``position`` in chunks into ``view``; return the count.

    Each chunk overwrites the start of ``view``, so at the end ``view``
    contains the last chunk.
    """
    total = 0
    while total < size:
        want = min(size - total, MAX_CHUNK)
        got = os.preadv(fd, [view[:want]], position + total)
        total += got
        if got < want:
            break
    return total


def _write_zeros(fd: int, context: ReplayContext, size: int, position: int) -> int:
    total = 0
    while total < size:
        want = min(size - total, MAX_CHUNK)
        got = os.pwrite(fd, context.zeros(want), position + total)
        total += got
        if got < want:
            break
    return total


def _write_data(fd: int, data: DataSource, key: int, size: int, position: int) -> int:
    """Write ``size`` bytes of ``data`` for ``key`` at ``position``; return the count."""
    total = 0
    while total < size:
        want = min(size - total, MAX_CHUNK)
        got = os.pwritev(fd, data.views(key, position + total, want), position + total)
        total += got
        if got < want:
            break
    return total


#: Key under which the decode stage stores a resolved second path
#: (``rename`` target, ``openat`` relative path).
SECOND_PATH = "_greenpipe_path2"


def second_path(event: Event) -> Optional[str]:
    """Return the resolved second path of a ``rename``/``openat`` event."""
    value = event.args.get(SECOND_PATH)
    if isinstance(value, str) and value:
        return value
    value = event.args.get("newpath")
    return value if isinstance(value, str) and value else None


def _replay_ret(op: str, args: Dict[str, Any], moved: Optional[int]) -> Optional[int]:
    """Return the ``ret`` of a replayed call that succeeded, as the trace writes it.

    Data calls return the bytes moved (items for ``fread``/``fwrite``),
    ``lseek`` the new offset. Opens return none, as in the newest traces,
    because the replay's descriptor numbers mean nothing to a reader.
    """
    if op in calls.BYTE_OPS:
        if moved is None:
            return None
        if op in _ITEM_OPS:
            size = calls.arg_int(args, "size")
            return moved // size if size else moved
        return moved
    if op == "lseek":
        return moved
    if op in ("open", "openat", "creat", "fopen"):
        return None
    return 0


def _openat_path(event: Event) -> Optional[str]:
    relative = second_path(event)
    if relative is None:
        return event.path
    if relative.startswith("/") or event.path is None:
        return relative
    return event.path.rstrip("/") + "/" + relative
