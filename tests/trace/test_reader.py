from __future__ import annotations

import dataclasses
import gzip
import os
import sys
import threading
import zlib
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from greenpipe.trace import MAX_BAD_LINES_KEPT, TraceReader
from greenpipe.trace import _inflate

EVENT = (
    b'{"id":1,"name":"read","cat":"POSIX","pid":7,"tid":8,"ts":%d,"dur":5,'
    b'"ph":"X","args":{"fname":"/data/a","count":4}}\n'
)


def events_bytes(count: int, start: int = 0) -> bytes:
    return b"".join(EVENT % (start + i) for i in range(count))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


INFLATERS = [zlib]
if _inflate._isal_zlib is not None:
    INFLATERS.append(_inflate._isal_zlib)


@pytest.fixture(params=INFLATERS, ids=lambda module: module.__name__)
def inflater(request: pytest.FixtureRequest) -> object:
    return request.param


def reader_with(path: Path, inflater: object, **kwargs: int) -> TraceReader:
    reader = TraceReader(path, **kwargs)
    reader._inflater = inflater
    return reader


# -- gzip -------------------------------------------------------------------


def test_gzip_concatenated_members(tmp_path: Path, inflater: object) -> None:
    path = tmp_path / "t.pfw.gz"
    path.write_bytes(
        gzip.compress(b"[\n" + events_bytes(100))
        + gzip.compress(events_bytes(100, 100))
        + gzip.compress(events_bytes(50, 200) + b"]")
    )
    reader = reader_with(path, inflater)
    events = list(reader.iter_events())
    stats = reader.statistics().files[0]

    assert [e.ts for e in events] == list(range(250))
    assert stats.gzip_members == 3
    assert stats.damage is None


def test_gzip_members_with_small_chunks(tmp_path: Path, inflater: object) -> None:
    path = tmp_path / "t.pfw.gz"
    path.write_bytes(b"".join(gzip.compress(events_bytes(300, i * 300)) for i in range(5)))
    reader = reader_with(path, inflater, memory_budget=64 * 1024)
    events = list(reader.iter_events())

    assert [e.ts for e in events] == list(range(1500))
    assert reader.statistics().files[0].gzip_members == 5


def test_gzip_truncated_last_member(tmp_path: Path, inflater: object) -> None:
    first = gzip.compress(events_bytes(100))
    second = gzip.compress(events_bytes(1000, 100))
    path = tmp_path / "t.pfw.gz"
    path.write_bytes(first + second[: len(second) // 2])
    reader = reader_with(path, inflater)
    events = list(reader.iter_events())
    stats = reader.statistics().files[0]

    assert 100 < len(events) < 1100
    assert [e.ts for e in events] == list(range(len(events)))
    assert stats.damage is not None
    assert stats.damage.startswith("gzip member 2 is truncated")
    assert stats.bad_line_reasons == {"line cut off by damaged gzip data": 1}
    assert stats.first_bad_lines[0].line == len(events) + 1


def test_gzip_corrupt_data(tmp_path: Path, inflater: object) -> None:
    data = bytearray(gzip.compress(events_bytes(2000)))
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 1] ^= 0xFF
    path = tmp_path / "t.pfw.gz"
    path.write_bytes(bytes(data))
    reader = reader_with(path, inflater)
    count = sum(1 for _ in reader.iter_events())
    stats = reader.statistics()

    assert count < 2000
    assert stats.damaged_files == 1
    assert stats.files[0].complete


def test_gzip_trailing_garbage(tmp_path: Path, inflater: object) -> None:
    path = tmp_path / "t.pfw.gz"
    path.write_bytes(gzip.compress(events_bytes(10)) + b"not gzip at all")
    reader = reader_with(path, inflater)
    count = sum(1 for _ in reader.iter_events())
    stats = reader.statistics().files[0]

    assert count == 10
    assert stats.damage is not None
    assert stats.damage.startswith("invalid gzip data in member 2")


def test_empty_files(tmp_path: Path) -> None:
    (tmp_path / "empty.pfw").write_bytes(b"")
    (tmp_path / "empty.pfw.gz").write_bytes(gzip.compress(b""))
    reader = TraceReader(tmp_path)
    events = list(reader.iter_events())

    assert events == []
    assert reader.statistics().damaged_files == 0


# -- iterators ----------------------------------------------------------------


def test_iter_raw_chunks_line_aligned(tmp_path: Path) -> None:
    content = events_bytes(5000) + b"]"
    path = tmp_path / "t.pfw"
    path.write_bytes(content)
    chunks = list(TraceReader(path, memory_budget=64 * 1024).iter_raw())

    assert b"".join(chunks) == content
    assert len(chunks) > 10
    assert all(chunk.endswith(b"\n") for chunk in chunks[:-1])
    # A chunk is one inflated block plus the partial line carried before it.
    assert all(len(chunk) <= 8192 + len(EVENT % 99999) for chunk in chunks)


def test_iter_lines_strips_and_skips(tmp_path: Path) -> None:
    path = tmp_path / "t.pfw"
    path.write_bytes(b"[\n  " + events_bytes(2) + b"\n]")
    reader = TraceReader(path)
    lines = list(reader.iter_lines())

    assert lines == [(EVENT % 0).strip(), (EVENT % 1).strip()]
    assert reader.statistics().files[0].ignored_lines == 3


def test_iter_lines_json_dicts(tmp_path: Path) -> None:
    path = tmp_path / "t.pfw"
    path.write_bytes(b"[\n" + events_bytes(3))
    dicts = list(TraceReader(path).iter_lines_json())

    assert [d["ts"] for d in dicts] == [0, 1, 2]
    assert dicts[0]["id"] == 1


# pyarrow starts its process-wide thread pool on first use.
@pytest.mark.no_leak_check
def test_iter_arrow_batches(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    (tmp_path / "a.pfw").write_bytes(events_bytes(25))
    (tmp_path / "b.pfw").write_bytes(events_bytes(5))
    batches = list(TraceReader(tmp_path).iter_arrow(batch_size=10))

    assert [b.num_rows for b in batches] == [10, 10, 5, 5]
    assert batches[0].column("ts").to_pylist() == list(range(10))
    assert batches[0].column("path")[0].as_py() == "/data/a"
    assert batches[0].column("args")[0].as_py() == '{"fname":"/data/a","count":4}'


def test_iter_arrow_without_pyarrow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.pfw").write_bytes(events_bytes(1))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.delitem(sys.modules, "greenpipe.trace._arrow", raising=False)

    with pytest.raises(
        ImportError,
        match=r"^iter_arrow needs pyarrow, install it with "
        r"pip install 'greenpipe\[arrow\]'$",
    ):
        TraceReader(tmp_path).iter_arrow()


def test_iter_arrow_rejects_bad_batch_size(tmp_path: Path) -> None:
    (tmp_path / "a.pfw").write_bytes(events_bytes(1))

    with pytest.raises(ValueError, match=r"^batch_size must be > 0, not 0$"):
        TraceReader(tmp_path).iter_arrow(batch_size=0)


# -- resources and limits -----------------------------------------------------


def _iterators(reader: TraceReader) -> List[Callable[[], Iterator[object]]]:
    return [
        reader.iter_raw,
        reader.iter_lines,
        reader.iter_lines_json,
        reader.iter_events,
    ]


def _fds_while_reading_first_item(iterator: Iterator[object]) -> int:
    for _ in iterator:
        count = open_fds()
        break
    return count


@pytest.mark.parametrize("compressed", [False, True])
def test_early_break_closes_files(tmp_path: Path, compressed: bool) -> None:
    content = events_bytes(20000)
    for index in range(3):
        path = tmp_path / f"t{index}.pfw"
        if compressed:
            path = tmp_path / f"t{index}.pfw.gz"
            content_on_disk = gzip.compress(content)
        else:
            content_on_disk = content
        path.write_bytes(content_on_disk)
    reader = TraceReader(tmp_path, memory_budget=64 * 1024)
    before = open_fds()

    for make_iterator in _iterators(reader):
        during_break = _fds_while_reading_first_item(make_iterator())
        assert during_break == before + 1
        assert open_fds() == before
    held = reader.iter_events()
    next(held)
    during = open_fds()
    held.close()

    assert open_fds() == before
    assert during == before + 1


def test_full_read_closes_files(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"t{index}.pfw").write_bytes(events_bytes(10))
    before = open_fds()
    reader = TraceReader(tmp_path)
    for make_iterator in _iterators(reader):
        for _ in make_iterator():
            pass

    assert open_fds() == before


def test_early_break_marks_file_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "t.pfw"
    path.write_bytes(events_bytes(100))
    reader = TraceReader(path)
    for _ in reader.iter_events():
        break

    assert not reader.statistics().files[0].complete


def test_line_longer_than_budget(tmp_path: Path) -> None:
    path = tmp_path / "t.pfw"
    long_line = b'{"name":"' + b"x" * 100_000 + b'"}\n'
    path.write_bytes(events_bytes(2) + long_line + events_bytes(2, 2))
    reader = TraceReader(path, memory_budget=64 * 1024)
    events = list(reader.iter_events())
    stats = reader.statistics().files[0]

    assert reader.max_line_bytes == 16384
    assert [e.ts for e in events] == [0, 1, 2, 3]
    assert stats.bad_lines == 1
    assert stats.first_bad_lines[0].line == 3
    assert stats.first_bad_lines[0].reason == "line longer than the maximum line length"
    assert stats.lines == 5


def test_bad_line_numbers_bounded(tmp_path: Path) -> None:
    path = tmp_path / "t.pfw"
    path.write_bytes(b"garbage}\n" * (MAX_BAD_LINES_KEPT + 500) + events_bytes(1))
    reader = TraceReader(path)
    events = list(reader.iter_events())
    stats = reader.statistics().files[0]

    assert len(events) == 1
    assert stats.bad_lines == MAX_BAD_LINES_KEPT + 500
    assert len(stats.first_bad_lines) == MAX_BAD_LINES_KEPT
    assert stats.first_bad_lines[-1].line == MAX_BAD_LINES_KEPT


def test_memory_budget_sizes() -> None:
    reader = TraceReader(__file__, memory_budget=0)
    small = TraceReader(__file__, memory_budget=1)

    assert reader.memory_budget == 64 * 1024 * 1024
    assert reader.chunk_bytes == 1024 * 1024
    assert reader.max_line_bytes == 16 * 1024 * 1024
    assert small.memory_budget == 64 * 1024
    assert small.chunk_bytes == 4 * 1024
    assert small.max_line_bytes == 16 * 1024


def test_negative_budget_rejected() -> None:
    with pytest.raises(
        ValueError,
        match=r"^memory_budget must be >= 0 \(0 selects the default\), not -3$",
    ):
        TraceReader(__file__, memory_budget=-3)


def test_missing_path_rejected(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pfw"

    with pytest.raises(FileNotFoundError, match=r"^trace path not found: "):
        TraceReader(missing)


def test_statistics_frozen(tmp_path: Path) -> None:
    path = tmp_path / "t.pfw"
    path.write_bytes(events_bytes(1))
    reader = TraceReader(path)
    list(reader.iter_events())
    stats = reader.statistics()

    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.events = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.files[0].bad_line_reasons["x"] = 1  # type: ignore[index]


def test_second_pass_replaces_counters(tmp_path: Path) -> None:
    path = tmp_path / "t.pfw"
    path.write_bytes(events_bytes(3))
    reader = TraceReader(path)
    list(reader.iter_events())
    list(reader.iter_events())
    stats = reader.statistics()

    assert stats.events == 3
    assert len(stats.files) == 1


def test_folder_skips_side_cars_and_others(tmp_path: Path) -> None:
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / ".t.pfw").write_bytes(events_bytes(1))
    (tmp_path / "b.pfw.gz").write_bytes(gzip.compress(events_bytes(1)))
    (tmp_path / "b.pfw.gz.zindex").write_bytes(b"SQLite format 3\x00")
    (tmp_path / "b.pfw.gz.idx").write_bytes(b"SQLite format 3\x00")
    (tmp_path / "notes.txt").write_bytes(b"hello")
    reader = TraceReader(tmp_path)

    assert [os.path.relpath(p, tmp_path) for p in reader.files] == [
        os.path.join(".hidden", ".t.pfw"),
        "b.pfw.gz",
    ]
    assert len(reader.statistics().skipped_files) == 3
    assert sum(1 for _ in reader.iter_events()) == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_pipe_read_like_a_file(tmp_path: Path, compressed: bool) -> None:
    data = events_bytes(3000)
    if compressed:
        data = gzip.compress(data[:40000]) + gzip.compress(data[40000:])
    regular = tmp_path / "trace.pfw"
    regular.write_bytes(data)
    pipe = tmp_path / "pipe.pfw"
    os.mkfifo(pipe)

    def feed() -> None:
        with open(pipe, "wb") as writer:
            # Small writes, so the reader sees the start before the rest.
            for start in range(0, len(data), 1000):
                writer.write(data[start : start + 1000])
                writer.flush()

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        reader = TraceReader(pipe, memory_budget=64 * 1024, prefetch=False)
        from_pipe = [(e.ts, e.path) for e in reader.iter_events()]
    finally:
        feeder.join(timeout=30)
    assert not feeder.is_alive()

    expected = [(e.ts, e.path) for e in TraceReader(regular).iter_events()]
    assert from_pipe == expected
    assert len(from_pipe) == 3000
    assert reader.statistics().files[0].compressed == compressed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["iter_lines", "iter_lines_json", "iter_events"])
def test_pipe_left_early_while_writer_stalls(tmp_path: Path, method: str) -> None:
    # The writer writes a chunk and a half and stalls, so the reader thread
    # waits in a read of the pipe, not in a send, when the consumer leaves.
    data = events_bytes(3000)
    pipe = tmp_path / "pipe.pfw"
    os.mkfifo(pipe)
    release = threading.Event()

    def feed() -> None:
        with open(pipe, "wb") as writer:
            writer.write(data[:6000])
            writer.flush()
            release.wait(30)
            try:
                writer.write(data[6000:])
            except BrokenPipeError:
                pass  # the reader closed its end

    feeder = threading.Thread(target=feed)
    feeder.start()
    fds_before = open_fds()
    reader = TraceReader(pipe, memory_budget=64 * 1024, prefetch=True)
    items = getattr(reader, method)()
    first = [next(items) for _ in range(3)]
    closer = threading.Thread(target=items.close)
    closer.start()
    closer.join(timeout=10)
    closed_in_time = not closer.is_alive()
    release.set()
    closer.join(timeout=30)
    feeder.join(timeout=30)

    assert len(first) == 3
    assert closed_in_time
    assert not feeder.is_alive()
    assert not [t for t in threading.enumerate() if "inflate" in t.name]
    assert open_fds() == fds_before
    assert reader.statistics().files[0].damage is None
