"""Dry runs over parts of one trace file.

The counters merged from the parts of a file are compared, field by
field, with the counters of one pass over the whole file: event and line
counts, bad lines with their line numbers and reasons, problems and time
span.
"""

from __future__ import annotations

import gzip
import os
import pickle
import threading
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import orjson
import pytest

from greenpipe.replay import ReplayOptions, Replayer
from greenpipe.replay._processes import ShardedReplayer
from greenpipe.replay._shards import ReplayShard, ShardResult, merge_file_parts, run_shard
from greenpipe.replay._split import FilePart, _cut, partition_work
from greenpipe.replay._summary import FileCounters
from greenpipe.trace import TraceReader
from greenpipe.trace._split import find_line_start, find_member_start, scan_metadata

from .conftest import call, file_hash
from .test_shards import DATA, NEWEST, TIMEOUT, counts

DRY = ReplayOptions(dry_run=True)
TRACES = sorted(
    str(path)
    for path in DATA.rglob("*")
    if path.is_file() and path.name.endswith((".pfw", ".pfw.gz"))
)


def whole_counters(path: str, options: ReplayOptions = DRY) -> FileCounters:
    return run_shard(ReplayShard("dry-run", ((0, path),), options)).files[0][1]


def run_parts(path: str, parts: List[FilePart], options: ReplayOptions = DRY) -> List[ShardResult]:
    """Run each part as its own shard, through a pickle round trip as a worker would."""
    results = []
    for part in parts:
        shard = ReplayShard("dry-run", ((0, path),), options, parts=(part,))
        result = run_shard(pickle.loads(pickle.dumps(shard)))
        results.append(pickle.loads(pickle.dumps(result)))
    return results


def merged_counters(path: str, parts: List[FilePart]) -> Optional[FileCounters]:
    """Return the merged counters of ``parts``, ``None`` for an unsafe boundary."""
    merged, unsafe = merge_file_parts([path], run_parts(path, parts))
    if unsafe:
        return None
    return merged[0]


def split_counters(path: str, count: int) -> Tuple[Optional[FileCounters], int]:
    """Return the merged counters of ``path`` cut into up to ``count`` parts, and the parts."""
    items = _cut(path, 0, os.path.getsize(path), count)
    parts = [part for _, (_, _, part) in items if part is not None]
    if not parts:
        parts = [FilePart(0, 1, 0, None)]
    return merged_counters(path, parts), len(parts)


def parts_at(starts: List[int]) -> List[FilePart]:
    stops: List[Optional[int]] = list(starts[1:]) + [None]
    return [
        FilePart(number, len(starts), start, stop)
        for number, (start, stop) in enumerate(zip(starts, stops))
    ]


def member_starts(path: str) -> List[int]:
    """Return the offset of every complete gzip member, by inflating the file."""
    data = Path(path).read_bytes()
    starts = [0]
    while True:
        decompressor = zlib.decompressobj(31)
        try:
            decompressor.decompress(data[starts[-1]:])
        except zlib.error:
            return starts
        if not decompressor.eof or not decompressor.unused_data:
            return starts
        starts.append(len(data) - len(decompressor.unused_data))


def lines_of(events: List[Dict]) -> List[bytes]:
    return [orjson.dumps(event) for event in events]


def member(lines: List[bytes], end: bytes = b"\n") -> bytes:
    return gzip.compress(b"\n".join(lines) + end, mtime=0)


def many_events(count: int, first: int = 0) -> List[Dict]:
    return [
        call("pread64", first + n, fhash="f1", count=4096, offset=n * 4096, ret=4096)
        for n in range(count)
    ]


# -- every test trace ---------------------------------------------------------------


@pytest.mark.parametrize("path", TRACES, ids=lambda p: os.path.relpath(p, DATA))
def test_parts_match_whole_file(path: str) -> None:
    whole = whole_counters(path)

    merged, parts = split_counters(path, 3)

    assert merged is not None
    assert merged == whole
    if not path.endswith(".gz"):
        # Plain files always split; single-member gzip files cannot.
        assert parts == 3


def test_traces_include_split_quirks() -> None:
    """The traces above cover joined and ignored lines; the crafted files below add bad lines."""
    joined = sum(whole_counters(path).joined_lines for path in TRACES)
    ignored = sum(whole_counters(path).ignored_lines for path in TRACES)

    assert joined > 0
    assert ignored > 0
    assert len(TRACES) == 13


# -- crafted multi-member files -----------------------------------------------------------


def crafted_members(tmp_path: Path, damaged_tail: Optional[bytes] = None) -> str:
    """Write a gzip file of four members whose events use metadata from the first."""
    metadata = [file_hash("/data/one", "f1"), file_hash("/data/two", "f2")]
    first = lines_of(metadata) + lines_of(many_events(300))
    # A split event (raw newline inside a path) and a bad line in member 2.
    second = [
        b'{"name":"open","cat":"POSIX","pid":1,"tid":1,"ts":5,"dur":1,"ph":"X","args":{"fname":"/a',
        b'b"}}',
        b'{"name":"read","cat":"POSIX",}x}',
    ] + lines_of(many_events(300, 1000))
    third = lines_of(many_events(300, 2000)) + lines_of([file_hash("/data/three", "f3")])
    fourth = lines_of(many_events(300, 3000))
    data = member([b"["] + first) + member(second) + member(third) + member(fourth, b"\n]")
    if damaged_tail is not None:
        data += damaged_tail
    path = tmp_path / "members.pfw.gz"
    path.write_bytes(data)
    return str(path)


def test_member_starts_found_and_confirmed(tmp_path: Path) -> None:
    path = crafted_members(tmp_path)
    starts = member_starts(path)

    found = [find_member_start(path, offset) for offset in (1, starts[1] + 1, starts[2] + 1)]

    assert len(starts) == 4
    assert found == starts[1:]
    assert find_member_start(path, starts[3] + 1) is None


def test_parts_of_members_match_whole(tmp_path: Path) -> None:
    path = crafted_members(tmp_path)
    whole = whole_counters(path)

    merged = merged_counters(path, parts_at(member_starts(path)))

    assert merged == whole
    assert whole.events == 1201
    assert whole.joined_lines == 1
    assert whole.metadata == 3
    # "[", 2 metadata and 300 events in member 1; member 2 starts on line 304.
    assert whole.first_bad_lines == ((306, "invalid JSON"),)


def test_damaged_last_member_matches_whole(tmp_path: Path) -> None:
    tail = member(lines_of(many_events(200, 4000)))
    path = crafted_members(tmp_path, damaged_tail=tail[: len(tail) // 2])
    whole = whole_counters(path)
    starts = member_starts(path)

    merged = merged_counters(path, parts_at(starts))
    merged_late = merged_counters(path, parts_at(starts[:2]))

    # Four complete members, then the start of the damaged one.
    assert len(starts) == 5
    assert merged == whole
    assert merged_late == whole
    assert whole.damaged
    assert "gzip member 5 is truncated" in whole.problem
    assert whole.first_read_bad_lines[0][1] == "line cut off by damaged gzip data"


def test_corrupt_middle_member_drops_later_parts(tmp_path: Path) -> None:
    path = crafted_members(tmp_path)
    starts = member_starts(path)
    data = bytearray(Path(path).read_bytes())
    # Corrupt the deflate data of the second member, keeping its header.
    data[starts[1] + 40 : starts[1] + 60] = b"\xff" * 20
    Path(path).write_bytes(bytes(data))
    whole = whole_counters(path)

    merged = merged_counters(path, parts_at(starts))

    assert merged == whole
    assert whole.damaged
    assert "invalid gzip data in member 2" in whole.problem
    assert whole.events < 600


def test_scan_metadata_gives_table_at_boundary(tmp_path: Path) -> None:
    path = crafted_members(tmp_path)
    second = find_member_start(path, 1)
    last = find_member_start(path, find_member_start(path, second + 1) + 1)

    early, early_members, early_tail = scan_metadata(path, second, 1 << 20, 1 << 24)
    late, late_members, late_tail = scan_metadata(path, last, 1 << 20, 1 << 24)

    assert early.files == {"f1": "/data/one", "f2": "/data/two"}
    assert early_members == 1
    assert late.files == {"f1": "/data/one", "f2": "/data/two", "f3": "/data/three"}
    assert late_members == 3
    assert early_tail == late_tail == b""


def cut_inside_line(tmp_path: Path) -> str:
    """Write two members, the first ending inside a line."""
    lines = lines_of(many_events(400))
    text = b"\n".join(lines) + b"\n"
    # The second member starts with '{"...' of the inner args object, so it
    # passes as a member start, but the first member ends inside a line.
    cut = text.index(b'{"fhash"', len(text) // 2)
    path = tmp_path / "cut.pfw.gz"
    path.write_bytes(gzip.compress(text[:cut], mtime=0) + gzip.compress(text[cut:], mtime=0))
    return str(path)


def test_member_cut_inside_line(tmp_path: Path) -> None:
    """The line cut by a member boundary is read once, by the part after it."""
    path = cut_inside_line(tmp_path)
    starts = member_starts(path)
    whole = whole_counters(path)

    found = find_member_start(path, 1)
    results = run_parts(path, parts_at(starts))
    merged, unsafe = merge_file_parts([path], results)

    assert found == starts[1]
    assert unsafe == []
    assert merged[0] == whole
    assert whole.events == 400
    assert results[0].parts[0][2].events < 400


def split_event_across_members(tmp_path: Path) -> str:
    """Write two members with an event that a raw newline splits across them."""
    head = lines_of(many_events(300)) + [
        b'{"name":"open","cat":"POSIX","pid":1,"tid":1,"ts":5,"dur":1,"ph":"X","args":{"fname":"/a'
    ]
    # The continuation starts with "{", so it passes as a member start.
    rest = [b'{b"}}'] + lines_of(many_events(300, 1000))
    path = tmp_path / "split.pfw.gz"
    path.write_bytes(member(head) + member(rest))
    return str(path)


def test_split_event_across_members_unsafe(tmp_path: Path) -> None:
    path = split_event_across_members(tmp_path)
    starts = member_starts(path)
    whole = whole_counters(path)

    found = find_member_start(path, 1)
    merged = merged_counters(path, parts_at(starts))

    assert found == starts[1]
    assert merged is None
    assert whole.joined_lines == 1
    assert whole.events == 601


# -- plain files -----------------------------------------------------------------------


def test_line_start_skips_split_event(tmp_path: Path) -> None:
    good = orjson.dumps(call("read", 1, fd=3, count=1, ret=1))
    text = good + b"\n" + b'{"name":"open","args":{"fname":"/a' + b"\n" + b'b"}}' + b"\n" + good + b"\n" + good
    path = tmp_path / "t.pfw"
    path.write_bytes(text)

    start = find_line_start(str(path), len(good) + 2)

    # Neither after the first half of the split event nor after its end,
    # which does not parse alone, but after the next good line.
    assert text[:start].endswith(good + b"\n")
    assert start == text.rindex(good)


# -- partitioning ---------------------------------------------------------------------------


def test_partition_splits_one_large_file(tmp_path: Path) -> None:
    path = crafted_members(tmp_path)

    groups = partition_work([path], 2, DRY, min_split_bytes=1)

    assert len(groups) == 2
    parts = [item[2] for group in groups for item in group]
    assert [part.number for part in parts] == [0, 1]
    assert parts[0].stop == parts[1].start
    assert parts[1].stop is None


def test_partition_takes_only_chosen_ranks(tmp_path: Path) -> None:
    path = crafted_members(tmp_path)
    other = path + "-other"
    Path(other).write_bytes(Path(path).read_bytes())
    options = ReplayOptions(dry_run=True, ranks=frozenset({1}))

    groups = partition_work([path, other], 2, options, min_split_bytes=1)

    items = [item for group in groups for item in group]
    assert {item[0] for item in items} == {1}
    assert [item[2].number for item in items] == [0, 1]


def test_partition_keeps_equal_files_whole(tmp_path: Path) -> None:
    path = crafted_members(tmp_path)
    Path(path + "-copy").write_bytes(Path(path).read_bytes())

    groups = partition_work([path, path + "-copy"], 2, DRY, min_split_bytes=1)

    assert [[item[2] for item in group] for group in groups] == [[None], [None]]


@pytest.mark.parametrize(
    "options",
    [
        ReplayOptions(root="/unused"),
        ReplayOptions(dry_run=True, sample=0.5),
        ReplayOptions(dry_run=True, max_events=5),
        ReplayOptions(dry_run=True, max_bytes=5),
    ],
    ids=["replay", "sample", "max_events", "max_bytes"],
)
def test_partition_never_splits_ordered_work(tmp_path: Path, options: ReplayOptions) -> None:
    path = crafted_members(tmp_path)

    groups = partition_work([path], 2, options, min_split_bytes=1)

    assert groups == [[(0, path, None)]]


@pytest.mark.parametrize("cap", [{"max_events": 5}, {"max_bytes": 5}])
def test_partition_keeps_capped_files_together(tmp_path: Path, cap: Dict[str, int]) -> None:
    # A cap counts across all the files, so one process reads them all.
    path = crafted_members(tmp_path)
    files = [path]
    for number in range(3):
        copy = f"{path}-{number}"
        Path(copy).write_bytes(Path(path).read_bytes())
        files.append(copy)

    groups = partition_work(files, 4, ReplayOptions(dry_run=True, **cap), min_split_bytes=1)

    assert groups == [[(index, path, None) for index, path in enumerate(files)]]


def test_part_shard_rejects_replay_phase(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^only a dry-run shard reads parts of files, not a plan shard$"):
        ReplayShard("plan", ((0, "a.pfw"),), ReplayOptions(root=str(tmp_path)), parts=(FilePart(0, 2, 0, 9),))


def test_part_shard_rejects_misaligned_parts() -> None:
    with pytest.raises(ValueError, match=r"^parts must have one entry per file \(1\), not 2$"):
        ReplayShard("dry-run", ((0, "a.pfw"),), DRY, parts=(None, None))


# -- worker processes ----------------------------------------------------------------------


@pytest.mark.timeout(TIMEOUT)
def test_processes_split_one_file_like_one(tmp_path: Path) -> None:
    tail = member(lines_of(many_events(200, 4000)))
    path = crafted_members(tmp_path, damaged_tail=tail[: len(tail) // 2])

    single = Replayer([path], DRY).run()
    sharded = ShardedReplayer([path], DRY, 2, min_split_bytes=1).run()

    assert counts(sharded) == counts(single)
    assert [row["role"] for row in sharded.processes] == ["main", "worker"]
    assert [row["files"] for row in sharded.processes] == [1, 1]
    assert single.events_seen > 1201
    assert single.input_problems


@pytest.mark.timeout(TIMEOUT)
def test_processes_share_event_cap(tmp_path: Path) -> None:
    path = crafted_members(tmp_path)
    other = path + "-other"
    Path(other).write_bytes(Path(path).read_bytes())
    options = ReplayOptions(dry_run=True, max_events=500)

    single = Replayer([path, other], options).run()
    sharded = ShardedReplayer([path, other], options, 2, min_split_bytes=1).run()

    assert single.lines["not_executed_dry_run"] == 500
    assert counts(sharded) == counts(single)


@pytest.mark.timeout(TIMEOUT)
def test_processes_reread_unsafe_boundary(tmp_path: Path) -> None:
    path = split_event_across_members(tmp_path)

    single = Replayer([path], DRY).run()
    sharded = ShardedReplayer([path], DRY, 2, min_split_bytes=1).run()

    assert counts(sharded) == counts(single)
    assert sharded.events_seen == 601
    assert sharded.bad_lines == 0
    # The main process read its part, then the whole file again.
    assert [row["files"] for row in sharded.processes] == [2, 1]


@pytest.mark.timeout(TIMEOUT)
def test_processes_split_cut_line_once(tmp_path: Path) -> None:
    path = cut_inside_line(tmp_path)

    single = Replayer([path], DRY).run()
    sharded = ShardedReplayer([path], DRY, 2, min_split_bytes=1).run()

    assert counts(sharded) == counts(single)
    assert sharded.events_seen == 400
    assert [row["files"] for row in sharded.processes] == [1, 1]


@pytest.mark.timeout(TIMEOUT)
def test_processes_split_real_trace_like_one(tmp_path: Path) -> None:
    path = tmp_path / "three.pfw.gz"
    path.write_bytes(NEWEST.read_bytes() * 3)

    single = Replayer([str(path)], DRY).run()
    sharded = ShardedReplayer([str(path)], DRY, 2, min_split_bytes=1).run()

    assert counts(sharded) == counts(single)
    assert sharded.events_seen == 3 * 74362
    assert len(sharded.processes) == 2


def test_reader_reads_crafted_members(tmp_path: Path) -> None:
    """The crafted file is what the trace reader expects: four members, one split event."""
    path = crafted_members(tmp_path)
    reader = TraceReader(path)

    events = sum(1 for _ in reader.iter_events())

    stats = reader.statistics().files[0]
    assert events == 1201
    assert stats.gzip_members == 4
    assert stats.joined_lines == 1
    assert stats.damage is None


@pytest.mark.timeout(TIMEOUT)
def test_cancelled_local_share_stops(tmp_path: Path) -> None:
    """A dry run cancelled before it starts stops its thread in this process too."""
    path = tmp_path / "three.pfw.gz"
    path.write_bytes(NEWEST.read_bytes() * 3)
    replayer = ShardedReplayer([str(path)], DRY, 2, min_split_bytes=1)
    threads_before = set(threading.enumerate())

    replayer.cancel()
    summary = replayer.run()

    assert summary.interrupted
    assert summary.events_seen < 3 * 74362
    assert set(threading.enumerate()) <= threads_before
    assert replayer.worker_processes() == []
