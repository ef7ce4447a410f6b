"""Replays that hold more files open than the descriptor limit allows.

Past the limit the replay closes the least recently used idle descriptor
and reopens it by path on its next use. The in-process tests lower the
limit of the replay itself; the subprocess test lowers ``RLIMIT_NOFILE``.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from greenpipe.replay import ReplayOptions, replay
from greenpipe.replay import _execute

from replay.conftest import call, write_trace

RW_CREATE_TRUNC = os.O_RDWR | os.O_CREAT | os.O_TRUNC
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def open_limit(monkeypatch: pytest.MonkeyPatch):
    """Set the number of traced files a replay keeps open at once."""

    def set_limit(limit: int) -> None:
        monkeypatch.setattr(_execute, "default_open_limit", lambda: limit)

    return set_limit


def _many_files(count: int, tid: int = 1, pid: int = 1, first_ts: int = 0) -> List[Dict[str, Any]]:
    """Open ``count`` files, write to each, read each back, then close them.

    Every file is opened with ``O_CREAT | O_EXCL | O_TRUNC``, so repeating
    the open flags on a reopen would fail or empty the file.
    """
    flags = RW_CREATE_TRUNC | os.O_EXCL
    events = []
    ts = first_ts
    for step in ("open", "write", "read", "append", "close"):
        for number in range(count):
            ts += 1
            name = f"/t{pid}.{tid}/f{number}"
            fd = 100 + 1000 * tid + number
            common = {"pid": pid, "tid": tid, "fname": name}
            if step == "open":
                events.append(call("open64", ts, flags=flags, mode=0o644, ret=fd, **common))
            elif step == "write":
                events.append(call("write", ts, fd=fd, count=100, ret=100, **common))
            elif step == "read":
                events.append(call("pread64", ts, fd=fd, count=100, offset=0, ret=100, **common))
            elif step == "append":
                events.append(call("write", ts, fd=fd, count=10, ret=10, **common))
            else:
                events.append(call("close", ts, fd=fd, ret=0, **common))
    return events


def test_recycled_files_keep_data_and_flags(tmp_path: Path, open_limit) -> None:
    open_limit(4)
    trace = write_trace(tmp_path / "t.pfw", _many_files(40))
    root = tmp_path / "root"

    summary = replay([str(trace)], ReplayOptions(root=str(root), threads=2))

    assert summary.exit_code() == 0
    assert summary.events_replayed == 200
    assert summary.failed == {}
    assert summary.short_reads == 0
    assert summary.bytes_read == 40 * 100
    assert summary.bytes_written == 40 * 110
    assert summary.descriptors_reopened >= 40
    assert sorted(os.listdir(root / "t1.1")) == sorted(f"f{n}" for n in range(40))
    assert {(root / "t1.1" / f"f{n}").stat().st_size for n in range(40)} == {110}


def test_streams_of_many_threads_share_limit(tmp_path: Path, open_limit) -> None:
    open_limit(3)
    events = []
    for pid in (1, 2):
        for tid in (1, 2, 3):
            events += _many_files(15, tid=tid, pid=pid, first_ts=1000 * tid)
    trace = write_trace(tmp_path / "t.pfw", events)
    root = tmp_path / "root"

    summary = replay([str(trace)], ReplayOptions(root=str(root), threads=2))

    assert summary.exit_code() == 0
    assert summary.failed == {}
    assert summary.events_replayed == len(events)
    assert summary.short_reads == 0
    assert summary.descriptors_reopened > 0
    sizes = {path.stat().st_size for path in root.glob("t*/f*")}
    assert len(list(root.glob("t*/f*"))) == 6 * 15
    assert sizes == {110}


def test_handle_shared_by_threads_recycled(tmp_path: Path, open_limit) -> None:
    open_limit(1)
    events = [call("open64", 1, fname="/shared", flags=RW_CREATE_TRUNC, mode=0o644)]
    events.append(call("write", 2, fname="/shared", count=4096, ret=4096))
    for tid in (2, 3, 4):
        for number in range(20):
            # The reads start 10 ms after the shared file is written. All
            # streams share one time origin, so a gap of microseconds would
            # let a read race the write in another stream.
            ts = 50 * (100 * tid + 3 * number)
            own = f"/own{tid}.{number}"
            events.append(call("open64", ts, tid=tid, fname=own, flags=RW_CREATE_TRUNC))
            events.append(call("pread64", ts + 1, tid=tid, fname="/shared", count=64, offset=64 * number, ret=64))
            events.append(call("write", ts + 2, tid=tid, fname=own, count=8, ret=8))
    trace = write_trace(tmp_path / "t.pfw", events)
    root = tmp_path / "root"

    summary = replay([str(trace)], ReplayOptions(root=str(root), threads=2, timing="original"))

    assert summary.failed == {}
    assert summary.events_replayed == len(events)
    assert summary.bytes_read == 3 * 20 * 64
    assert (root / "shared").stat().st_size == 4096
    assert {path.stat().st_size for path in root.glob("own*")} == {8}


def test_unlinked_and_renamed_files_stay_open(tmp_path: Path, open_limit) -> None:
    open_limit(2)
    events = [
        call("open64", 1, fname="/gone", flags=RW_CREATE_TRUNC, mode=0o644, ret=3),
        call("write", 2, fname="/gone", fd=3, count=50, ret=50),
        call("unlink", 3, fname="/gone", ret=0),
        call("open64", 4, fname="/dir/old", flags=RW_CREATE_TRUNC, mode=0o644, ret=4),
        call("write", 5, fname="/dir/old", fd=4, count=20, ret=20),
        call("rename", 6, fname="/dir", newpath="/moved", ret=0),
    ]
    ts = 10
    for number in range(8):
        events.append(call("open64", ts, fname=f"/other{number}", flags=RW_CREATE_TRUNC, ret=10 + number))
        events.append(call("write", ts + 1, fname=f"/other{number}", fd=10 + number, count=1, ret=1))
        ts += 2
    events += [
        call("pread64", 100, fname="/gone", fd=3, count=50, offset=0, ret=50),
        call("write", 101, fname="/dir/old", fd=4, count=5, ret=5),
        call("close", 102, fname="/gone", fd=3, ret=0),
        call("close", 103, fname="/dir/old", fd=4, ret=0),
    ]
    trace = write_trace(tmp_path / "t.pfw", events)
    root = tmp_path / "root"

    summary = replay([str(trace)], ReplayOptions(root=str(root), threads=1))

    assert summary.failed == {}
    assert summary.events_replayed == len(events)
    assert summary.bytes_read == 50
    assert summary.short_reads == 0
    assert not (root / "gone").exists()
    assert not (root / "dir").exists()
    assert (root / "moved" / "old").stat().st_size == 25


@pytest.mark.timeout(120)
def test_low_rlimit_nofile_completes(tmp_path: Path) -> None:
    limit = 64
    events = []
    for tid in (1, 2, 3):
        events += _many_files(100, tid=tid, first_ts=10_000 * tid)
    trace = write_trace(tmp_path / "t.pfw", events)
    root = tmp_path / "root"

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    completed = subprocess.run(
        [sys.executable, "-m", "greenpipe", "replay", str(trace), "--root", str(root), "--threads", "2"],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=REPO,
        preexec_fn=lower_limit,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"replayed {len(events):,}, failed 0, skipped 0" in completed.stdout
    assert "reopened past the descriptor limit" in completed.stdout
    assert completed.stderr == ""
    assert len(list(root.glob("t1.*/f*"))) == 300
    assert {path.stat().st_size for path in root.glob("t1.*/f*")} == {110}


def test_least_recently_used_recycled_first(tmp_path: Path) -> None:
    from greenpipe.replay._descriptors import DescriptorCache, Handle
    from greenpipe.replay._sandbox import PathSandbox

    with PathSandbox(tmp_path) as sandbox:
        cache = DescriptorCache(sandbox, limit=2)
        handles = {}
        for name in ("a", "b"):
            flags = os.O_RDWR | os.O_CREAT
            handles[name] = Handle(cache.open(f"/{name}", flags), f"/{name}", False, False, None, 1, flags)
            cache.track(handles[name])
        handles["a"].users = 1
        cache.use(handles["a"])
        handles["a"].users = 0
        flags = os.O_RDWR | os.O_CREAT
        handles["c"] = Handle(cache.open("/c", flags), "/c", False, False, None, 1, flags)
        cache.track(handles["c"])
        recycled = [name for name, handle in handles.items() if handle.fd < 0]
        reopened = cache.use(handles["b"])
        cache.drain()

    assert recycled == ["b"]
    assert reopened >= 0
    assert cache.recycled == 2
    assert cache.reopened == 1
