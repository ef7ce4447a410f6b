"""The bytes replayed writes put on disk, and the check of reads (--verify)."""

from __future__ import annotations

import io
import json
import os
import zlib
from pathlib import Path
from typing import Any, Dict, List

import pytest

from greenpipe.cli import main
from greenpipe.replay import ReplayOptions, replay
from greenpipe.replay import _data
from greenpipe.replay._data import PERIOD, DataSource, WriteMap, path_key

from .conftest import call, write_trace

DATA = Path(__file__).resolve().parent.parent / "data"
O_RDWR_CREAT = os.O_RDWR | os.O_CREAT
F = "/data/f.bin"


def _replay(trace: Path, root: Path, **options: Any):
    options.setdefault("threads", 2)
    return replay([str(trace)], ReplayOptions(root=str(root), **options))


def _pattern_bytes(path: str, offset: int, size: int) -> bytes:
    """Return the ``pattern`` bytes of ``path`` at ``offset``, one byte at a time."""
    block = _data._block(_data._PATTERN_SEED)
    key = path_key(path)
    return bytes(block[(offset + key + i) % PERIOD] for i in range(size))


def _writes_trace(path: Path) -> Path:
    return write_trace(
        path,
        [
            call("open", 10, fname=F, flags=O_RDWR_CREAT, mode=0o644, ret=3),
            call("write", 20, fname=F, fd=3, count=5000, ret=5000),
            call("pwrite", 30, fname=F, fd=3, count=3000, offset=2000, ret=3000),
            call("close", 40, fname=F, fd=3, ret=0),
            call("open", 50, fname="/data/g.bin", flags=O_RDWR_CREAT, mode=0o644, ret=3),
            call("write", 60, fname="/data/g.bin", fd=3, count=5000, ret=5000),
            call("close", 70, fname="/data/g.bin", fd=3, ret=0),
        ],
    )


# -- data kinds ---------------------------------------------------------------------


def test_zero_data_is_default(tmp_path: Path) -> None:
    trace = _writes_trace(tmp_path / "w.pfw")

    summary = _replay(trace, tmp_path / "root")

    assert summary.exit_code() == 0
    assert (tmp_path / "root" / "data" / "f.bin").read_bytes() == bytes(5000)


def test_pattern_data_on_disk(tmp_path: Path) -> None:
    trace = _writes_trace(tmp_path / "w.pfw")

    summary = _replay(trace, tmp_path / "root", data="pattern")

    f = (tmp_path / "root" / "data" / "f.bin").read_bytes()
    g = (tmp_path / "root" / "data" / "g.bin").read_bytes()
    assert summary.exit_code() == 0
    assert f == _pattern_bytes(F, 0, 5000)
    assert g == _pattern_bytes("/data/g.bin", 0, 5000)
    assert f != g
    assert f.count(0) < 100


def test_pattern_data_independent_of_order(tmp_path: Path) -> None:
    events = [
        call("open", 10, fname=F, flags=O_RDWR_CREAT, mode=0o644, ret=3),
        call("pwrite", 20, fname=F, fd=3, count=3000, offset=0, ret=3000),
        call("pwrite", 30, fname=F, fd=3, count=3000, offset=1000, ret=3000),
        call("close", 40, fname=F, fd=3, ret=0),
    ]
    swapped = [events[0], events[2], events[1], events[3]]
    first = write_trace(tmp_path / "a.pfw", events)
    second = write_trace(tmp_path / "b.pfw", swapped)

    _replay(first, tmp_path / "r1", data="pattern", window=1)
    _replay(second, tmp_path / "r2", data="pattern", window=1)

    one = (tmp_path / "r1" / "data" / "f.bin").read_bytes()
    assert one == (tmp_path / "r2" / "data" / "f.bin").read_bytes()
    assert one == _pattern_bytes(F, 0, 4000)


def test_random_data_follows_seed(tmp_path: Path) -> None:
    trace = _writes_trace(tmp_path / "w.pfw")

    _replay(trace, tmp_path / "a", data="random:7")
    _replay(trace, tmp_path / "b", data="random:7")
    _replay(trace, tmp_path / "c", data="random:8")

    a = (tmp_path / "a" / "data" / "f.bin").read_bytes()
    assert a == (tmp_path / "b" / "data" / "f.bin").read_bytes()
    assert a != (tmp_path / "c" / "data" / "f.bin").read_bytes()
    assert a != _pattern_bytes(F, 0, 5000)
    assert len(zlib.compress(a)) > 0.95 * len(a)


def test_data_source_spans_several_periods() -> None:
    source = DataSource("pattern")
    size = 2 * PERIOD + 123

    views = source.views(path_key(F), 17, size)

    joined = b"".join(bytes(view) for view in views)
    assert sum(len(view) for view in views) == size
    assert joined[:1000] == _pattern_bytes(F, 17, 1000)
    assert joined[PERIOD : PERIOD + 1000] == joined[:1000]
    assert source.matches(path_key(F), 17, memoryview(joined))
    assert not source.matches(path_key(F), 18, memoryview(joined))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"data": "ones"}, r"^data must be 'zero', 'pattern' or 'random:SEED' with an integer SEED, not 'ones'$"),
        ({"data": "random:x"}, r"not 'random:x'$"),
        ({"data": "random:1", "verify": True}, r"^verify writes pattern data, so data must be 'pattern' or left out, not 'random:1'$"),
    ],
)
def test_data_options_rejected(options: Dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReplayOptions(dry_run=True, **options)


# -- the write map ------------------------------------------------------------------


def _write(ts: int, key: int = 0) -> Any:
    return ((ts, "t", 1, 1, ts), key, "pwrite")


def test_write_map_splits_and_merges() -> None:
    ranges = WriteMap()

    ranges.add(0, 100, _write(1))
    ranges.add(50, 150, _write(2))
    ranges.add(150, 200, _write(2))

    pieces = ranges.overlapping(0, 1000)
    assert [(start, end) for start, end, _ in pieces] == [(0, 50), (50, 100), (100, 200)]
    assert [w[0][0] for w in pieces[0][2][0]] == [1]
    assert [w[0][0] for w in pieces[1][2][0]] == [2, 1]
    assert [w[0][0] for w in pieces[2][2][0]] == [2]


def test_write_map_orders_by_trace_not_arrival() -> None:
    ranges = WriteMap()

    ranges.add(0, 10, _write(5))
    ranges.add(0, 10, _write(3))

    (_, _, (writes, dropped)), = ranges.overlapping(0, 10)
    assert [w[0][0] for w in writes] == [5, 3]
    assert not dropped


def test_write_map_keeps_bounded_history() -> None:
    ranges = WriteMap()

    for ts in range(1, 10):
        ranges.add(0, 10, _write(ts))

    (_, _, (writes, dropped)), = ranges.overlapping(0, 10)
    assert [w[0][0] for w in writes] == [9, 8, 7, 6]
    assert dropped


def test_write_map_truncate() -> None:
    ranges = WriteMap()
    ranges.add(0, 100, _write(1))
    ranges.add(200, 300, _write(2))

    ranges.truncate(250)
    after_cut = [(s, e) for s, e, _ in ranges.overlapping(0, 1000)]
    ranges.truncate(100)
    after_drop = [(s, e) for s, e, _ in ranges.overlapping(0, 1000)]
    ranges.truncate(0)

    assert after_cut == [(0, 100), (200, 250)]
    assert after_drop == [(0, 100)]
    assert len(ranges) == 0


def test_write_map_forgets_past_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_data, "MAX_RANGES", 8)
    ranges = WriteMap()

    for index in range(9):
        ranges.add(index * 10, index * 10 + 5, _write(index))

    assert len(ranges) == 0
    assert ranges.forgotten


# -- verify -------------------------------------------------------------------------

#: One stream: two writes over the same bytes, a read, a partial
#: overwrite and a read across both writes.
ORDERED = [
    call("open", 10, fname=F, flags=O_RDWR_CREAT, mode=0o644, ret=3),
    call("pwrite", 20, fname=F, fd=3, count=4096, offset=0, ret=4096),
    call("pwrite", 30, fname=F, fd=3, count=4096, offset=0, ret=4096),
    call("pread", 40, fname=F, fd=3, count=4096, offset=0, ret=4096),
    call("pwrite", 50, fname=F, fd=3, count=1000, offset=1024, ret=1000),
    call("pread", 60, fname=F, fd=3, count=8192, offset=0, ret=4096),
    call("close", 70, fname=F, fd=3, ret=0),
]


def _verify(summary) -> Dict[str, Any]:
    assert summary.verify is not None
    return summary.verify


def test_verify_ordered_trace_has_no_mismatch(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "v.pfw", ORDERED)

    summary = _replay(trace, tmp_path / "root", verify=True, window=1)

    verify = _verify(summary)
    assert verify["reads_checked"] == 2
    assert verify["bytes_checked"] == 4096 + 4096
    assert verify["mismatches"] == 0
    assert verify["examples"] == []
    assert summary.to_dict()["verify"] == verify


def test_verify_swapped_writes_report_offset(tmp_path: Path) -> None:
    # The write at ts 20 comes two lines late, further than the reorder
    # window of one event reaches, so it runs after the write at ts 30
    # and the reads find its bytes.
    shuffled = [ORDERED[0], ORDERED[2], ORDERED[3], ORDERED[1], *ORDERED[4:]]
    trace = write_trace(tmp_path / "v.pfw", shuffled)
    root = tmp_path / "root"

    summary = _replay(trace, root, verify=True, window=1)

    verify = _verify(summary)
    first = verify["examples"][0]
    assert verify["reads_checked"] == 2
    assert verify["mismatches"] == 3
    assert first["file"] == F
    assert first["path"] == str(root / "data" / "f.bin")
    assert first["offset"] == 0
    assert first["length"] == 4096
    assert first["expected"] == "pwrite at ts 30 (pid 1, tid 1)"
    assert first["found"] == "pwrite at ts 20 (pid 1, tid 1)"
    assert [(row["offset"], row["length"]) for row in verify["examples"][1:]] == [
        (0, 1024),
        (2024, 2072),
    ]


def test_verify_read_sees_later_write(tmp_path: Path) -> None:
    # The read at ts 40 comes late and runs after the write at ts 50,
    # whose bytes it must not see.
    shuffled = [*ORDERED[:3], ORDERED[4], ORDERED[5], ORDERED[3], ORDERED[6]]
    trace = write_trace(tmp_path / "v.pfw", shuffled)

    summary = _replay(trace, tmp_path / "root", verify=True, window=1)

    verify = _verify(summary)
    first = verify["examples"][0]
    assert verify["mismatches"] == 1
    assert first["offset"] == 1024
    assert first["length"] == 1000
    assert first["expected"] == "pwrite at ts 30 (pid 1, tid 1)"
    assert first["found"] == "pwrite at ts 50 (pid 1, tid 1)"


def test_verify_window_restores_order(tmp_path: Path) -> None:
    shuffled = [ORDERED[0], ORDERED[2], ORDERED[3], ORDERED[1], *ORDERED[4:]]
    trace = write_trace(tmp_path / "v.pfw", shuffled)

    summary = _replay(trace, tmp_path / "root", verify=True)

    assert _verify(summary)["mismatches"] == 0
    assert _verify(summary)["reads_checked"] == 2


def test_verify_forgets_truncated_and_removed(tmp_path: Path) -> None:
    trace = write_trace(
        tmp_path / "t.pfw",
        [
            call("open", 10, fname=F, flags=O_RDWR_CREAT, mode=0o644, ret=3),
            call("pwrite", 20, fname=F, fd=3, count=4096, offset=0, ret=4096),
            call("ftruncate", 30, fname=F, fd=3, length=1000, ret=0),
            call("pread", 40, fname=F, fd=3, count=4096, offset=0, ret=1000),
            call("close", 50, fname=F, fd=3, ret=0),
            call("unlink", 60, fname=F, ret=0),
            call("open", 70, fname=F, flags=O_RDWR_CREAT, mode=0o644, ret=3),
            call("pread", 80, fname=F, fd=3, count=100, offset=0, ret=0),
            call("close", 90, fname=F, fd=3, ret=0),
        ],
    )

    summary = _replay(trace, tmp_path / "root", verify=True, window=1)

    verify = _verify(summary)
    assert summary.exit_code() == 0
    assert verify["reads_checked"] == 1
    assert verify["bytes_checked"] == 1000
    assert verify["mismatches"] == 0


def test_verify_off_gives_null(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "v.pfw", ORDERED)

    summary = _replay(trace, tmp_path / "root")

    assert summary.verify is None
    assert summary.to_dict()["verify"] is None


def _two_files(tmp_path: Path, shuffled: bool) -> List[str]:
    paths = []
    for rank in range(2):
        name = f"/data/rank{rank}.bin"
        events = [
            call("open", 10, pid=rank + 1, fname=name, flags=O_RDWR_CREAT, mode=0o644, ret=3),
            call("pwrite", 20, pid=rank + 1, fname=name, fd=3, count=4096, offset=0, ret=4096),
            call("pwrite", 30, pid=rank + 1, fname=name, fd=3, count=4096, offset=0, ret=4096),
            call("pread", 40, pid=rank + 1, fname=name, fd=3, count=4096, offset=0, ret=4096),
            call("close", 50, pid=rank + 1, fname=name, fd=3, ret=0),
        ]
        if shuffled:
            events[1:4] = [events[2], events[3], events[1]]
        paths.append(str(write_trace(tmp_path / f"rank{rank}.pfw", events)))
    return paths


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shuffled", [False, True])
def test_verify_same_with_two_processes(tmp_path: Path, shuffled: bool) -> None:
    traces = _two_files(tmp_path, shuffled)
    options = {"threads": 2, "verify": True, "window": 1}

    one = replay(traces, ReplayOptions(root=str(tmp_path / "a"), **options), processes=1)
    two = replay(traces, ReplayOptions(root=str(tmp_path / "b"), **options), processes=2)

    strip = lambda rows: [{k: v for k, v in row.items() if k != "path"} for row in rows]
    assert one.verify is not None and two.verify is not None
    assert one.verify["mismatches"] == two.verify["mismatches"] == (2 if shuffled else 0)
    assert one.verify["reads_checked"] == two.verify["reads_checked"] == 2
    assert one.verify["bytes_checked"] == two.verify["bytes_checked"]
    assert strip(one.verify["examples"]) == strip(two.verify["examples"])


@pytest.mark.timeout(120)
def test_verify_real_traces(tmp_path: Path) -> None:
    # No real trace reads back what it wrote, so verifying checks nothing
    # there, but it must move the same bytes. The call counts vary from
    # run to run because streams of different files race on shared paths.
    options = {"threads": 2, "max_size": 65536}

    plain = replay([str(DATA)], ReplayOptions(root=str(tmp_path / "a"), **options))
    checked = replay([str(DATA)], ReplayOptions(root=str(tmp_path / "b"), verify=True, **options))

    verify = _verify(checked)
    assert verify["mismatches"] == 0
    assert checked.bytes_written == plain.bytes_written
    assert checked.bytes_read == plain.bytes_read


def test_cli_verify_prints_mismatches(tmp_path: Path) -> None:
    shuffled = [ORDERED[0], ORDERED[2], ORDERED[3], ORDERED[1], *ORDERED[4:]]
    trace = write_trace(tmp_path / "v.pfw", shuffled)
    root = tmp_path / "root"
    target = tmp_path / "s.json"
    out, err = io.StringIO(), io.StringIO()

    code = main(
        ["replay", str(trace), "--root", str(root), "--verify", "--processes", "1",
         "--json", str(target)],
        stdout=out,
        stderr=err,
    )

    data = json.loads(target.read_text())
    assert code == 0
    assert err.getvalue() == ""
    # The default reorder window puts the calls back in trace order.
    assert data["verify"]["mismatches"] == 0
    assert data["verify"]["reads_checked"] == 2
    assert "verify   reads checked 2, bytes checked 8,192, mismatches 0" in out.getvalue()
