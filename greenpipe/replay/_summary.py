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
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

#: Failure messages kept per reason.
MAX_MESSAGES_PER_REASON = 5
#: Sub-buckets per power of two in a latency histogram: the percentiles
#: it reports are upper bounds at most 1/16 (6 %) above the true value.
_SUB_BUCKETS = 16


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
        mantissa, exponent = math.frexp(nanos)
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
                exponent, sub = divmod(bucket, _SUB_BUCKETS)
                upper = math.ldexp(0.5 + (sub + 1) / (2.0 * _SUB_BUCKETS), exponent)
                return min(upper / 1e9, self.maximum)
        return self.maximum


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
    )

    def __init__(self, file: str, pid: int, tid: int) -> None:
        self.file = file
        self.pid = pid
        self.tid = tid
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

    def done(self, name: str, seconds: float) -> None:
        """Count one replayed call and its latency."""
        self.replayed += 1
        self.calls[name] += 1
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
    """

    path: str
    events: int = 0
    filtered: int = 0
    application: int = 0
    bad_lines: int = 0
    read_bad_lines: int = 0
    first_ts: Optional[int] = None
    last_end: Optional[int] = None
    problem: Optional[str] = None

    def span_us(self) -> int:
        """Return the traced time span of the file in microseconds."""
        if self.first_ts is None or self.last_end is None:
            return 0
        return max(self.last_end - self.first_ts, 0)


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
        streams: per stream: ``file``, ``pid``, ``tid``, ``replayed``,
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
) -> ReplaySummary:
    """Merge the per-file and per-stream counters into a summary.

    The result depends only on the counters, not on the order of
    ``streams`` nor on which process filled them, so summaries of shards
    merged here equal the summary of one pass over all the files.
    """
    counters = list(file_counters)
    stream_list = sorted(streams, key=lambda s: (s.file, s.pid, s.tid))
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
        )
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
                "replayed": stream.replayed,
                "failed": stream.failed,
                "skipped": skipped_here,
                "bytes_read": stream.bytes_read,
                "bytes_written": stream.bytes_written,
            }
        )

    file_rows = []
    for c in counters:
        row = dict(per_file[c.path])
        row.update(
            path=c.path,
            events=c.events,
            filtered=c.filtered,
            application=c.application,
            bad_lines=c.bad_lines + c.read_bad_lines,
            span_us=c.span_us(),
        )
        file_rows.append(row)

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
    )
