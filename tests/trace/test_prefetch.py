"""The reader thread that inflates ahead of decoding, with and without tasks."""

from __future__ import annotations

import gzip
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

import greenpipe
from greenpipe.trace import TraceReader
from greenpipe.trace import _reader

EVENT = (
    b'{"id":1,"name":"read","cat":"POSIX","pid":7,"tid":8,"ts":%d,"dur":5,'
    b'"ph":"X","args":{"fname":"/data/a","count":4}}\n'
)


def start_arrow_threads() -> None:
    """Let pyarrow start its process-wide threads before any leak check."""
    try:
        import pyarrow
    except ImportError:
        return
    pyarrow.RecordBatch.from_pydict({"a": [1]})


start_arrow_threads()


def events_bytes(count: int, start: int = 0) -> bytes:
    return b"".join(EVENT % (start + i) for i in range(count))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def reader_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("greenpipe inflate"))


def write_gzip(path: Path, count: int) -> Path:
    path.write_bytes(gzip.compress(events_bytes(count)))
    return path


ITERATORS = [
    pytest.param(TraceReader.iter_raw, id="raw"),
    pytest.param(TraceReader.iter_lines, id="lines"),
    pytest.param(TraceReader.iter_lines_json, id="json"),
    pytest.param(TraceReader.iter_events, id="events"),
    pytest.param(lambda reader: reader.iter_arrow(batch_size=100), id="arrow"),
]


class SlowInflater:
    """A zlib stand-in whose decompress calls sleep, to make the reader lag."""

    error = zlib.error

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def decompressobj(self, wbits: int) -> Any:
        inner = zlib.decompressobj(wbits)
        delay = self.delay

        class Slow:
            def decompress(self, data: bytes, max_length: int) -> bytes:
                time.sleep(delay)
                return inner.decompress(data, max_length)

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        return Slow()


class FailingInflater:
    """A zlib stand-in that raises OSError on the second decompress call."""

    error = zlib.error

    def decompressobj(self, wbits: int) -> Any:
        inner = zlib.decompressobj(wbits)
        calls = [0]

        class Failing:
            def decompress(self, data: bytes, max_length: int) -> bytes:
                calls[0] += 1
                if calls[0] == 2:
                    raise OSError("simulated read failure")
                return inner.decompress(data, max_length)

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        return Failing()


# -- choosing the reader thread -------------------------------------------


def test_prefetch_auto_by_file_size_in_task(tmp_path: Path) -> None:
    small = tmp_path / "small.pfw"
    small.write_bytes(events_bytes(10))
    large = tmp_path / "large.pfw"
    large.write_bytes(events_bytes(_reader.PREFETCH_MIN_FILE_BYTES // len(EVENT) + 10))
    reader = TraceReader(tmp_path)

    def choices(scope: greenpipe.CoroScope) -> tuple:
        return reader._use_prefetch(str(small)), reader._use_prefetch(str(large))

    assert reader.prefetch is None
    assert greenpipe.run(choices, threads=1) == (False, True)


def test_prefetch_off_by_default_outside_tasks(tmp_path: Path) -> None:
    large = tmp_path / "large.pfw"
    large.write_bytes(events_bytes(_reader.PREFETCH_MIN_FILE_BYTES // len(EVENT) + 10))
    reader = TraceReader(tmp_path)

    assert not reader._use_prefetch(str(large))
    assert next(reader.iter_events()).name
    assert reader_threads() == 0


def test_prefetch_argument_overrides_default(tmp_path: Path) -> None:
    small = tmp_path / "small.pfw"
    small.write_bytes(events_bytes(10))
    large = tmp_path / "large.pfw"
    large.write_bytes(events_bytes(_reader.PREFETCH_MIN_FILE_BYTES // len(EVENT) + 10))

    assert TraceReader(tmp_path, prefetch=True)._use_prefetch(str(small))
    assert not TraceReader(tmp_path, prefetch=False)._use_prefetch(str(large))


@pytest.mark.parametrize("compressed", [False, True])
def test_prefetch_same_results_as_inline(tmp_path: Path, compressed: bool) -> None:
    content = (
        b"[\n"
        + events_bytes(3000)
        + b'{"name":"' + b"x" * 100_000 + b'"}\n'
        + b"not json}\n"
        + events_bytes(3000, 3000)
        + b'{"name":"cut'
    )
    path = tmp_path / "t.pfw"
    if compressed:
        path.write_bytes(gzip.compress(content)[:-30])
    else:
        path.write_bytes(content)
    results = {}
    for prefetch in (False, True):
        reader = TraceReader(path, memory_budget=64 * 1024, prefetch=prefetch)
        events = [event.ts for event in reader.iter_events()]
        results[prefetch] = (events, reader.statistics().files[0])

    assert results[True][0] == results[False][0]
    assert results[True][1] == results[False][1]
    assert results[True][1].bad_lines >= 2


def test_prefetch_bad_lines_in_file_order(tmp_path: Path) -> None:
    long_line = b'{"name":"' + b"x" * 100_000 + b'"}\n'
    path = tmp_path / "t.pfw"
    path.write_bytes(b"bad}\n" + long_line + b"bad}\n" + long_line + events_bytes(5))
    reader = TraceReader(path, memory_budget=64 * 1024, prefetch=True)
    events = list(reader.iter_events())
    stats = reader.statistics().files[0]

    assert len(events) == 5
    assert [bad.line for bad in stats.first_bad_lines] == [1, 2, 3, 4]
    assert stats.bad_line_reasons["invalid JSON"] == 2
    assert stats.bad_line_reasons["line longer than the maximum line length"] == 2
    assert stats.lines == 9


# -- leaving early, failures -----------------------------------------------


@pytest.mark.parametrize("make_iterator", ITERATORS)
def test_prefetch_early_break_plain_thread(tmp_path: Path, make_iterator: Any) -> None:
    write_gzip(tmp_path / "a.pfw.gz", 20000)
    write_gzip(tmp_path / "b.pfw.gz", 20000)
    reader = TraceReader(tmp_path, memory_budget=64 * 1024, prefetch=True)
    fds_before = open_fds()
    for _ in make_iterator(reader):
        break

    assert reader_threads() == 0
    assert open_fds() == fds_before
    assert not reader.statistics().files[0].complete


@pytest.mark.parametrize("make_iterator", ITERATORS)
def test_prefetch_early_break_in_task(tmp_path: Path, make_iterator: Any) -> None:
    write_gzip(tmp_path / "a.pfw.gz", 20000)
    reader = TraceReader(tmp_path, memory_budget=64 * 1024, prefetch=True)
    fds_before = open_fds()

    def body(scope: greenpipe.CoroScope) -> tuple:
        # The executor's hubs hold descriptors of their own.
        before = open_fds()
        iterator = make_iterator(reader)
        next(iterator)
        during = open_fds()
        iterator.close()
        return before, during, open_fds()

    before, during, after = greenpipe.run(body, threads=1)

    assert during == before + 1
    assert after == before
    assert open_fds() == fds_before


def test_prefetch_dropped_iterator_stops_thread(tmp_path: Path) -> None:
    write_gzip(tmp_path / "a.pfw.gz", 20000)
    reader = TraceReader(tmp_path, memory_budget=64 * 1024, prefetch=True)
    iterator = reader.iter_events()
    next(iterator)
    running = reader_threads()
    del iterator

    assert running == 1
    assert reader_threads() == 0


def test_prefetch_in_task_waits_for_slow_reader(tmp_path: Path) -> None:
    path = write_gzip(tmp_path / "t.pfw.gz", 1000)
    reader = TraceReader(path, memory_budget=64 * 1024, prefetch=True)
    reader._inflater = SlowInflater(0.08)

    def body(scope: greenpipe.CoroScope) -> int:
        return sum(1 for _ in reader.iter_events())

    # The task parks on the channel for longer than the deadlock grace.
    assert greenpipe.run(body, threads=1, deadlock_grace=0.05) == 1000


def test_prefetch_in_task_lets_other_tasks_run(tmp_path: Path) -> None:
    path = write_gzip(tmp_path / "t.pfw.gz", 1000)
    reader = TraceReader(path, memory_budget=64 * 1024, prefetch=True)
    reader._inflater = SlowInflater(0.02)

    def body(scope: greenpipe.CoroScope) -> tuple:
        ticks = []

        def ticker(inner: greenpipe.CoroScope) -> None:
            for _ in range(3):
                ticks.append(1)
                greenpipe.sleep(0)

        def read(inner: greenpipe.CoroScope) -> tuple:
            events = sum(1 for _ in reader.iter_events())
            return events, len(ticks)

        first = scope.spawn(read)
        scope.spawn(ticker)
        return first.result()

    # One worker thread: the ticker runs before the read ends only if the
    # reading task parks while it waits for chunks.
    events, ticks_during_read = greenpipe.run(body, threads=1)

    assert events == 1000
    assert ticks_during_read == 3


@pytest.mark.parametrize("in_task", [False, True])
def test_prefetch_read_failure_recorded(tmp_path: Path, in_task: bool) -> None:
    path = write_gzip(tmp_path / "t.pfw.gz", 20000)
    reader = TraceReader(path, memory_budget=64 * 1024, prefetch=True)
    reader._inflater = FailingInflater()

    def read(scope: Any = None) -> int:
        return sum(1 for _ in reader.iter_events())

    events = greenpipe.run(read, threads=1) if in_task else read()
    stats = reader.statistics().files[0]

    assert 0 < events < 20000
    assert stats.damage == "read failed: simulated read failure"
    assert not stats.complete
