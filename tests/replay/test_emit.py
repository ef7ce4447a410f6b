"""The replay's own trace (``--emit-trace``).

Read back through ``TraceReader``, the emitted trace has no bad line and,
per stream, the executed calls of the input in the order they ran:
the same call names, paths (mapped under the root), sizes and offsets.
"""

from __future__ import annotations

import gzip
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from greenpipe.replay import PathSandbox, ReplayOptions, Replayer
from greenpipe.replay import _calls as calls
from greenpipe.replay._emit import join_parts, part_path, path_hash
from greenpipe.replay._processes import ShardedReplayer
from greenpipe.trace import TraceReader

from .conftest import call, file_hash, write_trace

DATA = Path(__file__).resolve().parent.parent / "data"
TIMEOUT = 300

Key = Tuple[str, Optional[str], Optional[int], Optional[int]]


def _size(event: Any) -> Optional[int]:
    op = calls.classify(event.category, event.name)
    if op in calls.READ_OPS or op in calls.WRITE_OPS:
        return calls.transfer_size(op, event.args)
    return None


def _emitted(path: Path) -> Tuple[Dict[Tuple[int, int], List[Any]], int]:
    """Return the POSIX and STDIO events of ``path`` per stream, and its bad lines."""
    reader = TraceReader(str(path))
    streams: Dict[Tuple[int, int], List[Any]] = defaultdict(list)
    for event in reader.iter_events():
        if event.category in calls.IO_CATEGORIES:
            streams[(event.pid, event.tid)].append(event)
    return streams, reader.statistics().bad_lines


def _inputs(path: Path) -> Dict[Tuple[int, int], List[Any]]:
    """Return the POSIX and STDIO events of a trace per stream, in start order."""
    streams: Dict[Tuple[int, int], List[Any]] = defaultdict(list)
    for event in TraceReader(str(path)).iter_events():
        if event.category in calls.IO_CATEGORIES:
            streams[(event.pid, event.tid)].append(event)
    # The replay runs each stream in start-time order; sorted() is stable,
    # as the replay's heap is for equal start times.
    return {key: sorted(events, key=lambda e: e.ts) for key, events in streams.items()}


def _key(event: Any, path: Optional[str]) -> Key:
    return (event.name, path, _size(event), calls.arg_int(event.args, "offset"))


def _is_subsequence(part: List[Key], whole: List[Key]) -> bool:
    position = 0
    for item in part:
        while position < len(whole) and not _matches(item, whole[position]):
            position += 1
        if position == len(whole):
            return False
        position += 1
    return True


def _matches(emitted: Key, traced: Key) -> bool:
    # An input call with no path (a descriptor only) is emitted with the
    # path of its descriptor, so only the other fields can be compared.
    if traced[1] is None:
        return emitted[0] == traced[0] and emitted[2:] == traced[2:]
    return emitted == traced


# -- crafted traces -------------------------------------------------------------


def _crafted(folder: Path, pid: int = 1) -> Path:
    metadata = [
        file_hash("/data/in.bin", "aa", pid),
        file_hash("/data/out.bin", "bb", pid),
        file_hash("/data/renamed.bin", "cc", pid),
        file_hash("/data/log.txt", "dd", pid),
        file_hash("/data", "ee", pid),
    ]
    events = [
        call("open64", 100, pid=pid, fhash="aa", flags=66, mode=420),
        call("pwrite64", 110, pid=pid, fhash="aa", count=8192, offset=0, ret=8192),
        call("lseek64", 120, pid=pid, fhash="aa", offset=4096, whence=0, ret=4096),
        call("read", 130, pid=pid, fhash="aa", count=1000, ret=1000),
        call("pread64", 140, pid=pid, fhash="aa", count=2000, offset=100, ret=2000),
        call("close", 150, pid=pid, fhash="aa", ret=0),
        call("__xstat64", 160, pid=pid, fhash="aa"),
        call("open", 105, pid=pid, tid=2, fhash="bb", flags=577, mode=420),
        call("write", 115, pid=pid, tid=2, fhash="bb", count=300, ret=300),
        call("write", 125, pid=pid, tid=2, fhash="bb", count=300, ret=300),
        call("close", 135, pid=pid, tid=2, fhash="bb", ret=0),
        call("rename", 145, pid=pid, tid=2, fhash="bb", newpath_hash="cc"),
        call("fopen", 200, cat="STDIO", pid=pid, tid=3, fhash="dd", mode="w+"),
        call("fwrite", 210, cat="STDIO", pid=pid, tid=3, fhash="dd", size=10, count=3, ret=3),
        call("fseek", 220, cat="STDIO", pid=pid, tid=3, fhash="dd", offset=0, whence=0, ret=0),
        call("fread", 230, cat="STDIO", pid=pid, tid=3, fhash="dd", size=10, count=2, ret=2),
        call("fclose", 240, cat="STDIO", pid=pid, tid=3, fhash="dd"),
        call("opendir", 250, pid=pid, tid=3, fhash="ee"),
        call("mmap", 260, pid=pid, tid=3, fhash="dd", length=10),
    ]
    # Written out of start order, as DFTracer writes calls when they end.
    events.reverse()
    return write_trace(folder / f"crafted-{pid}.pfw", events, metadata)


def _expected(trace: Path, root: Path) -> Dict[Tuple[int, int], List[Key]]:
    with PathSandbox(str(root)) as sandbox:
        result: Dict[Tuple[int, int], List[Key]] = {}
        for stream, events in _inputs(trace).items():
            result[stream] = [
                _key(e, sandbox.display(e.path) if e.path else None)
                for e in events
                if calls.classify(e.category, e.name) is not None
            ]
    return result


@pytest.mark.parametrize("name", ["replay.pfw", "replay.pfw.gz"])
def test_crafted_trace_sequence(tmp_path: Path, name: str) -> None:
    trace = _crafted(tmp_path)
    root = tmp_path / "root"
    output = tmp_path / name

    summary = Replayer([str(trace)], ReplayOptions(root=str(root), emit_trace=str(output))).run()

    assert summary.events_failed == 0
    streams, bad_lines = _emitted(output)
    assert bad_lines == 0
    emitted = {key: [_key(e, e.path) for e in events] for key, events in streams.items()}
    assert emitted == _expected(trace, root)
    assert sum(len(events) for events in streams.values()) == summary.events_replayed
    if name.endswith(".gz"):
        assert output.read_bytes()[:2] == b"\x1f\x8b"
    else:
        text = output.read_bytes()
        assert text.startswith(b"[\n")
        assert text.endswith(b"\n]")


def test_crafted_trace_values(tmp_path: Path) -> None:
    trace = _crafted(tmp_path)
    root = tmp_path / "root"
    output = tmp_path / "replay.pfw"

    Replayer([str(trace)], ReplayOptions(root=str(root), emit_trace=str(output))).run()

    streams, _ = _emitted(output)
    first = {e.name: e for e in streams[(1, 1)]}
    assert first["pwrite64"].args["ret"] == 8192
    assert first["lseek64"].args["ret"] == 4096
    assert first["read"].args["ret"] == 1000
    assert first["close"].args["ret"] == 0
    assert "ret" not in first["open64"].args
    assert first["pwrite64"].args["fhash"] == path_hash(str(root / "data" / "in.bin"))
    stdio = {e.name: e for e in streams[(1, 3)]}
    assert stdio["fwrite"].args["ret"] == 3
    assert stdio["fread"].args["ret"] == 2
    renamed = [e for e in streams[(1, 2)] if e.name == "rename"][0]
    assert renamed.args["newpath_hash"] == path_hash(str(root / "data" / "renamed.bin"))
    for events in streams.values():
        starts = [e.ts for e in events]
        assert starts == sorted(starts)
        assert all(e.dur >= 0 for e in events)
        assert all(e.hostname for e in events)


def test_failed_call_is_emitted_with_ret_minus_one(tmp_path: Path) -> None:
    metadata = [file_hash("/data/gone.bin", "aa")]
    events = [
        call("open64", 100, fhash="aa", flags=66, mode=420, ret=3),
        call("close", 110, fhash="aa", fd=3, ret=0),
        call("unlink", 120, fhash="aa"),
        # Succeeded when traced (another program made the file again).
        call("open64", 130, fhash="aa", flags=0, ret=3),
    ]
    trace = write_trace(tmp_path / "t.pfw", events, metadata)
    output = tmp_path / "replay.pfw"

    summary = Replayer(
        [str(trace)], ReplayOptions(root=str(tmp_path / "root"), emit_trace=str(output))
    ).run()

    streams, bad_lines = _emitted(output)
    assert bad_lines == 0
    assert summary.events_failed == 1
    names = [e.name for e in streams[(1, 1)]]
    assert names == ["open64", "close", "unlink", "open64"]
    assert "ret" not in streams[(1, 1)][0].args
    assert streams[(1, 1)][3].args["ret"] == -1


def test_emitted_trace_replays(tmp_path: Path) -> None:
    trace = _crafted(tmp_path)
    output = tmp_path / "replay.pfw.gz"
    Replayer([str(trace)], ReplayOptions(root=str(tmp_path / "root"), emit_trace=str(output))).run()

    again = Replayer([str(output)], ReplayOptions(root=str(tmp_path / "again"))).run()

    assert again.bad_lines == 0
    assert again.events_failed == 0
    assert again.parity["mismatch-class"] == 0
    assert again.parity["mismatch-bytes"] == 0


@pytest.mark.timeout(TIMEOUT)
def test_processes_join_parts(tmp_path: Path) -> None:
    traces = [_crafted(tmp_path, pid) for pid in (1, 2, 3)]
    root = tmp_path / "root"
    output = tmp_path / "replay.pfw.gz"

    summary = ShardedReplayer(
        [str(t) for t in traces], ReplayOptions(root=str(root), emit_trace=str(output)), 2
    ).run()

    streams, bad_lines = _emitted(output)
    assert bad_lines == 0
    expected: Dict[Tuple[int, int], List[Key]] = {}
    for trace in traces:
        expected.update(_expected(trace, root))
    emitted = {key: [_key(e, e.path) for e in events] for key, events in streams.items()}
    assert emitted == expected
    # The three processes rename the same file, so under resource order
    # two renames fail; executed calls that fail are emitted too.
    executed = summary.events_replayed + summary.events_failed
    assert sum(len(events) for events in streams.values()) == executed
    assert sorted(os.listdir(tmp_path)) == sorted(["crafted-1.pfw", "crafted-2.pfw", "crafted-3.pfw", "root", "replay.pfw.gz"])
    text = gzip.decompress(output.read_bytes())
    assert text.startswith(b"[\n")
    assert text.endswith(b"\n]")


def test_join_parts_skips_missing(tmp_path: Path) -> None:
    target = str(tmp_path / "out.pfw")
    first = part_path(target, 0)
    Path(first).write_bytes(b'{"name":"x"}\n')

    join_parts(target, [first, part_path(target, 1)])

    assert Path(target).read_bytes() == b'[\n{"name":"x"}\n]'
    assert not Path(first).exists()


def test_part_path_keeps_gz_suffix() -> None:
    assert part_path("/o/t.pfw.gz", 2) == "/o/t.pfw.part-2.gz"
    assert part_path("/o/t.pfw", 2) == "/o/t.pfw.part-2"


def test_emit_trace_rejected_inside_root(tmp_path: Path) -> None:
    inside = tmp_path / "root" / "sub" / "t.pfw"

    with pytest.raises(ValueError, match=r"^emit_trace must be outside root, where the replay may overwrite it, not '.*t\.pfw'$"):
        ReplayOptions(root=str(tmp_path / "root"), emit_trace=str(inside))


def test_emit_trace_rejected_in_dry_run() -> None:
    with pytest.raises(ValueError, match=r"^emit_trace needs a replay; a dry run executes no call$"):
        ReplayOptions(dry_run=True, emit_trace="/tmp/x.pfw")


# -- real traces ------------------------------------------------------------------

REAL = sorted(
    p for p in DATA.rglob("*") if p.name.endswith((".pfw", ".pfw.gz"))
)
LARGE = {"test-trace.pfw.gz", "test-trace-dist-1.pfw.gz"}


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("trace", REAL, ids=[str(p.relative_to(DATA)) for p in REAL])
def test_real_trace_sequence(tmp_path: Path, trace: Path) -> None:
    root = tmp_path / "root"
    output = tmp_path / "replay.pfw.gz"
    options = ReplayOptions(
        root=str(root),
        emit_trace=str(output),
        max_size=65536 if trace.name in LARGE else None,
        threads=2,
    )

    summary = Replayer([str(trace)], options).run()

    streams, bad_lines = _emitted(output)
    assert bad_lines == 0
    executed = sum(summary.parity.values())
    assert sum(len(events) for events in streams.values()) == executed
    expected = _expected(trace, root)
    for stream, events in streams.items():
        emitted = [_key(e, e.path) for e in events]
        assert _is_subsequence(emitted, expected[stream]), stream


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_write_error_is_kept_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    from greenpipe.replay._emit import TraceEmitter

    emitter = TraceEmitter("/dev/full")
    emitter.write([b"x" * (1 << 20) + b"\n"])
    emitter.write([b"y\n"])
    emitter.close()

    assert emitter.error is not None
    assert emitter.error.startswith("/dev/full: ")
    assert "cannot write the replay's trace" in caplog.text
    assert caplog.text.count("cannot write") == 1
