"""Scaled sizes, copies, ranks and sampling by whole unit."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

import pytest

from greenpipe.cli import main
from greenpipe.replay import InsufficientSpaceError, ReplayError, ReplayOptions, Replayer, replay
from greenpipe.replay._pipeline import check_free_space
from greenpipe.replay._sandbox import ROOT_MARKER
from greenpipe.replay._shards import ReplayShard, run_shard, run_shard_in_subroot

from .conftest import call, snapshot, write_trace
from .test_shards import counts

DATA = Path(__file__).resolve().parent.parent / "data"
O_RDWR_CREAT = os.O_RDWR | os.O_CREAT
F = "/data/out.bin"


def _replay(traces: List[Path], root: Path, **options: Any):
    options.setdefault("threads", 2)
    processes = options.pop("processes", 1)
    return replay(
        [str(t) for t in traces], ReplayOptions(root=str(root), **options), processes=processes
    )


def _layout_trace(path: Path) -> Path:
    return write_trace(
        path,
        [
            call("open", 10, fname=F, flags=O_RDWR_CREAT, mode=0o644, ret=3),
            call("write", 20, fname=F, fd=3, count=10000, ret=10000),
            call("pwrite", 30, fname=F, fd=3, count=3000, offset=100000, ret=3000),
            call("pread", 40, fname=F, fd=3, count=3000, offset=100000, ret=3000),
            call("lseek", 50, fname=F, fd=3, offset=200000, whence=0, ret=200000),
            call("write", 60, fname=F, fd=3, count=1, ret=1),
            call("close", 70, fname=F, fd=3, ret=0),
            call("fopen", 80, cat="STDIO", fname="/data/s.txt", mode="w"),
            call("fwrite", 90, cat="STDIO", fname="/data/s.txt", size=10, count=4, ret=4),
            call("fclose", 99, cat="STDIO", fname="/data/s.txt"),
        ],
    )


# -- size scaling -------------------------------------------------------------------


def test_size_scale_doubles_layout(tmp_path: Path) -> None:
    trace = _layout_trace(tmp_path / "t.pfw")
    root = tmp_path / "root"

    summary = _replay([trace], root, size_scale=2.0)

    assert summary.exit_code() == 0
    assert (root / "data" / "out.bin").stat().st_size == 400000 + 2
    assert (root / "data" / "s.txt").stat().st_size == 20 * 4
    assert summary.bytes_written == 20000 + 6000 + 2 + 80
    assert summary.bytes_read == 6000
    assert summary.parity["mismatch-bytes"] == 0
    assert summary.parity["mismatch-class"] == 0


def test_size_scale_aligns_sizes(tmp_path: Path) -> None:
    trace = _layout_trace(tmp_path / "t.pfw")
    root = tmp_path / "root"

    summary = _replay([trace], root, size_scale=0.5, align=4096)

    # write 10000 -> 5000 -> 4096; pwrite at 100000 -> 50000 -> 49152 of
    # 3000 -> 1500 -> 4096 (the minimum); seek 200000 -> 100000 -> 98304
    # and write 1 -> 4096; fwrite items of 10 -> 4096, four of them.
    assert summary.exit_code() == 0
    assert (root / "data" / "out.bin").stat().st_size == 98304 + 4096
    assert (root / "data" / "s.txt").stat().st_size == 4 * 4096
    assert summary.bytes_written == 4096 + 4096 + 4096 + 4 * 4096
    assert summary.bytes_read == 4096
    assert summary.bytes_written % 4096 == 0


def test_align_alone_rounds_sizes(tmp_path: Path) -> None:
    trace = _layout_trace(tmp_path / "t.pfw")

    summary = _replay([trace], tmp_path / "root", align=512)

    # 10000 -> 10240, 3000 -> 3072, 1 -> 512, fwrite items 10 -> 512.
    assert summary.bytes_written == 10240 + 3072 + 512 + 4 * 512


def test_size_scale_in_free_space_estimate(tmp_path: Path) -> None:
    trace = _layout_trace(tmp_path / "t.pfw")
    root = tmp_path / "root"

    with pytest.raises(InsufficientSpaceError) as raised:
        _replay([trace], root, size_scale=1e9)

    assert raised.value.needed == (10000 + 3000 + 1 + 40) * 10**9
    assert not (root / "data").exists()


def test_size_scale_in_max_bytes(tmp_path: Path) -> None:
    trace = _layout_trace(tmp_path / "t.pfw")

    summary = _replay([trace], tmp_path / "root", size_scale=2.0, max_bytes=20000)

    assert summary.bytes_written == 20000
    assert summary.skipped["--max-bytes reached"] == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size_scale": 0.0}, r"^size_scale must be a positive number, not 0.0$"),
        ({"size_scale": float("nan")}, r"^size_scale must be a positive number, not nan$"),
        ({"align": 0}, r"^align must be an integer >= 1, not 0$"),
        ({"copies": 0}, r"^copies must be an integer >= 1, not 0$"),
        ({"ranks": frozenset({-1})}, r"^ranks must be integers >= 0, not -1$"),
        ({"sample_by": "file"}, r"^sample_by='file' needs a sample rate; set sample too$"),
        ({"sample": 0.5, "sample_by": "host"}, r"^sample_by must be one of event, file, stream, process, not 'host'$"),
    ],
)
def test_scaling_options_rejected(options: Dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReplayOptions(dry_run=True, **options)


# -- copies -------------------------------------------------------------------------


def test_copies_fill_their_subroots(tmp_path: Path, sandbox_dirs) -> None:
    root, outside = sandbox_dirs
    trace = _layout_trace(tmp_path / "t.pfw")
    before = snapshot(outside)

    single = _replay([trace], tmp_path / "single")
    summary = _replay([trace], root, copies=3)

    assert summary.exit_code() == 0
    assert summary.copies == 3
    assert sorted(os.listdir(root)) == sorted([ROOT_MARKER, "copy-0", "copy-1", "copy-2"])
    for number in range(3):
        copy = root / f"copy-{number}"
        assert (copy / "data" / "out.bin").stat().st_size == 200001
        assert (copy / "data" / "s.txt").stat().st_size == 40
        assert (copy / ROOT_MARKER).exists()
    assert summary.events_replayed == 3 * single.events_replayed
    assert summary.bytes_written == 3 * single.bytes_written
    assert summary.events_seen == 3 * single.events_seen
    assert summary.lines["total"] == 3 * single.lines["total"]
    assert summary.lines["unaccounted"] == 0
    assert sorted(row["copy"] for row in summary.streams) == [0, 1, 2]
    assert snapshot(outside) == before


def test_copies_free_space_counts_all() -> None:
    options = ReplayOptions(root="/unused", copies=4)

    assert check_free_space(1000, options, "/unused", free=4000) == 4000
    with pytest.raises(InsufficientSpaceError) as raised:
        check_free_space(1001, options, "/unused", free=4000)
    assert raised.value.needed == 4004


def test_copies_keep_escaping_paths_inside(tmp_path: Path, sandbox_dirs) -> None:
    root, outside = sandbox_dirs
    escape = "/../../" + str(outside) + "/keep.txt"
    trace = write_trace(
        tmp_path / "e.pfw",
        [
            call("open", 10, fname=escape, flags=O_RDWR_CREAT | os.O_TRUNC, mode=0o644, ret=3),
            call("pwrite", 20, fname=escape, fd=3, count=100, offset=10**6, ret=100),
            call("close", 30, fname=escape, fd=3, ret=0),
            call("mkdir", 40, fname="/../copy-1/x", mode=0o755, ret=0),
        ],
    )
    before = snapshot(outside)

    summary = _replay([trace], root, copies=2, size_scale=1000.0)

    assert summary.copies == 2
    assert snapshot(outside) == before
    for number in range(2):
        copy = root / f"copy-{number}"
        written = [p for p in copy.rglob("keep.txt")]
        assert len(written) == 1
        assert written[0].stat().st_size == 10**9 + 100000
        assert (copy / "copy-1" / "x").is_dir()
    assert sorted(os.listdir(root)) == sorted([ROOT_MARKER, "copy-0", "copy-1"])


@pytest.mark.timeout(120)
def test_copies_same_with_two_processes(tmp_path: Path) -> None:
    traces = _rank_traces(tmp_path)

    one = _replay(traces, tmp_path / "a", copies=2, processes=1)
    two = _replay(traces, tmp_path / "b", copies=2, processes=2)

    assert counts(one) == counts(two)
    assert two.copies == 2
    for number in range(2):
        assert sorted(os.listdir(tmp_path / "b" / f"copy-{number}" / "out")) == [
            "rank-0", "rank-1", "rank-2"
        ]


# -- ranks --------------------------------------------------------------------------


def _rank_traces(tmp_path: Path) -> List[Path]:
    folder = tmp_path / "traces"
    folder.mkdir(exist_ok=True)
    traces = []
    for rank in range(3):
        name = f"/out/rank-{rank}"
        traces.append(
            write_trace(
                folder / f"app-{rank}.pfw",
                [
                    call("open", 10, pid=100 + rank, fname=name, flags=O_RDWR_CREAT, mode=0o644, ret=3),
                    call("write", 20, pid=100 + rank, fname=name, fd=3, count=100 * (rank + 1), ret=100 * (rank + 1)),
                    call("close", 30, pid=100 + rank, fname=name, fd=3, ret=0),
                ],
            )
        )
    return traces


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.timeout(120)
def test_ranks_pick_trace_files(tmp_path: Path, processes: int) -> None:
    _rank_traces(tmp_path)
    root = tmp_path / "root"

    summary = _replay([tmp_path / "traces"], root, ranks=frozenset({0, 2}), processes=processes)

    assert summary.exit_code() == 0
    assert sorted(os.listdir(root / "out")) == ["rank-0", "rank-2"]
    assert (root / "out" / "rank-2").stat().st_size == 300
    assert [os.path.basename(row["path"]) for row in summary.files] == ["app-0.pfw", "app-2.pfw"]
    assert summary.events_replayed == 6


def test_ranks_missing_rank_rejected(tmp_path: Path) -> None:
    _rank_traces(tmp_path)

    with pytest.raises(ReplayError, match=(
        r"^The option --ranks names rank 3, but the inputs hold 3 trace file\(s\), "
        r"ranks 0 to 2\. Pick ranks in that range\.$"
    )):
        _replay([tmp_path / "traces"], tmp_path / "root", ranks=frozenset({1, 3}))

    assert not (tmp_path / "root").exists()


def test_ranks_real_traces() -> None:
    summary = replay([str(DATA)], ReplayOptions(dry_run=True, threads=2, ranks=frozenset({0, 12})))
    everything = replay([str(DATA)], ReplayOptions(dry_run=True, threads=2))

    assert len(everything.files) == 13
    assert [row["path"] for row in summary.files] == [
        everything.files[0]["path"], everything.files[12]["path"]
    ]
    assert summary.events_seen == everything.files[0]["events"] + everything.files[12]["events"]


# -- sampling by unit ---------------------------------------------------------------


def _many_files_trace(path: Path, files: int = 40, streams: int = 1) -> Path:
    events = []
    ts = 10
    for number in range(files):
        name = f"/d/f{number}"
        tid = 1 + number % streams
        pid = 1 + number % 2
        fd = 3 + number
        # Descriptors only, after the open, as older traces record them.
        events.append(call("open", ts, pid=pid, tid=tid, fname=name, flags=O_RDWR_CREAT, mode=0o644, ret=fd))
        events.append(call("write", ts + 1, pid=pid, tid=tid, fd=fd, count=10 + number, ret=10 + number))
        events.append(call("close", ts + 2, pid=pid, tid=tid, fd=fd, ret=0))
        ts += 10
    return write_trace(path, events)


def _kept_files(root: Path) -> Dict[str, int]:
    folder = root / "d"
    if not folder.exists():
        return {}
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def test_sample_by_file_keeps_whole_files(tmp_path: Path) -> None:
    trace = _many_files_trace(tmp_path / "t.pfw")

    summary = _replay([trace], tmp_path / "root", sample=0.5, sample_by="file", seed=3)

    kept = _kept_files(tmp_path / "root")
    assert 5 < len(kept) < 35
    for name, size in kept.items():
        assert size == 10 + int(name[1:])
    assert summary.events_replayed == 3 * len(kept)
    assert summary.events_filtered == 3 * (40 - len(kept))
    assert summary.skipped_by_call == {}
    assert summary.implicit_opens == 0


def test_sample_by_file_repeats_with_seed(tmp_path: Path) -> None:
    trace = _many_files_trace(tmp_path / "t.pfw")

    _replay([trace], tmp_path / "a", sample=0.5, sample_by="file", seed=3)
    _replay([trace], tmp_path / "b", sample=0.5, sample_by="file", seed=3)
    _replay([trace], tmp_path / "c", sample=0.5, sample_by="file", seed=4)

    assert _kept_files(tmp_path / "a") == _kept_files(tmp_path / "b")
    assert _kept_files(tmp_path / "a") != _kept_files(tmp_path / "c")


@pytest.mark.parametrize("unit", ["stream", "process"])
def test_sample_by_stream_or_process(tmp_path: Path, unit: str) -> None:
    trace = _many_files_trace(tmp_path / "t.pfw", streams=8)
    every: Counter = Counter()
    for number in range(40):
        every[(1 + number % 2, 1 + number % 8)] += 3

    chosen = []
    for seed in range(6):
        summary = _replay([trace], tmp_path / f"root{seed}", sample=0.5, sample_by=unit, seed=seed)
        kept = {(row["pid"], row["tid"]) for row in summary.streams}
        for row in summary.streams:
            assert row["replayed"] == every[(row["pid"], row["tid"])]
        if unit == "process":
            pids = {pid for pid, _ in kept}
            assert kept == {key for key in every if key[0] in pids}
        assert summary.events_replayed == sum(every[key] for key in kept)
        chosen.append(frozenset(kept))

    assert len(set(chosen)) > 1
    assert any(0 < len(kept) < len(every) for kept in chosen)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("unit", ["file", "stream", "process"])
def test_sample_by_unit_same_with_two_processes(tmp_path: Path, unit: str) -> None:
    traces = [
        _many_files_trace(tmp_path / "a.pfw", streams=4),
        _many_files_trace(tmp_path / "b.pfw", files=30, streams=3),
    ]
    options = {"sample": 0.4, "sample_by": unit, "seed": 11}

    one = _replay(traces, tmp_path / "one", processes=1, **options)
    two = _replay(traces, tmp_path / "two", processes=2, **options)

    assert counts(one) == counts(two)
    assert _kept_files(tmp_path / "one") == _kept_files(tmp_path / "two")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("unit", ["file", "stream", "process"])
def test_sample_by_unit_real_traces(unit: str) -> None:
    options = {"dry_run": True, "threads": 2, "sample": 0.3, "sample_by": unit, "seed": 5}
    plain = replay([str(DATA)], ReplayOptions(dry_run=True, threads=2))

    first = replay([str(DATA)], ReplayOptions(**options))
    again = replay([str(DATA)], ReplayOptions(**options), processes=2)

    assert counts(first) == counts(again)
    assert first.events_seen == plain.events_seen
    assert 0 < first.events_filtered < plain.events_seen
    assert first.lines["unaccounted"] == 0


def test_cli_copies_ranks_and_scale(tmp_path: Path) -> None:
    _rank_traces(tmp_path)
    root = tmp_path / "root"
    target = tmp_path / "s.json"
    out, err = io.StringIO(), io.StringIO()

    code = main(
        ["replay", str(tmp_path / "traces"), "--root", str(root), "--processes", "1",
         "--copies", "2", "--ranks", "1-2", "--size-scale", "3", "--align", "64",
         "--data", "random:5", "--sample", "1", "--sample-by", "process", "--json", str(target)],
        stdout=out,
        stderr=err,
    )

    data = json.loads(target.read_text())
    assert code == 0
    assert err.getvalue() == ""
    assert data["copies"] == 2
    assert data["verify"] is None
    assert "2 copies (counts add up all copies)" in out.getvalue()
    for number in range(2):
        folder = root / f"copy-{number}" / "out"
        assert sorted(os.listdir(folder)) == ["rank-1", "rank-2"]
        # 200 * 3 = 600 -> 576; 300 * 3 = 900 -> 896 (multiples of 64).
        assert (folder / "rank-1").stat().st_size == 576
        assert (folder / "rank-2").stat().st_size == 896
        assert (folder / "rank-2").read_bytes().count(0) < 20
    assert data["bytes_written"] == 2 * (576 + 896)


def test_copies_in_shard_subroot(tmp_path: Path) -> None:
    traces = _rank_traces(tmp_path)
    root = tmp_path / "root"
    options = ReplayOptions(root=str(root), threads=2, copies=2, size_scale=2.0)
    files = ((1, str(traces[1])),)
    plan = run_shard(ReplayShard("plan", files, options)).plan
    assert plan is not None

    run_shard_in_subroot(ReplayShard("replay", files, options), plan)
    result = run_shard_in_subroot(ReplayShard("replay", files, options), plan)

    subroot = root / ".shards" / "1"
    assert sorted(os.listdir(subroot)) == sorted([ROOT_MARKER, "copy-0", "copy-1"])
    for number in range(2):
        assert os.listdir(subroot / f"copy-{number}" / "out") == ["rank-1"]
        assert (subroot / f"copy-{number}" / "out" / "rank-1").stat().st_size == 400
    assert sum(stream.bytes_written for stream in result.streams) == 800
    assert sorted(stream.copy for stream in result.streams) == [0, 1]
