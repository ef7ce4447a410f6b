"""The replay pipeline: parse -> decode -> execute on bounded channels.

Each trace file runs through three stages, each a task, joined by bounded
channels::

    parse  --raw chunks-->  decode  --event batches-->  route  --> streams
    (inflate in an          (orjson, hashes,            (one task per
     I/O thread)             filters)                    traced pid/tid)

Back-pressure. Every channel is bounded, so a slow stage parks the one
before it: a stream that cannot keep up fills its channel, which parks
the router, then the decoder, then the parser, and the reader stops
inflating. What a file has in flight is therefore at most
``RAW_CAPACITY`` chunks (1 MiB each by default), ``EVENT_CAPACITY``
batches of ``BATCH_EVENTS`` events, and per stream ``STREAM_CAPACITY``
batches plus its reorder window.

Concurrency. Parsing pulls chunks with ``spawn_io``, so inflating (which
releases the GIL) overlaps decoding. Streams are tasks, so the streams of
one file and the files themselves (up to ``threads + 1`` at once) run
concurrently on the executor's workers.

The same parse and decode stages feed three different sinks: the plan
(see ``_plan``), the executing router, and, for a dry run, a counter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import logging
import os
import resource
import shutil
import stat
import time
from typing import (
    Any,
    Callable,
    Dict,
    Hashable,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from .._channel import Channel, ChannelProducer, make_channel
from .._compat import allocate_lock
from .._errors import Cancelled, GreenpipeError
from .._executor import Executor
from .._memory import compute_memory_budget
from .._scope import CoroScope, sleep
from ..trace import Decoder, Event, TraceReader
from ..trace._decode import EventTally, make_scanner
from ..trace._decoder import effective_budget
from ..trace._event import HashTable
from ..trace._inflate import ByteRange, iter_line_chunks
from ..trace._reader import MAX_CHUNK_BYTES
from ..trace._split import scan_metadata
from ..trace._stats import REASON_UNFINISHED_JOIN, FileRecord
from . import _calls as calls
from ._data import SizeScaler
from ._execute import SECOND_PATH, ByteBudget, ReplayContext, StreamRunner, Timeline, second_path
from ._options import EventFilter, EventLimit, ReplayOptions, select_ranks
from ._order import GlobalOrder, ResourceOrder
from ._plan import MAX_EXAMPLES, FilePlan, Plan
from ._sandbox import PathSandbox, SandboxError, prepare_root
from ._series import ReplaySeries, SeriesCollector, SeriesOrigin
from ._summary import (
    FileCounters,
    Preparation,
    ReplaySummary,
    StreamStats,
    TimingSetup,
    build_summary,
    merge_copies,
)

logger = logging.getLogger(__name__)

#: Raw chunks queued between parse and decode.
RAW_CAPACITY = 4
#: Events per batch sent from decode to the router.
BATCH_EVENTS = 512
#: Events per batch, and seconds a task runs before it lets others run,
#: in a timed replay. The decode and dispatch tasks of every file share
#: the worker with the streams, and a due call waits for each of them
#: that runs before it, so each runs about one batch (some tens of
#: microseconds) at a time.
TIMED_BATCH_EVENTS = 64
TIMED_TIMESLICE = 0.00002
#: The executor's own timeslice, used by the other passes.
DEFAULT_TIMESLICE = 0.01
#: Batches queued between decode and the router.
EVENT_CAPACITY = 8
#: Batches queued for each stream.
STREAM_CAPACITY = 8
#: Batches queued for each stream of a timed replay. Each queued call is
#: an object the garbage collector walks at every collection, and a timed
#: stream needs only enough to cover the dispatcher's next turn.
TIMED_STREAM_CAPACITY = 4
#: Seconds between the start of a timed replay pass and the instant its
#: first call is due, so that the parse and decode stages can deliver the
#: first events before then.
START_LEAD = 0.2

#: Called with the scope, the file index, the trace file, the channel of
#: its event batches, its counters and the copy number.
Sink = Callable[[CoroScope, int, str, Channel[Any], FileCounters, int], None]
#: Prefix of the sub-root of each copy of a replay with ``copies > 1``.
COPY_PREFIX = "copy-"


class PartBounds:
    """The byte range of a part of one trace file, for a dry-run pass.

    Attributes:
        start: first byte, right after a newline and, in a gzip file, at
            the start of a member.
        stop: byte after the last one, ``None`` for the end of the file.
    """

    __slots__ = ("start", "stop")

    def __init__(self, start: int, stop: Optional[int]) -> None:
        self.start = start
        self.stop = stop


class ReplayError(GreenpipeError):
    """Raised when a replay cannot start; the message names what to change."""


class InsufficientSpaceError(ReplayError):
    """Raised when the bytes to write exceed the free space under the root.

    Attributes:
        needed: estimated bytes the replay writes.
        available: bytes free under the root.
    """

    def __init__(self, needed: int, available: int, root: str) -> None:
        super().__init__(
            f"The replay would write about {needed:,} bytes but only {available:,} "
            f"bytes are free under {root}. Free some space, filter the trace, "
            "cap the bytes with --max-bytes, or pass --force to replay anyway."
        )
        self.needed = needed
        self.available = available


def find_trace_files(inputs: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Expand files and folders into trace files.

    Returns:
        ``(files, problems)``: the trace files in order, without
        duplicates, and one message per input that is missing or holds
        no trace.
    """
    files: List[str] = []
    problems: List[str] = []
    seen = set()
    for name in inputs:
        if not os.path.exists(name):
            problems.append(f"{name}: no such file or folder")
            continue
        found = TraceReader(name).files
        if not found:
            if os.path.isdir(name) and not os.access(name, os.R_OK | os.X_OK):
                problems.append(f"{name}: permission denied; the folder cannot be listed")
            else:
                problems.append(f"{name}: no trace files (.pfw, .pfw.gz) found")
        for path in found:
            if not _is_regular_file(path):
                problems.append(
                    f"{path}: not a regular file (a pipe?); a replay reads each "
                    "trace file more than once, so save the trace to a file first"
                )
                continue
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files, problems


def _is_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # reading it reports the error


def require_trace_files(inputs: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Return :func:`find_trace_files` of ``inputs``, which must find a trace.

    Raises:
        ReplayError: no input contains a trace file.
    """
    files, problems = find_trace_files(inputs)
    if not files:
        raise ReplayError(
            "No trace files to replay: "
            + "; ".join(problems or ["no inputs"])
            + ". Pass .pfw or .pfw.gz files or folders holding them."
        )
    return files, problems


def ranked_files(files: Sequence[str], options: ReplayOptions) -> List[Tuple[int, str]]:
    """Return ``(index, path)`` of the files that ``options.ranks`` selects.

    Raises:
        ReplayError: a rank names no trace file.
    """
    missing = sorted(rank for rank in options.ranks if rank >= len(files))
    if missing:
        raise ReplayError(
            f"The option --ranks names rank {missing[0]}, but the inputs hold "
            f"{len(files)} trace file(s), ranks 0 to {len(files) - 1}. "
            "Pick ranks in that range."
        )
    return select_ranks(files, options.ranks)


def copy_roots(root: str, copies: int) -> List[str]:
    """Return the root of each copy: ``root`` itself, or ``root/copy-<n>``."""
    if copies == 1:
        return [root]
    real = os.path.realpath(root)
    return [os.path.join(real, f"{COPY_PREFIX}{number}") for number in range(copies)]


@contextlib.contextmanager
def open_copies(root: str, copies: int, *, prepare: bool = False) -> Iterator[List[PathSandbox]]:
    """Open a sandbox on the root of each copy, marking the roots first if ``prepare``.

    Raises:
        ReplayError: a copy's root cannot be used.
    """
    with contextlib.ExitStack() as stack:
        sandboxes = []
        for copy_root in copy_roots(root, copies):
            if prepare:
                message = prepare_root(copy_root)
                if message is not None:
                    raise ReplayError(message)
            sandboxes.append(stack.enter_context(PathSandbox(copy_root)))
        yield sandboxes


def prepare_copies(plan: Plan, sandboxes: Sequence[PathSandbox]) -> Preparation:
    """Prepare every copy's root from ``plan``; return what the first copy got.

    Every copy is prepared alike, so the counts of one stand for all;
    the failures of all copies are listed.
    """
    preparations = [plan.prepare(sandbox) for sandbox in sandboxes]
    failures = tuple(f for p in preparations for f in p.failures)
    return dataclasses.replace(preparations[0], failures=failures[:MAX_EXAMPLES])


def peak_rss_bytes() -> int:
    """Return the peak resident set size of the calling process, in bytes."""
    # VmHWM belongs to the current address space. ru_maxrss does not fit:
    # Linux carries it over from the parent through fork and exec, so a
    # small worker would report the size of the process that started it.
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def problem_counters(problems: Iterable[str]) -> List[FileCounters]:
    """Return counters that carry the messages of inputs that were not read."""
    return [FileCounters(path=message.split(":")[0], problem=message) for message in problems]


class ReplayProgress:
    """A snapshot of a running replay, for progress bars.

    Attributes:
        phase: ``"plan"``, ``"prepare"``, ``"replay"``, ``"dry-run"`` or
            ``"done"``.
        events_done: events handled in this phase so far.
        events_total: events expected in this phase, 0 when unknown.
        bytes_done: bytes read and written so far.
        bytes_total: bytes expected to be written, 0 when unknown.
        elapsed: seconds since the phase started.
    """

    __slots__ = ("phase", "events_done", "events_total", "bytes_done", "bytes_total", "elapsed")

    def __init__(
        self,
        phase: str,
        events_done: int,
        events_total: int,
        bytes_done: int,
        bytes_total: int,
        elapsed: float,
    ) -> None:
        self.phase = phase
        self.events_done = events_done
        self.events_total = events_total
        self.bytes_done = bytes_done
        self.bytes_total = bytes_total
        self.elapsed = elapsed


class Replayer:
    """Replays DFTracer traces under a root folder; see :func:`replay`.

    Call :meth:`run` once. :meth:`cancel` and :meth:`progress` may be
    called from any thread while it runs, for example from a signal
    handler and a progress bar.

    Args:
        inputs: trace files and folders.
        options: what to replay and how.
        executor_options: keyword arguments for the
            :class:`~greenpipe.Executor` of each pass, for example a
            ``timeslice`` of 0 so that tests get a fixed interleaving.
        clock: ``None`` for real time, or a
            :class:`~greenpipe.testing.VirtualClock` that the executors of
            the replay run on and that timed replays pace with.
    """

    def __init__(
        self,
        inputs: Sequence[str],
        options: ReplayOptions,
        *,
        executor_options: Optional[Mapping[str, Any]] = None,
        clock: Any = None,
    ) -> None:
        self.inputs = list(inputs)
        self.options = options
        self._executor_options = dict(executor_options or {})
        self._clock = clock
        self._timeline: Optional[Timeline] = None
        self._lock = allocate_lock()
        self._cancelled = False
        self._scopes: List[CoroScope] = []
        self._streams: List[StreamStats] = []
        self._counters: List[FileCounters] = []
        self._phase = "plan"
        self._phase_started = time.monotonic()
        self._events_total = 0
        self._bytes_total = 0
        self._plan_events = 0
        self._series: Optional[ReplaySeries] = None
        self._series_origin: Optional[SeriesOrigin] = None

    # -- control from other threads -------------------------------------------

    def cancel(self) -> None:
        """Stop the replay soon; :meth:`run` returns a partial summary.

        Never blocks; safe from any thread and from a signal handler.
        """
        with self._lock:
            self._cancelled = True
            scopes = list(self._scopes)
        for scope in scopes:
            scope.cancel()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def progress(self) -> ReplayProgress:
        """Return a snapshot of the progress; never blocks."""
        streams = list(self._streams)
        if self._phase == "replay" or (self._phase == "done" and not self.options.dry_run):
            done = sum(s.replayed + s.failed + sum(s.skipped.values()) for s in streams)
        elif self._phase == "plan":
            done = self._plan_events
        else:
            done = sum(c.events for c in list(self._counters))
        return ReplayProgress(
            self._phase,
            done,
            self._events_total,
            sum(s.bytes_read + s.bytes_written for s in streams),
            self._bytes_total,
            time.monotonic() - self._phase_started,
        )

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self._phase_started = time.monotonic()

    # -- the run --------------------------------------------------------------

    def run(self) -> ReplaySummary:
        """Plan, prepare and replay; return the summary.

        Blocking: runs the whole replay on a private executor and returns
        when it ends or, after :meth:`cancel`, once every stream has
        stopped and every descriptor is closed.

        Raises:
            ReplayError: no input holds a trace, or the root cannot be
                used.
            InsufficientSpaceError: the estimated bytes to write exceed
                the free space and ``options.force`` is false.
        """
        files, problems = require_trace_files(self.inputs)
        options = self.options
        indexed = ranked_files(files, options)
        if options.dry_run:
            return self._run_dry(indexed, problems)

        assert options.root is not None
        message = prepare_root(options.root)
        if message is not None:
            raise ReplayError(message)
        with open_copies(options.root, options.copies, prepare=True) as sandboxes:
            return self._run_real(indexed, problems, sandboxes)

    def _finish(
        self,
        indexed: List[Tuple[int, str]],
        problems: List[str],
        root: Optional[str],
        wall: float,
        preparation: Preparation,
    ) -> ReplaySummary:
        self._set_phase("done")
        files = [path for _, path in indexed]
        counters = list(self._counters) + problem_counters(problems)
        process = {
            "role": "main",
            "files": len(files),
            "memory_budget_bytes": compute_memory_budget(self.options.memory_budget),
            "peak_rss_bytes": peak_rss_bytes(),
        }
        return build_summary(
            inputs=files,
            root=root,
            dry_run=self.options.dry_run,
            interrupted=self._cancelled,
            file_counters=counters,
            streams=list(self._streams),
            wall_seconds=wall,
            preparation=preparation,
            processes=[process],
            order_mode=self.options.order,
            copies=1 if self.options.dry_run else self.options.copies,
            verify=self.options.verify and not self.options.dry_run,
            series=self._series,
            series_origin=self._series_origin,
            timing=timing_setup(self.options, self._timeline),
        )

    def _run_dry(self, indexed: List[Tuple[int, str]], problems: List[str]) -> ReplaySummary:
        started = time.monotonic()
        self.dry_pass(indexed)
        return self._finish(indexed, problems, None, time.monotonic() - started, Preparation())

    def _run_real(
        self, indexed: List[Tuple[int, str]], problems: List[str], sandboxes: List[PathSandbox]
    ) -> ReplaySummary:
        options = self.options
        assert options.root is not None
        root = os.path.realpath(options.root)
        plan = self.plan_pass(indexed)
        if self._cancelled:
            return self._finish(indexed, problems, root, 0.0, Preparation())

        needed = check_free_space(plan.write_bytes, options, root)

        self._set_phase("prepare")
        preparation = prepare_copies(plan, sandboxes)

        self._events_total = plan.events * options.copies
        self._bytes_total = needed
        self._timeline = plan.timeline()
        now = self._now
        started = now()
        groups = order_groups(plan, indexed, sandboxes[0])
        self.replay_pass(
            indexed,
            sandboxes,
            plan.first_ts,
            groups,
            series_origin(),
            framed=True,
            timeline=self._timeline,
            start=started + START_LEAD,
        )
        return self._finish(indexed, problems, root, now() - started, preparation)

    @property
    def _now(self) -> Callable[[], float]:
        """The monotonic time source of the replay: real, or the virtual clock's."""
        return time.monotonic if self._clock is None else self._clock.now

    # -- passes over the files ------------------------------------------------
    #
    # Each pass takes ``(index, path)`` pairs, where ``index`` is the
    # position of the file among all the files of the replay. The index
    # seeds the file's sampling, so a pass over a subset of the files (a
    # shard) keeps the same events as a pass over all of them.

    def plan_pass(self, files: Sequence[Tuple[int, str]]) -> Plan:
        """Run the plan pass over ``files``; return their merged plan.

        Blocking, like :meth:`run`; :meth:`cancel` stops it early.
        """
        self._set_phase("plan")
        plan = Plan()

        def plan_sink(
            scope: CoroScope, index: int, path: str, channel: Channel[Any], c: FileCounters, copy: int
        ) -> None:
            # The plan follows the events in start-time order within the
            # reorder window, as the replay runs them. In file order, a close
            # written after another thread's open of the same descriptor
            # number would hide the file that the descriptor's later calls use.
            file_plan = FilePlan()
            window = self.options.window
            pending: List[Tuple[int, int, Event]] = []
            sequence = 0
            for batch in channel:
                ordered = []
                for event in batch:
                    heapq.heappush(pending, (event.ts, sequence, event))
                    sequence += 1
                    if len(pending) > window:
                        ordered.append(heapq.heappop(pending)[2])
                file_plan.feed(ordered)
                self._plan_events += len(batch)
                scope.maybe_yield()
            file_plan.feed([heapq.heappop(pending)[2] for _ in range(len(pending))])
            plan.add(path, file_plan)

        self._passes(files, plan_sink, keep_counters=False)
        return plan

    def dry_pass(
        self,
        files: Sequence[Tuple[int, str]],
        parts: Sequence[Optional[PartBounds]] = (),
    ) -> List[FileCounters]:
        """Parse, decode and filter ``files``; return their counters in order.

        Args:
            parts: for each file, the byte range to read, ``None`` for the
                whole file; empty reads every file whole. The counters of
                a part number its lines from the start of the part.
        """
        self._set_phase("dry-run")

        def sink(
            scope: CoroScope, index: int, path: str, channel: Channel[Any], c: FileCounters, copy: int
        ) -> None:
            for _ in channel:
                scope.maybe_yield()

        # The counters are all a dry run reports: see count_only in _passes.
        return self._passes(files, sink, keep_counters=True, parts=parts, count_only=True)

    def replay_pass(
        self,
        files: Sequence[Tuple[int, str]],
        sandbox: Union[PathSandbox, Sequence[PathSandbox]],
        anchors: Mapping[str, int],
        groups: Optional[Sequence[Sequence[int]]] = None,
        origin: Optional[SeriesOrigin] = None,
        *,
        framed: bool = False,
        timeline: Optional[Timeline] = None,
        start: Optional[float] = None,
    ) -> Tuple[List[FileCounters], List[StreamStats]]:
        """Replay ``files`` under ``sandbox``, which must be prepared already.

        With ``options.series``, the time series of the pass are kept for
        :meth:`series`. With ``options.emit_trace``, the executed calls
        are written to that file.

        Args:
            sandbox: the root, or one root per copy (``--copies``); the
                copies run at once on one executor.
            anchors: per trace file, the first start time of its plan.
                Timed replays measure traced times from the earliest of
                them when ``timeline`` is not given.
            groups: for ``--order resource``, the indexes of the files that
                must keep their order against each other, as
                :func:`order_groups` finds them; each group is merged by
                its own dispatcher. ``None`` merges all files in one.
            origin: the zero of the replay clock of the time series,
                shared by every pass of the replay; by default the
                present moment.
            framed: write the brackets that open and close the emitted
                trace; a worker's part of it has none.
            timeline: the traced span of the whole replay, all files and
                shards together; timed replays measure traced times from
                its first start.
            start: the monotonic clock time (virtual under a virtual
                clock) at which that first start is due; by default when
                the first call is paced.

        Returns:
            The counters of the files, in order, each adding up all the
            copies, and the counters of the streams of every copy.
        """
        self._set_phase("replay")
        options = self.options
        sandboxes = [sandbox] if isinstance(sandbox, PathSandbox) else list(sandbox)
        collector = None
        if options.series:
            if origin is None:
                origin = series_origin()
            collector = SeriesCollector(origin, anchors)
        emitter = None
        if options.emit_trace is not None:
            from ._emit import TraceEmitter

            emitter = TraceEmitter(options.emit_trace, framed=framed)
        virtual = self._clock is not None
        contexts = [
            ReplayContext(
                box,
                # Each copy is a whole replay, so each gets its own cap.
                budget=ByteBudget(options.max_bytes),
                speed=options.speed_factor(),
                mode=options.timing_mode(),
                window=options.window,
                timeline=timeline,
                start=start,
                clock=self._clock.now if virtual else None,
                sleep=sleep if virtual else None,
                data=options.data_source(),
                verify=options.verify,
                series=collector,
                # NOTE: with --copies, the emitted trace contains the first copy only.
                emitter=emitter if copy == 0 else None,
            )
            for copy, box in enumerate(sandboxes)
        ]
        for context in contexts:
            if context.ts0 is None and anchors:
                context.ts0 = min(anchors.values())
        timed = contexts[0].mode != "asap"
        try:
            if options.order == "stream":
                counters = self._passes(
                    files,
                    self._make_router(contexts, anchors),
                    keep_counters=True,
                    copies=len(contexts),
                    timed=timed,
                )
            else:
                counters = self._ordered_pass(files, contexts, anchors, groups, timed=timed)
        finally:
            left_open = sum(context.close_all() for context in contexts)
            if left_open:
                logger.debug("closed %d descriptors left open by the trace", left_open)
            if emitter is not None:
                emitter.close()
        if len(contexts) > 1:
            counters = merge_copies(counters, len(files))
            self._counters = counters
        if collector is not None:
            self._series = collector.series
            self._series_origin = collector.origin
        return counters, list(self._streams)

    def series(self) -> Tuple[Optional[ReplaySeries], Optional[SeriesOrigin]]:
        """Return the series of the last replay pass and their origin.

        ``(None, None)`` unless ``options.series`` was set and a replay
        pass ran.
        """
        return self._series, self._series_origin

    def _passes(
        self,
        files: Sequence[Tuple[int, str]],
        sink: Sink,
        *,
        keep_counters: bool,
        copies: int = 1,
        timed: bool = False,
        parts: Sequence[Optional[PartBounds]] = (),
        count_only: bool = False,
    ) -> List[FileCounters]:
        """Run ``sink`` on the events of each file, ``copies`` times over.

        Returns the counters of copy 0's files in order, then copy 1's,
        and so on. With ``count_only``, the events are counted as sent but
        dropped, so ``sink`` receives none. Files are then inflated in the
        hub's own thread, and one worker thread is used unless
        ``--threads`` is given. No call waits on the hub, and handing
        chunks between threads under the GIL costs more than it overlaps.
        """
        limits = [EventLimit(self.options.max_events) for _ in range(copies)]
        items = [(copy, index, path) for copy in range(copies) for index, path in files]
        counters = [FileCounters(path=path) for _, _, path in items]
        if keep_counters:
            self._counters = counters

        def main(scope: CoroScope) -> None:
            work: Channel[Tuple[int, int, int, str]] = make_channel(0)
            for position, (copy, index, path) in enumerate(items):
                work.send((position, copy, index, path))
            work.close()
            if timed:
                # Every file's streams run on one timeline, so every file
                # is read at once. NOTE: memory then grows with the number
                # of files, each with its reader and channels in flight.
                workers = len(items)
            else:
                workers = min(len(items), files_at_once(self.options, count_only))

            def file_worker(scope: CoroScope) -> None:
                for position, copy, index, path in work:
                    # Parts split files of a dry run, which has one copy.
                    part = parts[position % len(files)] if parts else None
                    # Fail fast: a stage that raises leaves the stages
                    # around it parked on their channels, so they are
                    # cancelled and its exception reaches the caller.
                    scope.scope(
                        self._file_pipeline,
                        index,
                        path,
                        counters[position],
                        sink,
                        limits[copy],
                        copy,
                        batch_events,
                        part,
                        count_only,
                        fail_fast=True,
                    )

            def start(inner: CoroScope) -> None:
                for number in range(workers):
                    inner.spawn(file_worker, name=f"files-{number}")

            self._in_cancel_scope(scope, start)

        # A timed replay switches tasks often, so that a stream whose call
        # is due waits for the decoder at most a short slice.
        batch_events = TIMED_BATCH_EVENTS if timed else BATCH_EVENTS
        threads = self.options.threads or (1 if count_only else None)
        self._run_executor(main, timed, threads)
        return counters

    def _run_executor(
        self,
        main: Callable[[CoroScope], None],
        timed: bool = False,
        threads: Optional[int] = None,
    ) -> None:
        """Run ``main`` in a new executor of ``threads`` (default ``--threads``)."""
        settings: Dict[str, Any] = {
            "clock": self._clock,
            "timeslice": TIMED_TIMESLICE if timed else DEFAULT_TIMESLICE,
        }
        settings.update(self._executor_options)
        threads = threads or self.options.threads
        with Executor(threads, name="replay", **settings) as executor:
            try:
                executor.run(main, name="replay")
            except Cancelled:
                if not self._cancelled:
                    raise

    def _in_cancel_scope(self, scope: CoroScope, fn: Callable[[CoroScope], None]) -> None:
        """Run ``fn`` in a child scope that :meth:`cancel` cancels."""

        def body(inner: CoroScope) -> None:
            with self._lock:
                self._scopes.append(inner)
                if self._cancelled:
                    inner.cancel()
            try:
                fn(inner)
                inner.join_all()
            finally:
                with self._lock:
                    self._scopes.remove(inner)

        scope.scope(body)

    def _ordered_pass(
        self,
        files: Sequence[Tuple[int, str]],
        contexts: Sequence[ReplayContext],
        anchors: Mapping[str, int],
        groups: Optional[Sequence[Sequence[int]]] = None,
        *,
        timed: bool = False,
    ) -> List[FileCounters]:
        """Replay ``files`` through dispatchers (``--order resource|global``).

        The files of a group are read at once, each by its own parse and
        decode tasks, so the group's dispatcher can merge them by start
        time. ``global`` makes one group of all files. Groups run like
        the files of a ``stream`` pass: a few at a time, each copy
        (``contexts``) reading the files again.

        Returns the counters of copy 0's files in order, then copy 1's,
        and so on, as :meth:`_passes` does.
        """
        options = self.options
        copies = len(contexts)
        limits = [EventLimit(options.max_events) for _ in range(copies)]
        counters = [FileCounters(path=path) for _ in range(copies) for _, path in files]
        self._counters = counters
        position_of = {index: position for position, (index, _) in enumerate(files)}
        if options.order == "global" or groups is None:
            parts = [list(range(len(files)))]
        else:
            parts = [[position_of[index] for index in group if index in position_of] for group in groups]
            grouped = {position for part in parts for position in part}
            parts = [part for part in parts if part]
            parts.extend([position] for position in range(len(files)) if position not in grouped)
        items = [(copy, part) for copy in range(copies) for part in parts]
        if timed:
            # Every group runs on one timeline, so every file is read at once.
            workers = len(items)
        else:
            workers = min(len(items), (options.threads or os.cpu_count() or 1) + 1)
        batch_events = TIMED_BATCH_EVENTS if timed else BATCH_EVENTS
        scaler = options.scaler()

        def dispatch(scope: CoroScope, copy: int, positions: List[int]) -> None:
            # A group with more files than a stream pass reads at once
            # queues less per file.
            # NOTE: memory still grows with the files of the largest group,
            # by up to one raw chunk and two event batches per file.
            many = len(positions) > workers
            raw_capacity = 1 if many else RAW_CAPACITY
            event_capacity = 2 if many else EVENT_CAPACITY
            file_batch = TIMED_BATCH_EVENTS if many else batch_events
            sources: List[Tuple[str, Channel[List[Event]]]] = []
            for position in positions:
                index, path = files[position]
                mine = counters[copy * len(files) + position]
                raw: Channel[bytes] = make_channel(raw_capacity)
                events: Channel[List[Event]] = make_channel(event_capacity)
                raw_producer = raw.producer()
                events_producer = events.producer()
                scope.spawn(
                    _parse, path, raw_producer, mine, options.memory_budget,
                    name=f"parse {path}",
                ).add_done_callback(_releaser(raw_producer))
                scope.spawn(
                    _decode, path, raw, events_producer, mine,
                    EventFilter(options, index), limits[copy], options.memory_budget, scaler,
                    file_batch, name=f"decode {path}",
                ).add_done_callback(_releaser(events_producer))
                sources.append((path, events))
            Dispatcher(
                self, scope, contexts[copy], sources, anchors, copy, batch_events, timed=timed
            ).run(scope)

        def start(scope: CoroScope) -> None:
            work: Channel[Tuple[int, List[int]]] = make_channel(0)
            for item in items:
                work.send(item)
            work.close()

            def group_worker(inner: CoroScope) -> None:
                for copy, part in work:
                    inner.scope(dispatch, copy, part, fail_fast=True)

            for number in range(workers):
                scope.spawn(group_worker, name=f"groups-{number}")

        self._run_executor(lambda scope: self._in_cancel_scope(scope, start), timed)
        return counters

    def _file_pipeline(
        self,
        scope: CoroScope,
        index: int,
        path: str,
        counters: FileCounters,
        sink: Sink,
        limit: EventLimit,
        copy: int,
        batch_events: int = 0,
        part: Optional[PartBounds] = None,
        count_only: bool = False,
    ) -> None:
        budget = self.options.memory_budget
        byte_range: ByteRange = None
        hashes: Optional[HashTable] = None
        first_text = b""
        if part is not None:
            first_member = 1
            if part.start > 0:
                # A failed child cancels this fail-fast scope even when its
                # error is caught, so the scan returns None instead of raising.
                scanned = scope.spawn_io(
                    _scan_metadata_or_none,
                    path,
                    part.start,
                    _chunk_bytes(budget),
                    effective_budget(budget) // 4,
                    name=f"scan metadata {path}",
                ).result()
                if scanned is not None:  # None: _parse reports the file as unreadable
                    hashes, members, first_text = scanned
                    first_member = members + 1
            byte_range = (part.start, part.stop, first_member)
        raw: Channel[bytes] = make_channel(RAW_CAPACITY)
        events: Channel[List[Event]] = make_channel(EVENT_CAPACITY)
        raw_producer = raw.producer()
        events_producer = events.producer()
        scope.spawn(
            _parse,
            path,
            raw_producer,
            counters,
            budget,
            byte_range,
            first_text,
            count_only,
            name=f"parse {path}",
        ).add_done_callback(_releaser(raw_producer))
        scope.spawn(
            _decode,
            path,
            raw,
            events_producer,
            counters,
            EventFilter(self.options, index),
            limit,
            budget,
            self.options.scaler(),
            batch_events or BATCH_EVENTS,
            hashes,
            part is not None,
            count_only,
            name=f"decode {path}",
        ).add_done_callback(_releaser(events_producer))
        sink(scope, index, path, events, counters, copy)

    def _make_router(self, contexts: List[ReplayContext], anchors: Mapping[str, int]) -> Sink:
        def route(
            scope: CoroScope, index: int, path: str, channel: Channel[Any], c: FileCounters, copy: int
        ) -> None:
            context = contexts[copy]
            streams: Dict[Tuple[int, int], ChannelProducer[List[Event]]] = {}
            anchor = anchors.get(path)
            try:
                for batch in channel:
                    groups: Dict[Tuple[int, int], List[Event]] = {}
                    for event in batch:
                        key = (event.pid, event.tid)
                        group = groups.get(key)
                        if group is None:
                            groups[key] = [event]
                        else:
                            group.append(event)
                    for key, group in groups.items():
                        producer = streams.get(key)
                        if producer is None:
                            producer = streams[key] = self._start_stream(
                                scope, context, path, key, anchor, copy
                            )
                        producer.send(group)
            finally:
                for producer in streams.values():
                    producer.release()

        return route

    def _start_stream(
        self,
        scope: CoroScope,
        context: ReplayContext,
        path: str,
        key: Tuple[int, int],
        anchor: Optional[int],
        copy: int = 0,
    ) -> ChannelProducer[List[Event]]:
        channel: Channel[List[Event]] = make_channel(STREAM_CAPACITY)
        producer = channel.producer()
        stats = StreamStats(path, key[0], key[1], copy)
        with self._lock:
            self._streams.append(stats)
        runner = StreamRunner(context, stats, anchor)

        def stream(inner: CoroScope) -> None:
            runner.run(channel, inner.maybe_yield)

        scope.spawn(stream, name=f"stream {key[0]}/{key[1]} of {os.path.basename(path)} ({copy})")
        return producer


class Dispatcher:
    """Merges the events of every file by start time and hands them to streams.

    Used by ``--order resource`` and ``global``. The events of all files
    wait in one heap, and an event leaves only while more than ``window``
    events of its file are in it. The earliest event of all files leaves
    first, ties broken by file position, then by reading order.
    An event that has ordering dependencies leaves inside its
    :class:`~greenpipe.replay._order.Step`, any other event on its own.

    Events are sent to the streams in groups. The groups are flushed in
    the order of their first event, before every read from a file, and
    whenever ``flush_events`` events are held (fewer in a timed replay, so
    that due calls wait less). A send that parks on a full stream channel
    then waits only for events dispatched earlier, which never wait for
    anything later (see ``_order``).
    """

    def __init__(
        self,
        replayer: Replayer,
        scope: CoroScope,
        context: ReplayContext,
        sources: Sequence[Tuple[str, Channel[List[Event]]]],
        anchors: Mapping[str, int],
        copy: int = 0,
        flush_events: int = BATCH_EVENTS,
        *,
        timed: bool = False,
    ) -> None:
        self._replayer = replayer
        self._flush_events = flush_events
        self._timed = timed
        self._scope = scope
        self._context = context
        self._sources = sources
        self._anchors = anchors
        self._copy = copy
        if replayer.options.order == "global":
            self._order: Any = GlobalOrder()
        else:
            self._order = ResourceOrder(context.gates, second_path)
        self._streams: Dict[Tuple[int, int, int], ChannelProducer[List[Any]]] = {}
        self._groups: Dict[Tuple[int, int, int], List[Any]] = {}
        self._held_events = 0

    def run(self, scope: CoroScope) -> None:
        """Dispatch every event, then close the stream channels."""
        try:
            self._merge(scope)
            self._flush()
        finally:
            for producer in self._streams.values():
                producer.release()

    def _merge(self, scope: CoroScope) -> None:
        window = self._context.window
        heap: List[Tuple[int, int, int, Event]] = []
        iterators = [iter(channel) for _, channel in self._sources]
        count = len(iterators)
        buffered = [0] * count
        live = [True] * count
        batches: List[List[Event]] = [[] for _ in range(count)]
        offsets = [0] * count
        sequence = 0

        def fill(position: int) -> None:
            # Keep more than ``window`` events of the file in the heap, as a
            # stream in ``--order stream`` keeps more than ``window`` of its own.
            nonlocal sequence
            while live[position] and buffered[position] <= window:
                batch = batches[position]
                offset = offsets[position]
                if offset >= len(batch):
                    self._flush()
                    received = next(iterators[position], None)
                    if received is None:
                        live[position] = False
                        return
                    batch = batches[position] = received
                    offset = 0
                end = min(len(batch), offset + window + 1 - buffered[position])
                for event in batch[offset:end]:
                    heapq.heappush(heap, (event.ts, position, sequence, event))
                    sequence += 1
                buffered[position] += end - offset
                offsets[position] = end

        for position in range(len(iterators)):
            fill(position)
        step_of = self._order.step
        classify = calls.classify
        timed = self._timed
        push = heapq.heappush
        pop = heapq.heappop
        while heap:
            _, position, _, event = pop(heap)
            buffered[position] -= 1
            if live[position]:
                # Most often one event of the current batch refills the
                # window; fill() handles the rest.
                batch = batches[position]
                offset = offsets[position]
                if offset < len(batch) and buffered[position] == window:
                    following = batch[offset]
                    push(heap, (following.ts, position, sequence, following))
                    sequence += 1
                    buffered[position] = window + 1
                    offsets[position] = offset + 1
                else:
                    fill(position)
            op = classify(event.category, event.name)
            step = None if op is None else step_of(position, event, op)
            item = event if step is None else step
            key = (position, event.pid, event.tid)
            group = self._groups.get(key)
            if group is None:
                self._groups[key] = [item]
            else:
                group.append(item)
            self._held_events += 1
            if self._held_events >= self._flush_events:
                self._flush()
                scope.maybe_yield()
            elif timed:
                # Each event costs a few microseconds here, so a whole group
                # would hold up due calls of other files for a fraction of
                # a millisecond.
                scope.maybe_yield()

    def _flush(self) -> None:
        groups = self._groups
        if not groups:
            return
        self._groups = {}
        self._held_events = 0
        for key, group in groups.items():
            producer = self._streams.get(key)
            if producer is None:
                producer = self._streams[key] = self._start_stream(key)
            producer.send(group)

    def _start_stream(self, key: Tuple[int, int, int]) -> ChannelProducer[List[Any]]:
        path = self._sources[key[0]][0]
        channel: Channel[List[Any]] = make_channel(TIMED_STREAM_CAPACITY if self._timed else STREAM_CAPACITY)
        producer = channel.producer()
        stats = StreamStats(path, key[1], key[2], self._copy)
        replayer = self._replayer
        with replayer._lock:
            replayer._streams.append(stats)
        runner = StreamRunner(self._context, stats, self._anchors.get(path))

        def stream(inner: CoroScope) -> None:
            runner.run_ordered(channel, inner.maybe_yield)

        self._scope.spawn(
            stream, name=f"stream {key[1]}/{key[2]} of {os.path.basename(path)} ({self._copy})"
        )
        return producer


def _releaser(producer: ChannelProducer[Any]) -> Callable[[Any], None]:
    """Return a done callback that releases ``producer``.

    A stage releases its producer itself, but a stage cancelled before it
    started never runs, and its channel would then never end.
    """
    return lambda future: producer.release()


def _scan_metadata_or_none(
    path: str, stop: int, chunk_bytes: int, max_line_bytes: int
) -> Optional[Tuple[HashTable, int, bytes]]:
    """Return :func:`scan_metadata` of ``path`` before ``stop``, ``None`` if unreadable."""
    try:
        return scan_metadata(path, stop, chunk_bytes, max_line_bytes)
    except OSError:
        return None


def _chunk_bytes(memory_budget: int) -> int:
    """Return the chunk size a :class:`TraceReader` with ``memory_budget`` uses."""
    return min(effective_budget(memory_budget) // 16, MAX_CHUNK_BYTES)


def _parse(
    scope: CoroScope,
    path: str,
    producer: ChannelProducer[bytes],
    counters: FileCounters,
    memory_budget: int,
    byte_range: ByteRange = None,
    first_text: bytes = b"",
    in_task: bool = False,
) -> None:
    """Read and inflate ``path`` in an I/O thread, sending line-aligned chunks.

    With ``byte_range``, only that part of the file is read, and
    ``first_text``, the end of the line cut by the range's start, comes
    first. With ``in_task``, the task reads and inflates in its own
    thread, blocking its hub meanwhile.
    """
    with producer.guard():
        try:
            # Inflating already runs in an I/O thread here, so the reader
            # needs no reader thread of its own.
            reader = TraceReader(path, memory_budget=memory_budget, prefetch=False)
        except OSError as exc:
            counters.problem = f"{path}: cannot be read: {exc.strerror or exc}"
            return
        record: Optional[FileRecord] = None
        if byte_range is None:
            chunks = reader.iter_raw()
        else:
            record = FileRecord(path)
            chunks = iter_line_chunks(
                path,
                reader.chunk_bytes,
                reader.max_line_bytes,
                record,
                None,
                byte_range,
                first_text,
            )
        try:
            while True:
                try:
                    if in_task:
                        chunk = next(chunks, None)
                    else:
                        chunk = scope.spawn_io(next, chunks, None, name=f"inflate {path}").result()
                except OSError as exc:
                    # Only a part's chunks get here: the reader of a whole
                    # file records the error as damage.
                    counters.problem = f"{path}: cannot be read: {exc.strerror or exc}"
                    counters.clean_end = False
                    return
                if chunk is None or not producer.send(chunk):
                    break
        finally:
            try:
                chunks.close()
            except ValueError:
                # Still running in the I/O thread after a cancellation; the
                # generator closes its file when it is collected.
                pass
            # Also after a cancellation, so that the lines read so far
            # cover the events already decoded.
            _count_read_lines(path, reader, record, counters)


def _count_read_lines(
    path: str, reader: TraceReader, record: Optional[FileRecord], counters: FileCounters
) -> None:
    """Add the lines, bad lines and damage that reading ``path`` found to ``counters``."""
    if record is None:
        files = reader.statistics().files
    else:
        files = (record.freeze(),)
        if record.unsafe_end:
            counters.clean_end = False
    for stats in files:
        # Lines too long to split and a cut last line are found while
        # reading, before they reach the decoder.
        counters.read_bad_lines += stats.bad_lines
        counters.lines += stats.lines
        counters.first_read_bad_lines = tuple(
            (bad.line, bad.reason) for bad in stats.first_bad_lines
        )
        if stats.damage is not None:
            counters.problem = f"{path}: {stats.damage}"
            counters.damaged = True


def _decode(
    scope: CoroScope,
    path: str,
    raw: Channel[bytes],
    producer: ChannelProducer[List[Event]],
    counters: FileCounters,
    event_filter: EventFilter,
    limit: EventLimit,
    memory_budget: int,
    scaler: Optional[SizeScaler] = None,
    batch_events: int = 0,
    hashes: Optional[HashTable] = None,
    is_part: bool = False,
    count_only: bool = False,
) -> None:
    """Decode chunks into events, resolve second paths, filter, scale and batch.

    Batches hold ``batch_events`` events (by default :data:`BATCH_EVENTS`);
    the stage may switch to other tasks after each batch. ``hashes`` is the
    hash table in force where the chunks start. For a part of a file
    (``is_part``), whether the file decoded to nothing is decided when the
    parts are merged, so it is not reported here. With ``count_only``,
    each decoded list is counted in ``counters.sent`` and dropped, which
    spares a dry run the queued events. Without a filter, cap or scaling
    the decoder then counts most events itself, without building them
    (see :class:`EventTally`).
    """
    batch_events = batch_events or BATCH_EVENTS
    decoder = Decoder(path, memory_budget=memory_budget, hashes=hashes)
    batch: List[Event] = []
    io_categories = calls.IO_CATEGORIES
    span: List[Optional[int]] = [counters.first_ts, counters.last_end]
    seen = 0
    # Looked up once, because without filters or a cap every event would
    # pay for a call that always returns True.
    accept = None if event_filter.plain else event_filter.accept
    take = None if limit.limit is None else limit.take
    second_path_calls = SECOND_PATH_CALLS
    scan = make_scanner()
    named: List[Event] = []
    application = 0  # kept in a local, written to the counters at the end
    tally = None
    if count_only and accept is None and take is None and scaler is None:
        tally = EventTally(io_categories)
    with producer.guard():
        try:
            for events in decoder.iter_batches(iter(raw), tally):
                if accept is None and take is None and scaler is None:
                    # No filter, cap or scaling: the whole list is sorted in one call.
                    if events:
                        seen += len(events)
                        application += scan(
                            events, io_categories, second_path_calls, batch, named, span
                        )
                    if named:
                        for event in named:
                            _resolve_second_path(event.args, decoder)
                        named.clear()
                else:
                    stop = False
                    for event in events:
                        seen += 1
                        ts = event.ts
                        first_ts, last_end = span
                        if first_ts is None or ts < first_ts:
                            span[0] = ts
                        end = ts + event.dur
                        if last_end is None or end > last_end:
                            span[1] = end
                        if accept is not None and not accept(event):
                            counters.filtered += 1
                            continue
                        if event.category not in io_categories:
                            application += 1
                            continue
                        if take is not None and not take():
                            counters.filtered += 1
                            counters.capped += 1
                            stop = True
                            break
                        if event.name in second_path_calls:
                            _resolve_second_path(event.args, decoder)
                        if scaler is not None:
                            scaler.apply(calls.classify(event.category, event.name), event.args)
                        batch.append(event)
                    if stop:
                        raw.close()
                        break
                if count_only:
                    counters.sent += len(batch)
                    batch.clear()
                    done = seen if tally is None else seen + tally.events
                    if done - counters.events >= batch_events:
                        counters.events = done
                        scope.maybe_yield()
                elif len(batch) >= batch_events:
                    counters.events = seen
                    if not producer.send(batch):
                        raw.close()
                        break
                    counters.sent += len(batch)
                    batch = []
                    scope.maybe_yield()
            if batch and producer.send(batch):
                counters.sent += len(batch)
        finally:
            if tally is not None and tally.events:
                seen += tally.events
                application += tally.application
                counters.sent += tally.events - tally.application
                first_ts, last_end = tally.first_ts, tally.last_end
                assert first_ts is not None and last_end is not None
                if span[0] is None or first_ts < span[0]:
                    span[0] = first_ts
                if span[1] is None or last_end > span[1]:
                    span[1] = last_end
            counters.events = seen
            counters.application += application
            counters.first_ts, counters.last_end = span
            statistics = decoder.statistics()
            counters.bad_lines = statistics.bad_lines
            counters.metadata = statistics.metadata_events
            counters.ignored_lines = statistics.ignored_lines
            counters.joined_lines = statistics.joined_lines
            counters.first_bad_lines = tuple(
                (bad.line, bad.reason) for bad in statistics.first_bad_lines
            )
            if statistics.bad_line_reasons.get(REASON_UNFINISHED_JOIN):
                # Harmless at the end of a file; at the end of a part, the
                # event continues in the next part.
                counters.clean_end = False
    if is_part:
        return
    if decoder.bad_lines and not seen and counters.problem is None:
        counters.problem = (
            f"{path}: no events decoded, {decoder.bad_lines} unusable lines; "
            "is it a DFTracer trace?"
        )


#: Calls that name a second path by hash (``newpath_hash`` for rename,
#: ``pathname_hash`` for openat and the exec family), as DFTracer writes them.
SECOND_PATH_CALLS = frozenset(
    (
        "rename",
        "renameat",
        "renameat2",
        "openat",
        "openat64",
        "execv",
        "execvp",
        "execvpe",
        "execl",
        "execlp",
    )
)


def _resolve_second_path(args: Dict[str, Any], decoder: Decoder) -> None:
    key = args.get("newpath_hash")
    if key is None:
        key = args.get("pathname_hash")
    value = decoder.resolve_path(key)
    if value is not None:
        args[SECOND_PATH] = value


def files_at_once(options: ReplayOptions, count_only: bool) -> int:
    """Return how many files one process reads at once, outside a timed replay.

    ``count_only`` is true for a dry run, which uses one worker thread
    unless ``options.threads`` is given.
    """
    threads = options.threads or (1 if count_only else None)
    if count_only and threads == 1:
        # One thread inflates and decodes, so a second file in flight
        # would only interleave with the first.
        return 1
    return (threads or os.cpu_count() or 1) + 1


def order_groups(
    plan: Plan, files: Sequence[Tuple[int, str]], sandbox: PathSandbox
) -> List[List[int]]:
    """Return the indexes of ``files`` grouped as ``--order resource`` needs.

    Files in one group write, create, rename or remove a path that
    another file of the group uses. Traced paths are compared where the
    sandbox maps them (see :meth:`Plan.file_groups`). Files in different
    groups can replay independently.
    """

    def mapped(path: str) -> Hashable:
        try:
            return sandbox.components(path)
        except SandboxError:
            return path

    index_of = {path: index for index, path in files}
    groups = [
        [index_of[path] for path in group if path in index_of]
        for group in plan.file_groups(mapped)
    ]
    return [group for group in groups if group]


def series_origin() -> SeriesOrigin:
    """Return the origin of the replay clock of a replay's series: now."""
    return SeriesOrigin(time.time_ns())


def timing_setup(options: ReplayOptions, timeline: Optional[Timeline]) -> TimingSetup:
    """Return how ``options`` pace a replay of ``timeline``, for its summary."""
    return TimingSetup(
        options.timing_mode(),
        options.speed_factor(),
        None if timeline is None else timeline.span_us(),
    )


def check_free_space(
    write_bytes: int, options: ReplayOptions, root: str, free: Optional[int] = None
) -> int:
    """Return the bytes a replay will write, capped by ``options.max_bytes``.

    ``write_bytes`` is the estimate of one copy; the result counts every
    copy (``options.copies``). ``free`` is the free space to compare with;
    ``None`` measures the file system of ``root``.

    Raises:
        InsufficientSpaceError: the bytes exceed the free space and
            ``options.force`` is false.
    """
    needed = write_bytes if options.max_bytes is None else min(write_bytes, options.max_bytes)
    needed *= options.copies
    if free is None:
        free = shutil.disk_usage(root).free
    if needed > free and not options.force:
        raise InsufficientSpaceError(needed, free, root)
    return needed


def replay(inputs: Iterable[str], options: ReplayOptions, *, processes: int = 1) -> ReplaySummary:
    """Replay the traces ``inputs`` (files or folders) with ``options``.

    Blocking: returns when the replay has ended. Threads: starts and
    stops its own executor; call it from any thread that is not a task.

    Args:
        processes: worker processes to spread the trace files over (see
            :class:`~greenpipe.replay.ShardedReplayer`); 1 replays in the
            calling process.

    Raises:
        ReplayError: no trace to replay, or the root cannot be used.
        InsufficientSpaceError: not enough free space under the root.
        ValueError: ``processes`` is below 1.
    """
    if processes == 1:
        return Replayer(list(inputs), options).run()
    from ._processes import ShardedReplayer

    return ShardedReplayer(list(inputs), options, processes).run()
