"""Handcrafted traces whose replay outcome is known exactly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from greenpipe.replay import ReplayOptions, replay
from greenpipe.replay._sandbox import ROOT_MARKER

from .conftest import call, file_hash, snapshot, write_trace

O_RDWR_CREAT = os.O_RDWR | os.O_CREAT


def _replay(trace: Path, root: Path, **options):
    options.setdefault("threads", 2)
    return replay([str(trace)], ReplayOptions(root=str(root), **options))


def test_writes_at_offsets_set_sizes(tmp_path: Path, sandbox_dirs) -> None:
    root, outside = sandbox_dirs
    trace = write_trace(
        tmp_path / "w.pfw",
        [
            call("open", 10, fd=None, fname="/data/out.bin", flags=O_RDWR_CREAT, mode=0o644, ret=3),
            call("write", 20, fname="/data/out.bin", fd=3, count=100, ret=100),
            call("pwrite", 30, fname="/data/out.bin", fd=3, count=50, offset=1000, ret=50),
            call("write", 40, fname="/data/out.bin", fd=3, count=10, ret=10),
            call("lseek", 50, fname="/data/out.bin", fd=3, offset=5000, whence=0, ret=5000),
            call("write", 60, fname="/data/out.bin", fd=3, count=1, ret=1),
            call("close", 70, fname="/data/out.bin", fd=3, ret=0),
            call("fopen", 80, cat="STDIO", fname="/data/s.txt", mode="w"),
            call("fwrite", 90, cat="STDIO", fname="/data/s.txt", size=8, count=4, ret=4),
            call("fseek", 95, cat="STDIO", fname="/data/s.txt", offset=100, whence=0, ret=0),
            call("fwrite", 96, cat="STDIO", fname="/data/s.txt", size=1, count=3, ret=3),
            call("fclose", 99, cat="STDIO", fname="/data/s.txt"),
        ],
    )
    before = snapshot(outside)

    summary = _replay(trace, root)

    assert summary.exit_code() == 0
    assert summary.events_replayed == 12
    assert summary.bytes_written == 100 + 50 + 10 + 1 + 32 + 3
    assert (root / "data" / "out.bin").stat().st_size == 5001
    assert (root / "data" / "s.txt").stat().st_size == 103
    assert snapshot(outside) == before


def test_reads_past_written_data_are_short(tmp_path: Path, sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    trace = write_trace(
        tmp_path / "r.pfw",
        [
            call("open", 10, fname="/f", flags=O_RDWR_CREAT, mode=0o600, ret=4),
            call("write", 20, fname="/f", fd=4, count=100, ret=100),
            call("pread", 30, fname="/f", fd=4, count=80, offset=50, ret=50),
            call("pread", 40, fname="/f", fd=4, count=10, offset=500, ret=0),
            call("close", 50, fname="/f", fd=4, ret=0),
        ],
    )

    summary = _replay(trace, root)

    assert summary.exit_code() == 0
    assert summary.bytes_read == 50
    assert summary.short_reads == 0
    assert summary.preparation.files == 0
    assert (root / "f").stat().st_size == 100


def test_read_before_write_prepares_file(tmp_path: Path, sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    trace = write_trace(
        tmp_path / "p.pfw",
        [
            call("open", 10, fname="/in/data.bin", flags=os.O_RDONLY, ret=5),
            call("read", 20, fname="/in/data.bin", fd=5, count=4096, ret=4096),
            call("read", 30, fname="/in/data.bin", fd=5, count=4096, ret=1000),
            call("pread", 40, fname="/in/data.bin", fd=5, count=10, offset=20000, ret=10),
            call("close", 50, fname="/in/data.bin", fd=5, ret=0),
            call("__xstat64", 60, fname="/etc/conf"),
            call("opendir", 70, fname="/in"),
        ],
    )

    summary = _replay(trace, root)

    assert summary.exit_code() == 0
    assert summary.events_replayed == 7
    assert summary.preparation.files == 2
    assert summary.preparation.bytes == 20010
    assert (root / "in" / "data.bin").stat().st_size == 20010
    assert summary.bytes_read == 4096 + 4096 + 10
    assert (root / "etc" / "conf").is_file()


def test_reordered_stream_runs_in_start_order(tmp_path: Path, sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    # Lines are written when calls end: here the open's line comes last.
    trace = write_trace(
        tmp_path / "o.pfw",
        [
            call("write", 20, fname="/x", fd=7, count=10, ret=10),
            call("close", 30, fname="/x", fd=7, ret=0),
            call("open", 10, fname="/x", flags=O_RDWR_CREAT, mode=0o644, ret=7),
        ],
    )

    summary = _replay(trace, root)

    assert summary.exit_code() == 0
    assert summary.events_replayed == 3
    assert summary.implicit_opens == 0
    assert summary.late_events == 0
    assert (root / "x").stat().st_size == 10


def test_window_of_one_counts_late_events(tmp_path: Path, sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    trace = write_trace(
        tmp_path / "o.pfw",
        [
            call("__xstat", 30, fname="/a"),
            call("__xstat", 20, fname="/a"),
            call("__xstat", 10, fname="/a"),
        ],
    )

    summary = _replay(trace, root, window=1)

    assert summary.late_events == 1
    assert summary.events_replayed == 3


def test_fd_less_newest_format(tmp_path: Path, sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    meta = [file_hash("/lustre/a.dat", "00000000000000aa"), file_hash("/lustre/b.dat", "00000000000000bb")]
    trace = write_trace(
        tmp_path / "d.pfw",
        [
            call("open", 10, fhash="00000000000000aa", flags=O_RDWR_CREAT, mode=420),
            call("open", 11, fhash="00000000000000bb", flags=os.O_RDONLY),
            call("write", 20, fhash="00000000000000aa", count=300, ret=300),
            call("write", 21, fhash="00000000000000aa", count=200, ret=200),
            call("read", 22, fhash="00000000000000bb", count=64, ret=64),
            call("read", 23, fhash="00000000000000bb", count=64, ret=64),
            call("close", 30, fhash="00000000000000aa", ret=0),
            call("close", 31, fhash="00000000000000bb", ret=0),
            call("open", 40, tid=2, fhash="00000000000000bb", flags=os.O_RDONLY),
            call("read", 41, tid=2, fhash="00000000000000bb", count=1000, ret=500),
            call("close", 42, tid=2, fhash="00000000000000bb", ret=0),
        ],
        metadata=meta,
    )

    summary = _replay(trace, root)

    assert summary.exit_code() == 0
    assert summary.events_replayed == 11
    assert summary.bytes_written == 500
    assert summary.bytes_read == 128 + 500
    assert summary.implicit_opens == 0
    assert (root / "lustre" / "a.dat").stat().st_size == 500
    assert (root / "lustre" / "b.dat").stat().st_size == 500
    assert summary.preparation.files == 1


def test_unreplayable_calls_skipped_by_name(tmp_path: Path, sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    trace = write_trace(
        tmp_path / "s.pfw",
        [
            call("open", 1, fname="/m", flags=O_RDWR_CREAT, ret=3),
            call("mmap", 2, fname="/m", fd=3, length=10),
            call("fork", 3, ret=99),
            call("dup", 4, fd=3),
            call("fcntl", 5, fname="/m", fd=3, cmd=1),
            call("frobnicate", 6, fname="/m"),
            call("open", 7, fname="/missing", flags=O_RDWR_CREAT, ret=-1),
            call("train", 8, cat="compute"),
            call("close", 9, fname="/m", fd=3, ret=0),
            call("open", 10, fname="/absent", flags=os.O_RDONLY, ret=-1),
        ],
    )

    summary = _replay(trace, root)

    assert summary.exit_code() == 0
    # The failed read-only open runs, and fails again as it did when traced.
    assert summary.events_replayed == 3
    assert summary.failures_reproduced == 1
    assert summary.events_application == 1
    assert summary.skipped_by_call == {
        "mmap: memory-mapped I/O is not recorded": 1,
        "fork: process creation is not replayed": 1,
        "dup: the new descriptor is not recorded": 1,
        "fcntl: the third argument of fcntl is not recorded": 1,
        "frobnicate: not a call the replayer knows": 1,
        "open: the call failed when traced (ret -1)": 1,
    }
    assert not (root / "missing").exists()
    assert not (root / "absent").exists()


def test_failures_counted_with_messages(tmp_path: Path, sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    trace = write_trace(
        tmp_path / "f.pfw",
        [
            call("mkdir", 1, fname="/d", mode=0o755),
            call("mkdir", 2, fname="/d", mode=0o755),
            call("rmdir", 3, fname="/d"),
            call("unlink", 4, fname="/d"),
        ],
    )

    summary = _replay(trace, root, threads=1)

    assert summary.exit_code() == 2
    assert summary.events_replayed == 2
    assert summary.failed == {"EEXIST": 1, "ENOENT": 1}
    assert summary.failure_messages["EEXIST"] == (f"mkdir {root}/d: File exists",)


def test_hostile_paths_in_trace_stay_inside(tmp_path: Path, sandbox_dirs) -> None:
    root, outside = sandbox_dirs
    (root / ROOT_MARKER).write_text("")
    (root / "planted").symlink_to(outside)
    escape = "/../outside/keep.txt"
    trace = write_trace(
        tmp_path / "h.pfw",
        [
            call("open", 1, fname=escape, flags=O_RDWR_CREAT | os.O_TRUNC, ret=3),
            call("write", 2, fname=escape, fd=3, count=5, ret=5),
            call("close", 3, fname=escape, fd=3, ret=0),
            call("open", 4, fname="/planted/keep.txt", flags=os.O_WRONLY | os.O_TRUNC, ret=4),
            call("unlink", 5, fname="/planted/keep.txt"),
            call("rename", 6, fname="/outside/keep.txt", newpath="/planted/new.txt"),
            call("rmdir", 7, fname="/planted/../../outside"),
            call("open", 8, fname="/a\x00b", flags=O_RDWR_CREAT, ret=5),
            call("mkdir", 9, fname="/" + "n" * 5000, mode=0o755),
        ],
    )
    before = snapshot(outside)

    summary = _replay(trace, root, threads=1)

    assert snapshot(outside) == before
    assert summary.failed["sandbox"] == 4
    assert (root / "outside" / "keep.txt").read_bytes() == bytes(5)


def test_descriptor_in_use_by_another_stream_outlives_its_close(tmp_path):
    from greenpipe.replay._execute import Handle, ProcessTable

    table = ProcessTable()
    fd = os.open(tmp_path / "data", os.O_CREAT | os.O_RDWR, 0o644)
    table.add(Handle(fd, "/data", False, False, 3, tid=1))

    reader = table.find(False, 2, 3, None)
    closer = table.find(False, 1, 3, None)
    table.remove(closer)
    close_now_for_closer = table.release(closer)
    os.fstat(fd)  # still open: the reader is in the middle of its call
    close_now_for_reader = table.release(reader)
    os.close(fd)

    assert reader is closer
    assert close_now_for_closer is False
    assert close_now_for_reader is True
    assert table.find(False, 2, 3, None) is None


def test_reused_descriptor_number_closes_idle_stale_handle(tmp_path):
    from greenpipe.replay._execute import Handle, ProcessTable

    table = ProcessTable()
    first = Handle(os.open(tmp_path / "a", os.O_CREAT | os.O_RDWR, 0o644), "/a", False, False, 3, 1)
    second = Handle(os.open(tmp_path / "b", os.O_CREAT | os.O_RDWR, 0o644), "/b", False, False, 3, 1)
    table.add(first)
    held = table.find(False, 1, 3, None)

    displaced_while_held = table.add(second)
    must_close = table.release(held)
    os.close(first.fd)
    os.close(second.fd)

    assert displaced_while_held is None
    assert must_close is True


def test_rename_resolves_the_new_path_by_hash(tmp_path: Path, sandbox_dirs) -> None:
    root, outside = sandbox_dirs
    trace = write_trace(
        tmp_path / "r.pfw",
        [
            call("open", 10, fhash="aa", flags=O_RDWR_CREAT, mode=0o644, ret=3),
            call("write", 20, fhash="aa", fd=3, count=64, ret=64),
            call("close", 30, fhash="aa", fd=3, ret=0),
            call("rename", 40, fhash="aa", newpath_hash="bb", ret=0),
        ],
        metadata=[file_hash("/data/old.bin", "aa"), file_hash("/data/new.bin", "bb")],
    )
    before = snapshot(outside)

    summary = _replay(trace, root)

    assert summary.exit_code() == 0
    assert summary.events_replayed == 4
    assert not (root / "data" / "old.bin").exists()
    assert (root / "data" / "new.bin").stat().st_size == 64
    assert snapshot(outside) == before


def test_implicit_open_for_read_allows_write(tmp_path: Path, sandbox_dirs) -> None:
    root, outside = sandbox_dirs
    # A descriptor opened before the trace started is read, then written.
    trace = write_trace(
        tmp_path / "i.pfw",
        [
            call("read", 10, fname="/f", fd=5, count=10, ret=10),
            call("write", 20, fname="/f", fd=5, count=30, ret=30),
            call("read", 30, fname="/linked", fd=6, count=4, ret=4),
        ],
    )
    (root / ROOT_MARKER).write_text("")
    os.link(outside / "keep.txt", root / "linked")
    before = snapshot(outside)

    summary = _replay(trace, root, threads=1)

    assert snapshot(outside) == before
    assert summary.failed == {}
    assert summary.events_replayed == 3
    assert summary.implicit_opens == 2
    assert (root / "f").stat().st_size == 40


def test_offset_beyond_off_t_fails_the_call(tmp_path: Path, sandbox_dirs) -> None:
    root, outside = sandbox_dirs
    before = snapshot(outside)
    beyond = 2**63 + 5
    trace = write_trace(
        tmp_path / "f.pfw",
        [
            call("open64", 1, fname="/f", flags=O_RDWR_CREAT, mode=0o644, ret=3),
            call("pwrite64", 2, fd=3, count=8, offset=0, ret=8),
            call("pread64", 3, fd=3, count=8, offset=beyond, ret=0),
            call("lseek64", 4, fd=3, offset=beyond, whence=0, ret=beyond),
            call("ftruncate64", 5, fd=3, length=beyond, ret=0),
            call("close", 6, fd=3, ret=0),
        ],
    )

    summary = _replay(trace, root, threads=1)

    assert summary.exit_code() == 2
    assert summary.events_replayed == 3
    assert summary.failed == {"EOVERFLOW": 3}
    assert summary.bytes_written == 8
    assert snapshot(outside) == before


def test_read_beyond_off_t_skips_preparing_file(tmp_path: Path, sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    trace = write_trace(
        tmp_path / "f.pfw",
        [
            call("open64", 1, fname="/f", flags=os.O_RDONLY, ret=3),
            call("pread64", 2, fd=3, count=4096, offset=2**63 - 100, ret=4096),
            call("close", 3, fd=3, ret=0),
        ],
    )

    summary = _replay(trace, root, threads=1)

    assert summary.preparation.files == 0
    assert len(summary.preparation.failures) == 1
    assert summary.preparation.failures[0] == f"{root}/f: File too large"
    assert summary.failed == {"ENOENT": 1}


def test_failed_descriptor_call_names_its_path(tmp_path: Path, sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    trace = write_trace(
        tmp_path / "f.pfw",
        [
            call("open64", 1, fname="/f", flags=O_RDWR_CREAT, mode=0o644, ret=3),
            call("pwrite64", 2, fd=3, count=8, offset=-5, ret=8),
            call("close", 3, fd=3, ret=0),
        ],
    )

    summary = _replay(trace, root, threads=1)

    assert summary.failed == {"EINVAL": 1}
    assert summary.failure_messages["EINVAL"] == (f"pwrite64 {root}/f: Invalid argument",)


def test_plan_follows_start_order_of_shared_descriptor(tmp_path: Path, sandbox_dirs) -> None:
    # Thread 2 reuses descriptor 5 after thread 1 closed it, but the close
    # is written to the trace after thread 2's open, as DFTracer writes an
    # event when its call ends.
    root, _ = sandbox_dirs
    trace = write_trace(
        tmp_path / "f.pfw",
        [
            call("open64", 10, tid=1, fname="/a", flags=os.O_RDONLY, ret=5),
            call("pread64", 12, tid=1, fd=5, count=10, offset=0, ret=10),
            call("open64", 30, tid=2, fname="/b", flags=os.O_RDONLY, ret=5),
            call("close", 20, tid=1, fd=5, ret=0),
            call("pread64", 40, tid=2, fd=5, count=50, offset=100, ret=50),
            call("close", 50, tid=2, fd=5, ret=0),
        ],
    )

    summary = _replay(trace, root, threads=1)

    assert summary.events_replayed == 6
    assert summary.short_reads == 0
    assert summary.bytes_read == 60
    assert os.path.getsize(root / "b") == 150
