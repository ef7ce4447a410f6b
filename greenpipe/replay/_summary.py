"""Counters kept while replaying, and the summary built from them.

Each stream (one traced process and thread of one trace file) owns a
:class:`StreamStats` that only its task writes, so counting needs no lock.
The summary merges them once the streams are done, or at any moment for a
partial summary after an interruption.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ._calls import REASON_FAILED_IN_TRACE, REASON_MAX_BYTES
from ._data import VerifyCounts

if TYPE_CHECKING:
    from ._series import ReplaySeries, SeriesOrigin

#: Failure messages kept per reason.
MAX_MESSAGES_PER_REASON = 5
#: Examples of order violations listed in a summary, earliest first.
MAX_ORDER_EXAMPLES = 10
#: Root causes of outcome mismatches listed in a summary, earliest first.
MAX_MISMATCH_CAUSES = 10

#: Outcome parity classes of an executed call, compared with its trace.
MATCH = "match"
#: The call succeeded when traced and failed when replayed, or the reverse.
MISMATCH_CLASS = "mismatch-class"
#: Both succeeded, but the bytes moved or the resulting offset differ.
MISMATCH_BYTES = "mismatch-bytes"
#: The trace has no ``ret`` for the call, so there is nothing to compare.
NO_RET_RECORDED = "no-ret-recorded"
PARITY_CLASSES = (MATCH, MISMATCH_CLASS, MISMATCH_BYTES, NO_RET_RECORDED)
#: Sub-buckets per power of two in a latency histogram: the percentiles
#: it reports are upper bounds at most 1/16 (6 %) above the true value.
_SUB_BUCKETS = 16
_frexp = math.frexp


class LatencyHistogram:
    """A log-scale histogram of durations, cheap to fill and to merge.

    Durations are kept in buckets of nanoseconds, 16 per power of two, so
    memory stays constant however many calls are recorded.
    """

    __slots__ = ("buckets", "count", "total", "maximum")

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.maximum = 0.0

    def add(self, seconds: float) -> None:
        """Record one duration in seconds."""
        nanos = seconds * 1e9
        if nanos < 1.0:
            nanos = 1.0
        mantissa, exponent = _frexp(nanos)
        self.buckets[exponent * _SUB_BUCKETS + int((mantissa * 2.0 - 1.0) * _SUB_BUCKETS)] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.maximum:
            self.maximum = seconds

    def merge(self, other: LatencyHistogram) -> None:
        """Add the durations recorded in ``other``."""
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)

    def percentile(self, fraction: float) -> float:
        """Return an upper bound of the ``fraction`` quantile, in seconds."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min(_upper_bound(bucket), self.maximum)
        return self.maximum

    def rows(self) -> List[List[float]]:
        """Return ``[upper bound in seconds, count]`` of each non-empty bucket, in order."""
        return [[_upper_bound(bucket), self.buckets[bucket]] for bucket in sorted(self.buckets)]

    def to_dict(self) -> Dict[str, Any]:
        """Return the count, the p50, p95 and p99 bounds, the maximum and the buckets."""
        return {
            "count": self.count,
            "p50_s": self.percentile(0.50),
            "p95_s": self.percentile(0.95),
            "p99_s": self.percentile(0.99),
            "max_s": self.maximum,
            "histogram": self.rows(),
        }


def _upper_bound(bucket: int) -> float:
    """Return the upper bound of a histogram bucket, in seconds."""
    exponent, sub = divmod(bucket, _SUB_BUCKETS)
    return math.ldexp(0.5 + (sub + 1) / (2.0 * _SUB_BUCKETS), exponent) / 1e9


class StreamStats:
    """Counters of one replayed stream; written by its task only."""

    __slots__ = (
        "file",
        "pid",
        "tid",
        "replayed",
        "failed",
        "skipped",
        "failures",
        "messages",
        "bytes_read",
        "bytes_written",
        "short_reads",
        "short_writes",
        "late",
        "implicit_opens",
        "probes_not_found",
        "descriptors_reopened",
        "calls",
        "latency",
        "parity_match",
        "parity_class",
        "parity_bytes",
        "parity_no_ret",
        "failures_reproduced",
        "causes",
        "order_waits",
        "order_violations",
        "order_examples",
        "order_short_reads",
        "order_missing",
        "copy",
        "verify",
        "last_seconds",
        "lateness_replayer",
        "lateness_busy",
        "lateness_head",
        "lateness_tail",
        "end_offset",
    )

    def __init__(self, file: str, pid: int, tid: int, copy: int = 0) -> None:
        self.file = file
        self.pid = pid
        self.tid = tid
        #: The copy of the replay (``--copies``) that the stream ran in.
        self.copy = copy
        #: Reads checked by ``--verify`` and the mismatches found.
        self.verify = VerifyCounts()
        self.replayed = 0
        self.failed = 0
        #: ``(call name, reason)`` to count.
        self.skipped: Counter[Tuple[str, str]] = Counter()
        self.failures: Counter[str] = Counter()
        self.messages: Dict[str, List[str]] = {}
        self.bytes_read = 0
        self.bytes_written = 0
        self.short_reads = 0
        self.short_writes = 0
        self.late = 0
        self.implicit_opens = 0
        self.probes_not_found = 0
        self.descriptors_reopened = 0
        self.calls: Counter[str] = Counter()
        self.latency: Dict[str, LatencyHistogram] = {}
        # Outcome parity of the executed calls; see ``mismatch``.
        self.parity_match = 0
        self.parity_class = 0
        self.parity_bytes = 0
        self.parity_no_ret = 0
        self.failures_reproduced = 0
        #: Traced path to its first mismatch:
        #: ``[ts, call, mapped path, kind, expected, got, mismatches]``.
        self.causes: Dict[str, List[Any]] = {}
        # Ordering between streams (see ``_order``): calls that waited for
        # a dependency, and calls that broke one, by reason, with the first
        # few examples and how many of them came up short or found their
        # file missing. Other streams' tasks write the violation counters,
        # always under the lock of the replay's order tracker.
        self.order_waits = 0
        self.order_violations: Counter[str] = Counter()
        self.order_examples: List[Dict[str, Any]] = []
        self.order_short_reads = 0
        self.order_missing = 0
        #: Latency of the last call counted by :meth:`done`, in seconds.
        self.last_seconds = 0.0
        # Filled by timed replays only (see ``StreamPacer``). The first two
        # are how late each call started, split into the replayer's part and
        # the part spent waiting for the stream's previous call. The next
        # two repeat the replayer's part for the calls of the first and the
        # last 1 % of the traced span. The last is the seconds from the
        # replay's t0 to the end of the stream's last call.
        self.lateness_replayer = LatencyHistogram()
        self.lateness_busy = LatencyHistogram()
        self.lateness_head = LatencyHistogram()
        self.lateness_tail = LatencyHistogram()
        self.end_offset = 0.0

    def skip(self, name: str, reason: str) -> None:
        """Count one call skipped for ``reason``."""
        self.skipped[(name, reason)] += 1

    def fail(self, name: str, reason: str, message: str) -> None:
        """Count one call that failed, keeping the first few messages."""
        self.failed += 1
        self.failures[reason] += 1
        kept = self.messages.setdefault(reason, [])
        if len(kept) < MAX_MESSAGES_PER_REASON:
            kept.append(message)

    def reproduce_failure(self, name: str) -> None:
        """Count one call that failed when traced and failed again.

        It counts as replayed, without a latency: the replay did what the
        traced program did.
        """
        self.replayed += 1
        self.calls[name] += 1
        self.failures_reproduced += 1
        self.parity_match += 1

    def mismatch(
        self,
        kind: str,
        ts: int,
        name: str,
        key: str,
        path: str,
        expected: str,
        got: str,
    ) -> None:
        """Count one executed call whose outcome differs from the trace.

        ``kind`` is :data:`MISMATCH_CLASS` or :data:`MISMATCH_BYTES`.
        Mismatches are grouped by the traced path ``key``. The earliest one
        by trace start time is kept as the cause, with ``path`` (the mapped
        path), ``expected`` and ``got``. The later ones add to its count.
        """
        if kind == MISMATCH_CLASS:
            self.parity_class += 1
        else:
            self.parity_bytes += 1
        cause = self.causes.get(key)
        if cause is None:
            self.causes[key] = [ts, name, path, kind, expected, got, 1]
            return
        count = cause[6] + 1
        if ts < cause[0]:
            cause[:] = [ts, name, path, kind, expected, got, count]
        else:
            cause[6] = count

    def done(self, name: str, seconds: float) -> None:
        """Count one replayed call and its latency."""
        self.replayed += 1
        self.calls[name] += 1
        self.last_seconds = seconds
        histogram = self.latency.get(name)
        if histogram is None:
            histogram = self.latency[name] = LatencyHistogram()
        histogram.add(seconds)


@dataclasses.dataclass
class FileCounters:
    """Counters of one trace file filled by the parse and decode stages.

    Attributes:
        path: the trace file.
        events: events decoded, metadata events left out.
        filtered: events removed by the filters, sampling or
            ``--max-events``.
        application: events of other categories than POSIX and STDIO.
        bad_lines: lines the decoder could not use.
        read_bad_lines: lines already unusable when read: longer than the
            memory budget allows, or cut off by a damaged gzip member.
        first_ts: earliest start time seen, in trace microseconds.
        last_end: latest ``ts + dur`` seen.
        problem: why the file could not be read, or ``None``.
        lines: physical lines read, as the reader counts them.
        capped: events of ``filtered`` removed by ``--max-events``.
        sent: events passed on to be executed (or, in a dry run, counted).
        metadata: metadata (``ph: "M"``) events.
        ignored_lines: blank lines and lone ``[`` or ``]`` lines.
        joined_lines: lines merged into the line before them because a
            raw newline had split one event.
        first_bad_lines: ``(line number, reason)`` of the first bad lines
            the decoder found, in file order.
        first_read_bad_lines: the same for the bad lines found while
            reading (too long, cut off by damage).
        damaged: the gzip data is damaged, so reading stopped early.
        clean_end: the text read ended outside any gzip member, with no
            line too long to keep and no split event left open. Only a
            part of a file (see ``_split.FilePart``) can end otherwise
            without damage, when its end was not a safe boundary.
    """

    path: str
    events: int = 0
    filtered: int = 0
    application: int = 0
    bad_lines: int = 0
    read_bad_lines: int = 0
    lines: int = 0
    capped: int = 0
    sent: int = 0
    metadata: int = 0
    ignored_lines: int = 0
    joined_lines: int = 0
    first_ts: Optional[int] = None
    last_end: Optional[int] = None
    problem: Optional[str] = None
    first_bad_lines: Tuple[Tuple[int, str], ...] = ()
    first_read_bad_lines: Tuple[Tuple[int, str], ...] = ()
    damaged: bool = False
    clean_end: bool = True

    def span_us(self) -> int:
        """Return the traced time span of the file in microseconds."""
        if self.first_ts is None or self.last_end is None:
            return 0
        return max(self.last_end - self.first_ts, 0)


def merge_copies(counters: List[FileCounters], files: int) -> List[FileCounters]:
    """Add up the counters of the copies of each file.

    ``counters`` lists the files of copy 0, then of copy 1, and so on,
    ``files`` per copy. Returns one counter per file, in order.
    """
    merged = [dataclasses.replace(c) for c in counters[:files]]
    for position, other in enumerate(counters[files:]):
        into = merged[position % files]
        for field in dataclasses.fields(FileCounters):
            name = field.name
            value = getattr(other, name)
            if name in ("path", "problem") or value is None:
                continue
            mine = getattr(into, name)
            if name == "first_ts":
                value = value if mine is None else min(mine, value)
            elif name == "last_end":
                value = value if mine is None else max(mine, value)
            else:
                value += mine
            setattr(into, name, value)
        if into.problem is None:
            into.problem = other.problem
    return merged


@dataclasses.dataclass(frozen=True)
class Preparation:
    """Files and folders that the preparation step created under the root.

    Attributes:
        files: files created or extended so that traced reads find data.
        folders: folders created because the trace uses them before
            creating them.
        bytes: apparent bytes of the prepared files (they are sparse).
        examples: the first few prepared paths inside the root.
        failures: paths that could not be prepared, with the error.
    """

    files: int = 0
    folders: int = 0
    bytes: int = 0
    examples: Tuple[str, ...] = ()
    failures: Tuple[str, ...] = ()


#: Buckets of the physical lines of a trace file, exactly one per line:
#:
#: - ``executed_match``, ``executed_mismatch``, ``executed_no_ret``: calls
#:   executed, by outcome parity (mismatch of either kind together);
#: - ``not_executed_dry_run``: calls a dry run decoded and would execute;
#: - ``filtered``: events removed by filters, sampling, ``--max-events``
#:   or ``--max-bytes``;
#: - ``unsupported``: POSIX and STDIO calls the replayer cannot execute,
#:   either by their kind (``mmap``, ``dup``...) or because the trace lacks
#:   what replaying needs (path, descriptor, size);
#: - ``rejected``: calls rejected as unsafe, because the sandbox rejected
#:   their path or because they failed when traced and could change the
#:   root if replayed;
#: - ``application``, ``metadata``: events of other categories, and
#:   ``ph: "M"`` events;
#: - ``bad``: lines that could not be used;
#: - ``ignored``: blank lines and lone ``[`` or ``]`` lines;
#: - ``joined``: continuation lines of an event that a raw newline split;
#:   the event lands in a bucket through its first line;
#: - ``unaccounted``: lines read but not decoded, because the pass stopped
#:   early (``--max-events``, an interruption). It is 0 after a complete
#:   pass.
LINE_BUCKETS = (
    "executed_match",
    "executed_mismatch",
    "executed_no_ret",
    "not_executed_dry_run",
    "filtered",
    "unsupported",
    "rejected",
    "application",
    "metadata",
    "bad",
    "ignored",
    "joined",
    "unaccounted",
)
#: Reason under which sandbox rejections are counted as failures.
SANDBOX_REASON = "sandbox"


@dataclasses.dataclass(frozen=True)
class TimingSetup:
    """The pacing of a replay, for its summary.

    Attributes:
        mode: ``"asap"``, ``"original"`` or ``"think"``.
        speed: the factor dividing traced gaps; ``None`` for ``asap``.
        span_us: traced microseconds from the first start to the last end
            of the replayed events, ``None`` when unknown.
    """

    mode: str = "asap"
    speed: Optional[float] = None
    span_us: Optional[int] = None


def timing_summary(
    setup: TimingSetup, streams: Iterable[StreamStats], wall_seconds: float
) -> Dict[str, Any]:
    """Merge the lateness of ``streams`` into the ``timing`` part of a summary.

    ``elapsed_s`` is measured from the common start of the replay to the
    end of its last call, or is ``wall_seconds`` for ``asap``, which has
    no common start. ``expected_s`` (open-loop only) is the traced span
    divided by the speed. ``drift_s`` is the median replayer lateness of
    the calls in the last 1 % of the traced span minus that of the calls
    in the first 1 %.
    """
    replayer = LatencyHistogram()
    busy = LatencyHistogram()
    head = LatencyHistogram()
    tail = LatencyHistogram()
    end = 0.0
    for stream in streams:
        replayer.merge(stream.lateness_replayer)
        busy.merge(stream.lateness_busy)
        head.merge(stream.lateness_head)
        tail.merge(stream.lateness_tail)
        end = max(end, stream.end_offset)

    timed = setup.mode != "asap"
    elapsed = end if timed and replayer.count else wall_seconds
    expected: Optional[float] = None
    if setup.mode == "original" and setup.span_us is not None and setup.speed:
        expected = setup.span_us / 1e6 / setup.speed
    drift: Optional[float] = None
    if timed and head.count and tail.count:
        drift = tail.percentile(0.5) - head.percentile(0.5)
    return {
        "mode": setup.mode,
        "speed": setup.speed if timed else None,
        "elapsed_s": elapsed,
        "expected_s": expected,
        "elapsed_error_s": None if expected is None else elapsed - expected,
        "drift_s": drift,
        "lateness": {"replayer": replayer.to_dict(), "busy": busy.to_dict()},
    }


@dataclasses.dataclass(frozen=True)
class ReplaySummary:
    """The outcome of a replay, complete or interrupted.

    Attributes:
        inputs: the trace files, in reading order.
        root: the replay root, ``None`` for a dry run.
        dry_run: whether the calls were only decoded, not executed.
        interrupted: whether the replay was cancelled before its end.
        events_seen: events decoded (metadata left out).
        events_filtered: events removed by filters, sampling or
            ``--max-events``.
        events_application: events of application categories, counted
            and not executed.
        events_replayed: calls executed without error.
        events_failed: calls that raised an error when replayed.
        events_skipped: POSIX and STDIO calls that cannot be replayed.
        bad_lines: trace lines that could not be used, in every file.
        skipped: reason to count.
        skipped_by_call: ``"<call>: <reason>"`` to count.
        failed: reason (an errno name, ``"sandbox"``...) to count.
        failure_messages: reason to the first few messages.
        bytes_read: bytes read by the replayed calls.
        bytes_written: bytes written by the replayed calls.
        short_reads: reads that returned fewer bytes than asked.
        short_writes: writes that stored fewer bytes than the traced call
            did, for example at a file size limit or on a full disk.
        late_events: events that arrived after later events of their
            stream had run (outside the reorder window).
        probes_not_found: ``stat``, ``access`` and ``opendir`` calls, which
            have no traced result, that found nothing; programs probe
            paths before creating them and after removing them, so these
            count as replayed, not failed.
        implicit_opens: files opened by the replayer because a call used a
            descriptor whose ``open`` was not replayed yet, not seen, or
            ran in another stream.
        descriptors_reopened: files reopened because their descriptor had
            been closed to stay under the process's descriptor limit.
        trace_span_us: traced time from the first start to the last end,
            the longest over the files, in microseconds.
        wall_seconds: wall time of the replay itself (after preparation).
        latency: call name to ``count``, ``mean_us``, ``p50_us``,
            ``p90_us``, ``p99_us`` and ``max_us``.
        calls: call name to replayed count.
        files: per trace file: ``events``, ``filtered``, ``application``,
            ``replayed``, ``failed``, ``skipped``, ``bytes_read``,
            ``bytes_written``, ``bad_lines``, ``span_us``, ``streams``.
        streams: per stream: ``file``, ``pid``, ``tid``, ``copy``, ``replayed``,
            ``failed``, ``skipped``, ``bytes_read``, ``bytes_written``.
        preparation: what was created before replaying.
        input_problems: messages about inputs that could not be used.
        processes: per process that read traces: ``role`` (``"main"`` or
            ``"worker"``), ``files``, ``memory_budget_bytes`` (its share
            of the memory budget; 0 for the main process of a
            multi-process replay, which reads no trace) and
            ``peak_rss_bytes``.
        worker_failures: one message per worker process that crashed or
            raised, naming the trace files whose counts are missing.
        parity: the executed calls by outcome parity with the trace,
            :data:`PARITY_CLASSES` to count; the four add up to the calls
            executed, which are ``events_replayed`` plus ``events_failed``
            less the ``"sandbox"`` refusals.
        failures_reproduced: calls that failed when traced and failed
            again; they count as replayed and as ``match``.
        mismatch_causes: the first :data:`MAX_MISMATCH_CAUSES` root causes,
            earliest first. A root cause is the first mismatching call on a
            mapped path; each row has ``call``, ``path``, ``kind``,
            ``expected``, ``got``, ``ts`` and ``mismatches`` (it and the
            later mismatches on the same path).
        mismatch_cause_count: root causes in all, listed or not.
        lines: the input lines by bucket (see :data:`LINE_BUCKETS`), plus
            ``total``, the physical lines read.
        line_details: ``filtered`` by reason, ``unsupported`` by call name
            and ``rejected`` by reason.
        order: ordering between streams: ``mode`` (the ``--order`` mode),
            ``waits`` (calls that waited for a dependency), ``violations``
            (reason to the calls whose replay order broke a trace
            dependency) and ``examples`` (the earliest few, each with
            ``file``, ``path``, ``call``, ``ts`` and ``reason``).
        short_reads_by_order: short reads that broke an order dependency,
            so caused by the replay order; part of ``short_reads``.
        missing_by_order: calls that found no file (``ENOENT``) and broke
            an order dependency, so caused by the replay order.
        copies: copies of the replay that ran at once (``--copies``);
            every count above adds up all of them.
        verify: with ``--verify``, ``reads_checked`` (reads that found
            bytes written earlier in the replay), ``bytes_checked``,
            ``mismatches`` (ranges holding other bytes than the latest
            write before the read in trace order) and ``examples``, the
            first mismatches in trace order, each with ``file`` (the
            traced path), ``path`` (the mapped path), ``offset``,
            ``length``, ``expected`` and ``found``; ``None`` without
            ``--verify``.
        series: the time series and distributions of the executed calls
            (see ``ReplayOptions.series``), or ``None`` when not kept:
            ``trace`` and ``replay`` (``bucket_s``, ``read_bytes``,
            ``written_bytes`` and ``in_flight`` per bucket; trace time
            counts from each file's first replayed call, replay time from
            ``origin_epoch_s``), ``duration_ratio`` per call name (``count``,
            ``zero_traced_dur``, ``p50``, ``p95``, ``p99``, ``max`` of
            replay duration / traced duration), ``files`` and ``paths``
            (traced and replayed bytes read and written; the paths with
            the most bytes) and ``path_count``.
        timing: how the replay was paced and how closely it kept the
            schedule: ``mode``, ``speed``, ``elapsed_s``, ``expected_s``,
            ``elapsed_error_s``, ``drift_s`` and ``lateness`` (``replayer``
            and ``busy`` histograms); see :func:`timing_summary`.
    """

    inputs: Tuple[str, ...]
    root: Optional[str]
    dry_run: bool
    interrupted: bool
    events_seen: int
    events_filtered: int
    events_application: int
    events_replayed: int
    events_failed: int
    events_skipped: int
    bad_lines: int
    skipped: Mapping[str, int]
    skipped_by_call: Mapping[str, int]
    failed: Mapping[str, int]
    failure_messages: Mapping[str, Tuple[str, ...]]
    bytes_read: int
    bytes_written: int
    short_reads: int
    short_writes: int
    late_events: int
    implicit_opens: int
    probes_not_found: int
    descriptors_reopened: int
    trace_span_us: int
    wall_seconds: float
    latency: Mapping[str, Mapping[str, float]]
    calls: Mapping[str, int]
    files: Tuple[Mapping[str, Any], ...]
    streams: Tuple[Mapping[str, Any], ...]
    preparation: Preparation
    input_problems: Tuple[str, ...]
    processes: Tuple[Mapping[str, Any], ...] = ()
    worker_failures: Tuple[str, ...] = ()
    parity: Mapping[str, int] = dataclasses.field(default_factory=dict)
    failures_reproduced: int = 0
    mismatch_causes: Tuple[Mapping[str, Any], ...] = ()
    mismatch_cause_count: int = 0
    lines: Mapping[str, int] = dataclasses.field(default_factory=dict)
    line_details: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    order: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {"mode": "stream", "waits": 0, "violations": {}, "examples": []}
    )
    short_reads_by_order: int = 0
    missing_by_order: int = 0
    copies: int = 1
    verify: Optional[Mapping[str, Any]] = None
    series: Optional[Mapping[str, Any]] = None
    timing: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def exit_code(self) -> int:
        """Return the command's exit code for this outcome.

        130 after an interruption; 1 when a worker process failed or
        nothing was replayed (or, for a dry run, nothing was decoded); 2
        when some calls failed; 0 otherwise.
        """
        if self.interrupted:
            return 130
        if self.worker_failures:
            return 1
        if self.dry_run:
            return 0 if self.events_seen else 1
        if not self.events_replayed:
            return 1
        if self.events_failed:
            return 2
        return 0

    def to_dict(self) -> Dict[str, Any]:
        """Return the summary as JSON-ready values."""
        data = dataclasses.asdict(self)
        data["exit_code"] = self.exit_code()
        return data


def _add_stream_buckets(
    stream: StreamStats, buckets: Counter[str], details: Dict[str, Counter[str]]
) -> None:
    """Add the lines of the events that ``stream`` received to ``buckets``."""
    buckets["executed_match"] += stream.parity_match
    buckets["executed_mismatch"] += stream.parity_class + stream.parity_bytes
    buckets["executed_no_ret"] += stream.parity_no_ret
    for (name, reason), count in stream.skipped.items():
        if reason == REASON_MAX_BYTES:
            buckets["filtered"] += count
            details["filtered"][reason] += count
        elif reason == REASON_FAILED_IN_TRACE:
            buckets["rejected"] += count
            details["rejected"][reason] += count
        else:
            buckets["unsupported"] += count
            details["unsupported"][name] += count
    rejected = stream.failures.get(SANDBOX_REASON, 0)
    if rejected:
        buckets["rejected"] += rejected
        details["rejected"][SANDBOX_REASON] += rejected


def _add_file_buckets(
    counters: FileCounters,
    dry_run: bool,
    buckets: Counter[str],
    details: Dict[str, Counter[str]],
) -> None:
    """Add the lines that the parse and decode stages accounted for."""
    filtered = counters.filtered - counters.capped
    buckets["filtered"] += counters.filtered
    if filtered:
        details["filtered"]["filters and sampling"] += filtered
    if counters.capped:
        details["filtered"]["--max-events"] += counters.capped
    if dry_run:
        buckets["not_executed_dry_run"] += counters.sent
    buckets["application"] += counters.application
    buckets["metadata"] += counters.metadata
    buckets["bad"] += counters.bad_lines + counters.read_bad_lines
    buckets["ignored"] += counters.ignored_lines
    buckets["joined"] += counters.joined_lines


def _line_row(buckets: Counter[str], total: int) -> Dict[str, int]:
    """Return the buckets in :data:`LINE_BUCKETS` order, with ``unaccounted``."""
    row = {"total": total}
    for name in LINE_BUCKETS[:-1]:
        row[name] = buckets[name]
    # Signed, so that a line counted twice shows instead of cancelling out.
    row["unaccounted"] = total - sum(buckets[name] for name in LINE_BUCKETS[:-1])
    return row


def _merge_causes(streams: Iterable[StreamStats]) -> List[Dict[str, Any]]:
    """Merge the streams' mismatch causes by mapped path, earliest first.

    Per path, the cause with the earliest start time wins, then the first
    stream in ``streams``; the counts add up. Pass the streams in a fixed
    order so that the result does not depend on how they were run.
    """
    # NOTE: shards replayed into sub-roots (Dask) map one traced path to a
    # different path per shard, so their causes are not merged together.
    merged: Dict[str, Dict[str, Any]] = {}
    for stream in streams:
        for ts, name, path, kind, expected, got, count in stream.causes.values():
            current = merged.get(path)
            if current is None:
                merged[path] = {
                    "ts": ts, "call": name, "path": path, "kind": kind,
                    "expected": expected, "got": got, "mismatches": count,
                }
                continue
            count += current["mismatches"]
            if ts < current["ts"]:
                current.update(ts=ts, call=name, kind=kind, expected=expected, got=got)
            current["mismatches"] = count
    return sorted(merged.values(), key=lambda row: (row["ts"], row["path"]))


def build_summary(
    *,
    inputs: Iterable[str],
    root: Optional[str],
    dry_run: bool,
    interrupted: bool,
    file_counters: Iterable[FileCounters],
    streams: Iterable[StreamStats],
    wall_seconds: float,
    preparation: Preparation,
    processes: Iterable[Mapping[str, Any]] = (),
    worker_failures: Iterable[str] = (),
    order_mode: str = "stream",
    copies: int = 1,
    verify: bool = False,
    series: Optional[ReplaySeries] = None,
    series_origin: Optional[SeriesOrigin] = None,
    timing: TimingSetup = TimingSetup(),
) -> ReplaySummary:
    """Merge the per-file and per-stream counters into a summary.

    The result depends only on the counters, not on the order of
    ``streams`` nor on which process filled them, so summaries of shards
    merged here equal the summary of one pass over all the files.
    """
    counters = list(file_counters)
    stream_list = sorted(streams, key=lambda s: (s.file, s.pid, s.tid, s.copy))
    verified = VerifyCounts()
    skipped: Counter[str] = Counter()
    skipped_by_call: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    messages: Dict[str, List[str]] = {}
    calls: Counter[str] = Counter()
    latency: Dict[str, LatencyHistogram] = {}
    per_file: Dict[str, Dict[str, int]] = {
        c.path: dict.fromkeys(
            ("replayed", "failed", "skipped", "bytes_read", "bytes_written", "streams"), 0
        )
        for c in counters
    }
    stream_rows: List[Dict[str, Any]] = []
    totals = Counter[str]()
    buckets: Dict[str, Counter[str]] = {c.path: Counter() for c in counters}
    details: Dict[str, Counter[str]] = {
        "filtered": Counter(), "unsupported": Counter(), "rejected": Counter()
    }

    violations: Counter[str] = Counter()
    examples: List[Dict[str, Any]] = []
    for stream in stream_list:
        skipped_here = sum(stream.skipped.values())
        for (name, reason), count in stream.skipped.items():
            skipped[reason] += count
            skipped_by_call[f"{name}: {reason}"] += count
        failed.update(stream.failures)
        for reason, kept in stream.messages.items():
            room = MAX_MESSAGES_PER_REASON - len(messages.setdefault(reason, []))
            messages[reason].extend(kept[: max(room, 0)])
        calls.update(stream.calls)
        for name, histogram in stream.latency.items():
            latency.setdefault(name, LatencyHistogram()).merge(histogram)
        totals.update(
            replayed=stream.replayed,
            failed=stream.failed,
            skipped=skipped_here,
            bytes_read=stream.bytes_read,
            bytes_written=stream.bytes_written,
            short_reads=stream.short_reads,
            short_writes=stream.short_writes,
            late=stream.late,
            implicit_opens=stream.implicit_opens,
            probes_not_found=stream.probes_not_found,
            descriptors_reopened=stream.descriptors_reopened,
            parity_match=stream.parity_match,
            parity_class=stream.parity_class,
            parity_bytes=stream.parity_bytes,
            parity_no_ret=stream.parity_no_ret,
            failures_reproduced=stream.failures_reproduced,
            order_waits=stream.order_waits,
            order_short_reads=stream.order_short_reads,
            order_missing=stream.order_missing,
        )
        violations.update(stream.order_violations)
        examples.extend(stream.order_examples)
        verified.merge(stream.verify)
        _add_stream_buckets(stream, buckets.setdefault(stream.file, Counter()), details)
        row = per_file.setdefault(
            stream.file,
            dict.fromkeys(
                ("replayed", "failed", "skipped", "bytes_read", "bytes_written", "streams"), 0
            ),
        )
        row["replayed"] += stream.replayed
        row["failed"] += stream.failed
        row["skipped"] += skipped_here
        row["bytes_read"] += stream.bytes_read
        row["bytes_written"] += stream.bytes_written
        row["streams"] += 1
        stream_rows.append(
            {
                "file": stream.file,
                "pid": stream.pid,
                "tid": stream.tid,
                "copy": stream.copy,
                "replayed": stream.replayed,
                "failed": stream.failed,
                "skipped": skipped_here,
                "bytes_read": stream.bytes_read,
                "bytes_written": stream.bytes_written,
            }
        )

    file_rows = []
    line_totals: Counter[str] = Counter()
    for c in counters:
        file_buckets = buckets[c.path]
        _add_file_buckets(c, dry_run, file_buckets, details)
        lines = _line_row(file_buckets, c.lines)
        line_totals.update(lines)
        row: Dict[str, Any] = dict(per_file[c.path])
        row.update(
            path=c.path,
            events=c.events,
            filtered=c.filtered,
            application=c.application,
            bad_lines=c.bad_lines + c.read_bad_lines,
            span_us=c.span_us(),
            lines=lines,
        )
        file_rows.append(row)
    causes = _merge_causes(stream_list)

    return ReplaySummary(
        inputs=tuple(c.path for c in counters) or tuple(inputs),
        root=root,
        dry_run=dry_run,
        interrupted=interrupted,
        events_seen=sum(c.events for c in counters),
        events_filtered=sum(c.filtered for c in counters),
        events_application=sum(c.application for c in counters),
        events_replayed=totals["replayed"],
        events_failed=totals["failed"],
        events_skipped=totals["skipped"],
        bad_lines=sum(c.bad_lines + c.read_bad_lines for c in counters),
        skipped=dict(skipped.most_common()),
        skipped_by_call=dict(skipped_by_call.most_common()),
        failed=dict(failed.most_common()),
        failure_messages={k: tuple(v) for k, v in messages.items()},
        bytes_read=totals["bytes_read"],
        bytes_written=totals["bytes_written"],
        short_reads=totals["short_reads"],
        short_writes=totals["short_writes"],
        late_events=totals["late"],
        implicit_opens=totals["implicit_opens"],
        probes_not_found=totals["probes_not_found"],
        descriptors_reopened=totals["descriptors_reopened"],
        trace_span_us=max((c.span_us() for c in counters), default=0),
        wall_seconds=wall_seconds,
        latency={
            name: {
                "count": h.count,
                "mean_us": h.total / h.count * 1e6 if h.count else 0.0,
                "p50_us": h.percentile(0.50) * 1e6,
                "p90_us": h.percentile(0.90) * 1e6,
                "p99_us": h.percentile(0.99) * 1e6,
                "max_us": h.maximum * 1e6,
            }
            for name, h in sorted(latency.items())
        },
        calls=dict(calls.most_common()),
        files=tuple(file_rows),
        streams=tuple(stream_rows),
        preparation=preparation,
        input_problems=tuple(c.problem for c in counters if c.problem),
        processes=tuple(processes),
        worker_failures=tuple(worker_failures),
        parity={
            MATCH: totals["parity_match"],
            MISMATCH_CLASS: totals["parity_class"],
            MISMATCH_BYTES: totals["parity_bytes"],
            NO_RET_RECORDED: totals["parity_no_ret"],
        },
        failures_reproduced=totals["failures_reproduced"],
        mismatch_causes=tuple(causes[:MAX_MISMATCH_CAUSES]),
        mismatch_cause_count=len(causes),
        lines={"total": line_totals["total"], **{name: line_totals[name] for name in LINE_BUCKETS}},
        line_details={key: dict(counter.most_common()) for key, counter in details.items()},
        order={
            "mode": order_mode,
            "waits": totals["order_waits"],
            "violations": dict(sorted(violations.items())),
            "examples": sorted(
                examples, key=lambda row: (row["ts"], row["file"], row["path"], row["call"])
            )[:MAX_ORDER_EXAMPLES],
        },
        short_reads_by_order=totals["order_short_reads"],
        missing_by_order=totals["order_missing"],
        copies=copies,
        verify=verified.to_dict() if verify else None,
        series=None if series is None else series.to_dict(series_origin),
        timing=timing_summary(timing, stream_list, wall_seconds),
    )
