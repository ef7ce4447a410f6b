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

import logging
import os
import resource
import shutil
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .._channel import Channel, ChannelProducer, make_channel
from .._compat import allocate_lock
from .._errors import Cancelled, GreenpipeError
from .._executor import Executor
from .._memory import compute_memory_budget
from .._scope import CoroScope
from ..trace import Decoder, Event, TraceReader
from ..trace._decoder import effective_budget
from ..trace._event import HashTable
from ..trace._inflate import ByteRange, iter_line_chunks
from ..trace._reader import MAX_CHUNK_BYTES
from ..trace._split import scan_metadata
from ..trace._stats import REASON_UNFINISHED_JOIN, FileRecord
from . import _calls as calls
from ._execute import SECOND_PATH, ByteBudget, ReplayContext, StreamRunner
from ._options import EventFilter, EventLimit, ReplayOptions
from ._plan import FilePlan, Plan
from ._sandbox import PathSandbox, prepare_root
from ._summary import FileCounters, Preparation, ReplaySummary, StreamStats, build_summary

logger = logging.getLogger(__name__)

#: Raw chunks queued between parse and decode.
RAW_CAPACITY = 4
#: Events per batch sent from decode to the router.
BATCH_EVENTS = 512
#: Batches queued between decode and the router.
EVENT_CAPACITY = 8
#: Batches queued for each stream.
STREAM_CAPACITY = 8

Sink = Callable[[CoroScope, int, str, Channel[Any], FileCounters], None]


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
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files, problems


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
    """

    def __init__(self, inputs: Sequence[str], options: ReplayOptions) -> None:
        self.inputs = list(inputs)
        self.options = options
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
        if self._phase in ("replay", "done"):
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
        if options.dry_run:
            return self._run_dry(files, problems)

        assert options.root is not None
        message = prepare_root(options.root)
        if message is not None:
            raise ReplayError(message)
        with PathSandbox(options.root) as sandbox:
            return self._run_real(files, problems, sandbox)

    def _finish(
        self,
        files: List[str],
        problems: List[str],
        root: Optional[str],
        wall: float,
        preparation: Preparation,
    ) -> ReplaySummary:
        self._set_phase("done")
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
        )

    def _run_dry(self, files: List[str], problems: List[str]) -> ReplaySummary:
        started = time.monotonic()
        self.dry_pass(list(enumerate(files)))
        return self._finish(files, problems, None, time.monotonic() - started, Preparation())

    def _run_real(
        self, files: List[str], problems: List[str], sandbox: PathSandbox
    ) -> ReplaySummary:
        options = self.options
        indexed = list(enumerate(files))
        plan = self.plan_pass(indexed)
        if self._cancelled:
            return self._finish(files, problems, sandbox.root, 0.0, Preparation())

        needed = check_free_space(plan.write_bytes, options, sandbox.root)

        self._set_phase("prepare")
        preparation = plan.prepare(sandbox)

        self._events_total = plan.events
        self._bytes_total = needed
        started = time.monotonic()
        self.replay_pass(indexed, sandbox, plan.first_ts)
        return self._finish(files, problems, sandbox.root, time.monotonic() - started, preparation)

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

        def plan_sink(scope: CoroScope, index: int, path: str, channel: Channel[Any], c: FileCounters) -> None:
            file_plan = FilePlan()
            for batch in channel:
                file_plan.feed(batch)
                self._plan_events += len(batch)
                scope.maybe_yield()
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

        def sink(scope: CoroScope, index: int, path: str, channel: Channel[Any], c: FileCounters) -> None:
            for _ in channel:
                scope.maybe_yield()

        return self._passes(files, sink, keep_counters=True, parts=parts)

    def replay_pass(
        self,
        files: Sequence[Tuple[int, str]],
        sandbox: PathSandbox,
        anchors: Mapping[str, int],
    ) -> Tuple[List[FileCounters], List[StreamStats]]:
        """Replay ``files`` under ``sandbox``, which must be prepared already.

        Args:
            anchors: per trace file, the first start time of its plan, from
                which ``original`` timing measures the traced gaps.

        Returns:
            The counters of the files, in order, and of their streams.
        """
        self._set_phase("replay")
        options = self.options
        context = ReplayContext(
            sandbox,
            budget=ByteBudget(options.max_bytes),
            speed=options.speed(),
            window=options.window,
        )
        try:
            counters = self._passes(files, self._make_router(context, anchors), keep_counters=True)
        finally:
            left_open = context.close_all()
            if left_open:
                logger.debug("closed %d descriptors left open by the trace", left_open)
        return counters, list(self._streams)

    def _passes(
        self,
        files: Sequence[Tuple[int, str]],
        sink: Sink,
        *,
        keep_counters: bool,
        parts: Sequence[Optional[PartBounds]] = (),
    ) -> List[FileCounters]:
        limit = EventLimit(self.options.max_events)
        counters = [FileCounters(path=path) for _, path in files]
        if keep_counters:
            self._counters = counters

        def main(scope: CoroScope) -> None:
            work: Channel[Tuple[int, int, str]] = make_channel(0)
            for position, (index, path) in enumerate(files):
                work.send((position, index, path))
            work.close()
            workers = min(len(files), (self.options.threads or os.cpu_count() or 1) + 1)

            def file_worker(scope: CoroScope) -> None:
                for position, index, path in work:
                    part = parts[position] if parts else None
                    scope.scope(
                        self._file_pipeline, index, path, counters[position], sink, limit, part
                    )

            def body(inner: CoroScope) -> None:
                with self._lock:
                    self._scopes.append(inner)
                    if self._cancelled:
                        inner.cancel()
                try:
                    for number in range(workers):
                        inner.spawn(file_worker, name=f"files-{number}")
                    inner.join_all()
                finally:
                    with self._lock:
                        self._scopes.remove(inner)

            scope.scope(body)

        with Executor(self.options.threads, name="replay") as executor:
            try:
                executor.run(main, name="replay")
            except Cancelled:
                if not self._cancelled:
                    raise
        return counters

    def _file_pipeline(
        self,
        scope: CoroScope,
        index: int,
        path: str,
        counters: FileCounters,
        sink: Sink,
        limit: EventLimit,
        part: Optional[PartBounds] = None,
    ) -> None:
        budget = self.options.memory_budget
        byte_range: ByteRange = None
        hashes: Optional[HashTable] = None
        first_text = b""
        if part is not None:
            first_member = 1
            if part.start > 0:
                try:
                    hashes, members, first_text = scope.spawn_io(
                        scan_metadata,
                        path,
                        part.start,
                        _chunk_bytes(budget),
                        effective_budget(budget) // 4,
                        name=f"scan metadata {path}",
                    ).result()
                    first_member = members + 1
                except OSError:
                    pass  # _parse reports the file as unreadable
            byte_range = (part.start, part.stop, first_member)
        raw: Channel[bytes] = make_channel(RAW_CAPACITY)
        events: Channel[List[Event]] = make_channel(EVENT_CAPACITY)
        scope.spawn(
            _parse,
            path,
            raw.producer(),
            counters,
            budget,
            byte_range,
            first_text,
            name=f"parse {path}",
        )
        scope.spawn(
            _decode,
            path,
            raw,
            events.producer(),
            counters,
            EventFilter(self.options, index),
            limit,
            budget,
            hashes,
            part is not None,
            name=f"decode {path}",
        )
        sink(scope, index, path, events, counters)

    def _make_router(self, context: ReplayContext, anchors: Mapping[str, int]) -> Sink:
        def route(scope: CoroScope, index: int, path: str, channel: Channel[Any], c: FileCounters) -> None:
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
                                scope, context, path, key, anchor
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
    ) -> ChannelProducer[List[Event]]:
        channel: Channel[List[Event]] = make_channel(STREAM_CAPACITY)
        producer = channel.producer()
        stats = StreamStats(path, key[0], key[1])
        with self._lock:
            self._streams.append(stats)
        runner = StreamRunner(context, stats, anchor)

        def stream(inner: CoroScope) -> None:
            runner.run(channel, inner.maybe_yield)

        scope.spawn(stream, name=f"stream {key[0]}/{key[1]} of {os.path.basename(path)}")
        return producer


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
) -> None:
    """Read and inflate ``path`` in an I/O thread, sending line-aligned chunks.

    With ``byte_range``, only that part of the file is read, and
    ``first_text``, the end of the line cut by the range's start, comes
    first.
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
    hashes: Optional[HashTable] = None,
    is_part: bool = False,
) -> None:
    """Decode chunks into events, resolve second paths, filter, and batch.

    ``hashes`` is the hash table in force where the chunks start. For a
    part of a file (``is_part``), whether the file decoded to nothing is
    decided when the parts are merged, so it is not reported here.
    """
    decoder = Decoder(path, memory_budget=memory_budget, hashes=hashes)
    batch: List[Event] = []
    io_categories = calls.IO_CATEGORIES
    first_ts = counters.first_ts
    last_end = counters.last_end
    seen = 0
    # Looked up once, because without filters or a cap every event would
    # pay for a call that always returns True.
    accept = None if event_filter.plain else event_filter.accept
    take = None if limit.limit is None else limit.take
    second_path_calls = SECOND_PATH_CALLS
    application = 0  # kept in a local, written to the counters at the end
    with producer.guard():
        try:
            for event in decoder.iter_events(iter(raw)):
                seen += 1
                ts = event.ts
                if first_ts is None or ts < first_ts:
                    first_ts = ts
                end = ts + event.dur
                if last_end is None or end > last_end:
                    last_end = end
                if accept is not None and not accept(event):
                    counters.filtered += 1
                    continue
                if event.category not in io_categories:
                    application += 1
                    continue
                if take is not None and not take():
                    counters.filtered += 1
                    counters.capped += 1
                    raw.close()
                    break
                if event.name in second_path_calls:
                    _resolve_second_path(event.args, decoder)
                batch.append(event)
                if len(batch) >= BATCH_EVENTS:
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
            counters.events = seen
            counters.application += application
            counters.first_ts = first_ts
            counters.last_end = last_end
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


def check_free_space(
    write_bytes: int, options: ReplayOptions, root: str, free: Optional[int] = None
) -> int:
    """Return the bytes a replay will write, capped by ``options.max_bytes``.

    ``free`` is the free space to compare with; ``None`` measures the file
    system of ``root``.

    Raises:
        InsufficientSpaceError: the bytes exceed the free space and
            ``options.force`` is false.
    """
    needed = write_bytes if options.max_bytes is None else min(write_bytes, options.max_bytes)
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
