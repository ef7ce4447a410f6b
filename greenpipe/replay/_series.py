"""Time series and distributions of a replay, for the report.

What is kept. Every executed call is recorded on two clocks. Trace time
is the call's traced ``ts`` and ``dur``, relative to the first traced
start of its trace file. Replay time is when the replay issued the call
and how long its system call took, relative to the start of the replay
round.
Each file counts from its own first start because the replay starts the
files together, each from its own first start (``--timing original``
measures the gaps of a file from it), so the two clocks line up:

- bytes read and written per time bucket;
- busy time per bucket: the part of each call's interval that falls in
  the bucket, summed. Divided by the bucket width it is the mean number
  of operations in flight;
- per call name, a histogram of replay duration / traced ``dur``;
- per trace file and per mapped path, the bytes read and written by the
  traced calls and by the replayed ones.

Why it merges exactly. Every value is an integer: bytes, traced
microseconds, replayed nanoseconds. Bucket widths are a base width times
a power of two, and a series that outgrows :data:`MAX_BUCKETS` doubles
its width, adding neighbouring buckets. The width a series ends with is
the smallest that covers the latest time it saw, and folding two series
coarsens the finer one to the width of the other before adding. Integer
sums do not depend on their order, so series folded in any order, in
one process or many, equal the series of one pass over all the calls.

Cost. Each stream fills a :class:`StreamRecorder` of its own, so the hot
path takes no lock. When a stream ends, its recorder is folded into the
replay's :class:`SeriesCollector` under a lock, so memory grows with the
streams running at once, not with all the streams of the replay.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from .._compat import allocate_lock
from ..trace import Event
from . import _calls as calls
from ._summary import _SUB_BUCKETS, LatencyHistogram

#: Most buckets of a time series; a longer series gets wider buckets.
MAX_BUCKETS = 1024
#: Narrowest bucket: 1 ms, in the unit of each clock.
TRACE_BASE_WIDTH_US = 1_000
REPLAY_BASE_WIDTH_NS = 1_000_000
#: Mapped paths kept with their bytes per process; calls on more paths are
#: added to one row for the others.
MAX_PATHS = 10_000
#: Paths listed in a summary, most bytes first.
MAX_PATHS_LISTED = 50
#: Name of the row that collects the paths beyond :data:`MAX_PATHS`.
OTHER_PATHS = "(other paths)"

_READ_OPS = calls.READ_OPS
_BYTE_OPS = calls.BYTE_OPS
#: Data calls whose ``ret`` counts items of ``size`` bytes.
_ITEM_OPS = frozenset(("fread", "fwrite"))
_frexp = math.frexp


class Timeline:
    """Bytes read, bytes written and busy time per time bucket.

    Times and durations are integers in the unit of the clock (traced
    microseconds or replayed nanoseconds), relative to the series origin.
    Buckets are ``width`` units wide, and there are at most
    :data:`MAX_BUCKETS` of them.
    """

    __slots__ = ("width", "read", "written", "busy")

    def __init__(self, base_width: int) -> None:
        self.width = base_width
        self.read: List[int] = []
        self.written: List[int] = []
        self.busy: List[int] = []

    def _grow(self, index: int) -> int:
        """Make room for bucket ``index`` (at the current width); return it.

        Returns the index at the new width when the series had to widen.
        """
        while index >= MAX_BUCKETS:
            self._coarsen(2)
            index //= 2
        missing = index + 1 - len(self.busy)
        if missing > 0:
            padding = [0] * missing
            self.read.extend(padding)
            self.written.extend(padding)
            self.busy.extend(padding)
        return index

    def _coarsen(self, factor: int) -> None:
        """Multiply the width by ``factor`` (a power of two), adding buckets."""
        self.width *= factor
        for name in ("read", "written", "busy"):
            old = getattr(self, name)
            new = [0] * ((len(old) + factor - 1) // factor)
            for index, value in enumerate(old):
                new[index // factor] += value
            setattr(self, name, new)

    def add(self, start: int, duration: int, read: int, written: int) -> None:
        """Record one call that started at ``start`` and lasted ``duration``.

        Its bytes count in the bucket where it started; its busy time is
        spread over the buckets its interval overlaps.
        """
        if start < 0:
            start = 0
        if duration < 0:
            duration = 0
        width = self.width
        end = start + duration
        last = end // width
        if last >= len(self.busy):
            self._grow(last)
            width = self.width
            last = end // width
        first = start // width
        if read:
            self.read[first] += read
        if written:
            self.written[first] += written
        busy = self.busy
        if first == last:
            busy[first] += duration
            return
        busy[first] += (first + 1) * width - start
        for index in range(first + 1, last):
            busy[index] += width
        busy[last] += end - last * width

    def merge(self, other: Timeline) -> None:
        """Add the buckets of ``other``, which has the same base width."""
        if other.width > self.width:
            self._coarsen(other.width // self.width)
        factor = self.width // other.width
        source = other
        if factor > 1:
            source = Timeline(other.width)
            source.read = list(other.read)
            source.written = list(other.written)
            source.busy = list(other.busy)
            source._coarsen(factor)
        if source.busy:
            self._grow(len(source.busy) - 1)
        for mine, theirs in (
            (self.read, source.read),
            (self.written, source.written),
            (self.busy, source.busy),
        ):
            for index, value in enumerate(theirs):
                if value:
                    mine[index] += value

    def to_dict(self, unit_seconds: float) -> Dict[str, Any]:
        """Return the buckets as JSON values; ``unit_seconds`` is the clock unit."""
        width = self.width * unit_seconds
        return {
            "bucket_s": width,
            "read_bytes": list(self.read),
            "written_bytes": list(self.written),
            "in_flight": [busy / self.width for busy in self.busy],
        }


class RatioHistogram(LatencyHistogram):
    """A log-scale histogram of ratios (replay duration / traced ``dur``).

    The buckets of :class:`LatencyHistogram`, filled with unitless values:
    percentiles are upper bounds at most 6 % above the true value, and
    ratios below 1e-9 count as 1e-9.
    """

    __slots__ = ()


@dataclasses.dataclass(frozen=True)
class SeriesOrigin:
    """The zero of the replay clock, common to every process and shard.

    Attributes:
        replay_epoch_ns: when the replay round started, in nanoseconds
            since the Unix epoch. Each process converts its own clock
            with it, so on a cluster the replay series line up only as
            well as the machines' clocks do.
    """

    replay_epoch_ns: int


class ReplaySeries:
    """The mergeable series and distributions of some streams.

    Attributes:
        trace: the traced calls per bucket of trace time.
        replay: the replayed calls per bucket of replay time.
        ratios: call name to its histogram of replay / traced duration.
        zero_dur: call name to calls whose traced ``dur`` was 0, which
            have no ratio (the trace's clock ticks in microseconds).
        files: trace file to ``[traced read, traced written, replayed
            read, replayed written]`` bytes.
        paths: mapped path to the same four numbers.
        path_count: distinct mapped paths seen, including those folded
            into :data:`OTHER_PATHS`.
    """

    def __init__(self) -> None:
        self.trace = Timeline(TRACE_BASE_WIDTH_US)
        self.replay = Timeline(REPLAY_BASE_WIDTH_NS)
        self.ratios: Dict[str, RatioHistogram] = {}
        self.zero_dur: Dict[str, int] = {}
        self.files: Dict[str, List[int]] = {}
        self.paths: Dict[str, List[int]] = {}
        self.path_count = 0

    def merge(self, other: ReplaySeries) -> None:
        """Add everything recorded in ``other``."""
        self.trace.merge(other.trace)
        self.replay.merge(other.replay)
        for name, histogram in other.ratios.items():
            mine = self.ratios.get(name)
            if mine is None:
                mine = self.ratios[name] = RatioHistogram()
            mine.merge(histogram)
        for name, count in other.zero_dur.items():
            self.zero_dur[name] = self.zero_dur.get(name, 0) + count
        _add_rows(self.files, other.files, None)
        self.path_count += _add_rows(self.paths, other.paths, MAX_PATHS)

    def to_dict(self, origin: Optional[SeriesOrigin]) -> Dict[str, Any]:
        """Return the series as JSON values.

        Paths are listed most bytes first, at most
        :data:`MAX_PATHS_LISTED`, then by name.
        """
        ratios = {}
        for name in sorted(set(self.ratios) | set(self.zero_dur)):
            histogram = self.ratios.get(name) or RatioHistogram()
            ratios[name] = {
                "count": histogram.count,
                "zero_traced_dur": self.zero_dur.get(name, 0),
                "p50": histogram.percentile(0.50),
                "p95": histogram.percentile(0.95),
                "p99": histogram.percentile(0.99),
                "max": histogram.maximum,
            }
        paths = sorted(self.paths.items(), key=lambda item: (-sum(item[1]), item[0]))
        trace = self.trace.to_dict(1e-6)
        replay = self.replay.to_dict(1e-9)
        trace["origin"] = "first traced start of each file"
        replay["origin_epoch_s"] = origin.replay_epoch_ns / 1e9 if origin is not None else None
        return {
            "trace": trace,
            "replay": replay,
            "duration_ratio": ratios,
            "files": [_bytes_row("file", name, row) for name, row in sorted(self.files.items())],
            "paths": [_bytes_row("path", name, row) for name, row in paths[:MAX_PATHS_LISTED]],
            "path_count": self.path_count,
        }


def _add_rows(mine: Dict[str, List[int]], theirs: Dict[str, List[int]], cap: Optional[int]) -> int:
    """Add the byte rows of ``theirs`` to ``mine``; return how many keys are new.

    Past ``cap`` keys, new keys are added to the :data:`OTHER_PATHS` row.
    """
    new = 0
    # NOTE: past the cap, a key folded into the other row counts as new
    # each time it is merged again, so path counts beyond it are upper bounds.
    for key, row in theirs.items():
        target = mine.get(key)
        if target is None:
            if key != OTHER_PATHS:
                new += 1
            if cap is not None and len(mine) >= cap:
                key = OTHER_PATHS
                target = mine.get(key)
            if target is None:
                mine[key] = list(row)
                continue
        for index in range(4):
            target[index] += row[index]
    return new


def _bytes_row(kind: str, name: str, row: List[int]) -> Dict[str, Any]:
    return {
        kind: name,
        "trace_read_bytes": row[0],
        "trace_written_bytes": row[1],
        "replay_read_bytes": row[2],
        "replay_written_bytes": row[3],
    }


class SeriesCollector:
    """The series of one replay pass, folded from its streams.

    Threads: :meth:`fold` is safe from any thread.

    Args:
        origin: the zero of the replay clock of every series of the
            replay.
        anchors: per trace file, its first traced start, the zero of its
            trace clock. A file missing here counts from the first call
            that one of its streams records.
    """

    def __init__(self, origin: SeriesOrigin, anchors: Mapping[str, int]) -> None:
        self.origin = origin
        self.anchors = anchors
        self.series = ReplaySeries()
        self._lock = allocate_lock()
        # perf_counter_ns of the replay origin in this process.
        self.replay_origin_perf_ns = origin.replay_epoch_ns - (
            time.time_ns() - time.perf_counter_ns()
        )

    def recorder(self, file: str) -> StreamRecorder:
        """Return a recorder for one stream of trace ``file``."""
        return StreamRecorder(self, file)

    def fold(self, series: ReplaySeries) -> None:
        """Add the series of a stream that ended; its paths are mapped paths."""
        with self._lock:
            self.series.merge(series)


class StreamRecorder:
    """The series of one stream; only its task writes to it.

    Bytes are kept per traced path only (``None`` for calls without one).
    The file's row is their sum, made when the stream is folded.
    """

    __slots__ = ("collector", "series", "file", "_trace_origin", "_replay_origin", "_rows")

    def __init__(self, collector: SeriesCollector, file: str) -> None:
        self.collector = collector
        self.series = ReplaySeries()
        self.file = file
        self._trace_origin = collector.anchors.get(file)
        self._replay_origin = collector.replay_origin_perf_ns
        self._rows: Dict[Optional[str], List[int]] = {}

    def record(
        self,
        event: Event,
        op: str,
        ret: Optional[int],
        path: Optional[str],
        end_ns: int,
        seconds: Optional[float],
        read: int,
        written: int,
    ) -> None:
        """Record one executed call.

        Args:
            event: the traced event.
            op: the operation that replayed it.
            ret: the traced result, as an integer, or ``None``.
            path: the traced path the call used, if known.
            end_ns: ``perf_counter_ns()`` when the replayed call returned.
            seconds: duration of the replayed system call, ``None`` when
                it failed (it then adds no replay time).
            read, written: bytes the replayed call moved.
        """
        # This runs once per executed call, so the common cases are
        # inlined: a call that ends in the bucket it started in, which
        # exists already, and the ratio histogram's bucket.
        traced_read = traced_written = 0
        if op in _BYTE_OPS:
            if ret is not None and ret >= 0 and op not in _ITEM_OPS:
                traced = ret
            else:
                traced = calls.done_size(op, event.args) or 0
            if op in _READ_OPS:
                traced_read = traced
            else:
                traced_written = traced
        series = self.series
        ts = event.ts
        dur = event.dur
        origin = self._trace_origin
        if origin is None:
            origin = self._trace_origin = ts
        start = ts - origin
        line = series.trace
        width = line.width
        index = start // width
        busy = line.busy
        if start >= 0 and dur >= 0 and index == (start + dur) // width and index < len(busy):
            busy[index] += dur
            if traced_read:
                line.read[index] += traced_read
            if traced_written:
                line.written[index] += traced_written
        else:
            line.add(start, dur, traced_read, traced_written)

        if seconds is not None:
            duration = int(seconds * 1e9)
            start = end_ns - self._replay_origin - duration
            line = series.replay
            width = line.width
            index = start // width
            busy = line.busy
            if start >= 0 and index == (start + duration) // width and index < len(busy):
                busy[index] += duration
                if read:
                    line.read[index] += read
                if written:
                    line.written[index] += written
            else:
                line.add(start, duration, read, written)
            name = event.name
            if dur > 0:
                histogram = series.ratios.get(name)
                if histogram is None:
                    histogram = series.ratios[name] = RatioHistogram()
                ratio = seconds * 1e6 / dur
                # LatencyHistogram.add, without the total, which no
                # summary of ratios uses.
                scaled = ratio * 1e9
                if scaled < 1.0:
                    scaled = 1.0
                mantissa, exponent = _frexp(scaled)
                key = exponent * _SUB_BUCKETS + int((mantissa * 2.0 - 1.0) * _SUB_BUCKETS)
                buckets = histogram.buckets
                buckets[key] = buckets.get(key, 0) + 1
                histogram.count += 1
                if ratio > histogram.maximum:
                    histogram.maximum = ratio
            else:
                series.zero_dur[name] = series.zero_dur.get(name, 0) + 1

        row = self._rows.get(path)
        if row is None:
            row = self._rows[path] = [0, 0, 0, 0]
        row[0] += traced_read
        row[1] += traced_written
        row[2] += read
        row[3] += written

    def finish(self, display: Callable[[str], str]) -> None:
        """Fold this stream's series into the collector.

        ``display`` maps a traced path to its path under the root.
        """
        total = [0, 0, 0, 0]
        paths: Dict[str, List[int]] = {}
        for path, row in self._rows.items():
            for index in range(4):
                total[index] += row[index]
            if path is not None:
                _add_rows(paths, {display(path): row}, None)
        series = self.series
        series.files = {self.file: total}
        series.paths = paths
        self.collector.fold(series)
