"""Replay shards and the multi-process replay.

Every multi-process summary is compared with a single-process replay of
the same input. Wall times, latency values and the per-process rows
differ between any two runs, so the comparison leaves them out. Every
count is compared exactly.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from greenpipe import compute_memory_budget
from greenpipe.cli import main
from greenpipe.replay import ReplayError, ReplayOptions, Replayer, ReplaySummary
from greenpipe.replay._pipeline import BATCH_EVENTS
from greenpipe.replay._processes import ShardedReplayer, can_fork
from greenpipe.replay._shards import ReplayShard, ShardResult, partition_files, run_shard
from greenpipe.trace import _decode
from greenpipe.trace._decode import FAST_BATCH, EventTally

from .conftest import call, write_trace

DATA = Path(__file__).resolve().parent.parent / "data"
REPO = Path(__file__).resolve().parents[2]
NEWEST = DATA / "anku94_dftracer" / "examples" / "dfanalyzer" / "test-trace.pfw.gz"
SMALL = DATA / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw.gz"
DIST = DATA / "hariharan-devarajan_dftracer" / "examples" / "dfanalyzer" / "test-trace-distributed"

# Real traces whose replays touch disjoint paths and whose threads share
# no descriptor, so a replay of them together gives the same counts on
# every run. The two cm1 ranks are not both here: they probe and create
# the same folders, so their counts depend on which rank runs first.
INDEPENDENT = [
    NEWEST,
    SMALL,
    DATA / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw",
    DATA / "hariharan-devarajan_dftracer" / ".trace-0-of-2.pfw",
    DIST / "cm1_1_48_20240926" / "cm1-DEFAULT-3537780-preload.pfw.gz",
    DIST / "test-trace-dist-0.pfw.gz",
    DATA / "hariharan-devarajan_dftracer" / "examples" / "graph_visualization" / "test_data1.pfw",
]

TIMEOUT = 60


def counts(summary: ReplaySummary) -> Dict[str, Any]:
    """Return the summary as JSON values without times and process rows."""
    return json_counts(summary.to_dict())


def json_counts(data: Dict[str, Any]) -> Dict[str, Any]:
    """Return a summary's JSON values without times and process rows."""
    for key in ("wall_seconds", "processes", "root"):
        del data[key]
    data["latency"] = {name: row["count"] for name, row in data["latency"].items()}
    # How many calls waited for an order dependency depends on timing.
    del data["order"]["waits"]
    del data["timing"]["elapsed_s"]
    return data


# -- partitioning -----------------------------------------------------------------


def test_partition_balances_bytes(tmp_path: Path) -> None:
    sizes = [50, 10, 40, 30, 20]
    files = []
    for number, size in enumerate(sizes):
        path = tmp_path / f"{number}.pfw"
        path.write_bytes(b"x" * size)
        files.append(str(path))

    groups = partition_files(files, 2, ReplayOptions(dry_run=True))

    # Largest first to the lighter group: 50 -> A, 40 -> B, 30 -> B,
    # 20 -> A, 10 -> A (70 against 70 bytes).
    assert groups == [
        ((0, files[0]), (1, files[1]), (4, files[4])),
        ((2, files[2]), (3, files[3])),
    ]


def test_partition_never_makes_empty_groups(tmp_path: Path) -> None:
    files = [str(tmp_path / "a.pfw"), str(tmp_path / "b.pfw")]

    groups = partition_files(files, 8, ReplayOptions(dry_run=True))

    assert len(groups) == 2
    assert all(groups)


@pytest.mark.parametrize("cap", [{"max_events": 10}, {"max_bytes": 10}])
def test_partition_keeps_caps_in_one_group(tmp_path: Path, cap) -> None:
    files = [str(tmp_path / f"{n}.pfw") for n in range(4)]

    groups = partition_files(files, 4, ReplayOptions(dry_run=True, **cap))

    assert groups == [tuple(enumerate(files))]


def test_partition_rejects_zero_parts() -> None:
    with pytest.raises(ValueError, match=r"^parts must be >= 1, not 0$"):
        partition_files(["a.pfw"], 0, ReplayOptions(dry_run=True))


# -- the shard unit ---------------------------------------------------------------


def test_shard_rejects_unknown_phase() -> None:
    with pytest.raises(ValueError, match=r"^phase must be one of plan, dry-run, replay, not 'run'$"):
        ReplayShard("run", ((0, str(SMALL)),), ReplayOptions(dry_run=True))


def test_replay_shard_rejects_dry_run_options() -> None:
    with pytest.raises(ValueError, match=r"^a replay shard needs options with dry_run false$"):
        ReplayShard("replay", ((0, str(SMALL)),), ReplayOptions(dry_run=True))


def test_shard_and_result_pickle(tmp_path: Path) -> None:
    shard = ReplayShard("plan", ((3, str(SMALL)),), ReplayOptions(root=str(tmp_path / "r")))

    result = run_shard(pickle.loads(pickle.dumps(shard)))
    copy = pickle.loads(pickle.dumps(result))

    assert isinstance(copy, ShardResult)
    assert copy.plan is not None
    assert copy.plan.events == result.plan.events == 1012
    assert copy.plan.write_bytes == 3276800
    assert copy.peak_rss_bytes > 0


def test_dry_shard_runs_twice_alike() -> None:
    options = ReplayOptions(dry_run=True, sample=0.5, seed=7)
    shard = ReplayShard("dry-run", ((5, str(SMALL)), (6, str(NEWEST))), options)

    first = run_shard(shard)
    second = run_shard(shard)

    assert [(i, c) for i, c in first.files] == [(i, c) for i, c in second.files]
    assert [i for i, _ in first.files] == [5, 6]
    assert not first.interrupted


def test_shard_sampling_follows_file_index() -> None:
    """A file samples the same events in a shard as at its place in the whole replay."""
    options = ReplayOptions(dry_run=True, sample=0.5, seed=3)
    whole = Replayer([str(NEWEST), str(SMALL)], options).run()

    shard = run_shard(ReplayShard("dry-run", ((1, str(SMALL)),), options))

    assert shard.files[0][1].filtered == whole.files[1]["filtered"]


# -- equality with one process ------------------------------------------------------


def test_dry_run_processes_match_one() -> None:
    options = ReplayOptions(dry_run=True, sample=0.8, seed=11)

    single = Replayer([str(DATA)], options).run()
    sharded = ShardedReplayer([str(DATA)], options, 2).run()

    assert counts(sharded) == counts(single)
    assert sharded.events_seen == 204081
    assert len(sharded.files) == 13
    assert sharded.lines == single.lines
    assert sharded.lines["unaccounted"] == 0
    assert sharded.lines["not_executed_dry_run"] > 0


@pytest.mark.xfail(
    strict=True,
    reason="each worker's reader gets a part of the budget, so it accepts shorter lines",
)
def test_dry_run_processes_keep_long_lines(tmp_path: Path) -> None:
    long_text = "z" * 40_000
    inputs = []
    for number in range(2):
        trace = tmp_path / f"t{number}.pfw"
        write_trace(trace, [call("read", ts, pid=number + 1, fname=long_text, count=4) for ts in range(1, 4)])
        inputs.append(str(trace))
    # One process reads with the whole 256 KiB budget and accepts lines of
    # 64 KiB. Two processes with one thread each split it into readers of
    # 64 KiB, which accept lines of 16 KiB.
    options = ReplayOptions(dry_run=True, memory_budget=256 * 1024, threads=1)

    single = Replayer(inputs, options).run()
    sharded = ShardedReplayer(inputs, options, 2).run()

    assert single.bad_lines == 0
    assert single.events_seen == 6
    assert len(sharded.processes) == 2
    assert counts(sharded) == counts(single)


def test_dry_run_counts_like_capped_dry_run() -> None:
    """A plain dry run counts most events in the decoder, and a capped one builds each."""
    counted = Replayer([str(DATA)], ReplayOptions(dry_run=True)).run()
    built = Replayer([str(DATA)], ReplayOptions(dry_run=True, max_events=10**12)).run()

    assert counts(counted) == counts(built)
    assert counted.events_seen == 204081
    assert counted.lines["unaccounted"] == 0


#: One round of lines for every way through the decoder. It counts events,
#: some with numbers written as text, and builds those whose times do not
#: fit in 64 bits. Metadata, repaired, joined and bad lines go to its slow
#: path. TS stands for a start time, different in each round.
ODD_ROUND = [
    b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":TS,"dur":3,"ph":"X","args":{"fhash":"late"}}',
    b'{"name":"write","cat":"STDIO","pid":1,"tid":2,"ts":"TS","dur":"2.5","ph":"X","args":{"size":"4096"}}',
    b'{"name":"step","cat":"ai","pid":2,"tid":1,"ts":TS.5,"dur":1,"ph":"X"}',
    b'{"name":"read","cat":"posix","pid":1,"tid":1,"ts":TS,"dur":-4,"ph":"X"}',
    b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":9223372036854775807,"dur":TS,"ph":"X"}',
    b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":TS,"dur":9223372036854775808,"ph":"X"}',
    b'{"name":"read","cat":"STDIO","pid":1,"tid":1,"ts":-TS,"dur":0,"ph":"X"}',
    b'{"name":"open","cat":"POSIX","pid":1,"tid":1,"dur":TS,"ph":"X"}',
    b'{"name":"read","cat":["POSIX"],"pid":1,"tid":1,"ts":TS,"dur":1,"ph":"X"}',
    b'{"name":"FH","cat":"dftracer","pid":1,"tid":1,"ph":"M","args":{"name":"/data/TS","value":"late"}}',
    b'{"name":"close","cat":"POSIX","pid":1,"tid":1,"ts":TS,"dur":1,"ph":"X"},',
    b'{"name":"stat","cat":"POSIX","pid":1,"tid":1,"ts":TS,"dur":1,"ph":"X","args":{"fname":"/a\nb"}}',
    b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":TS,',
    b"",
    b'{"name":"step","cat":"ai","pid":1,"tid":1,"ts":TS,"dur":1,"ph":"X","args":{"text":"'
    + b"z" * 6000
    + b'"}}',
]


def write_odd_trace(path: Path, rounds: int, members: bool) -> None:
    """Write ``rounds`` rounds of ``ODD_ROUND``, as one text file or gzip members."""
    lines = [
        line.replace(b"TS", str(1000 + 10 * number).encode())
        for number in range(rounds)
        for line in ODD_ROUND
    ]
    text = b"\n".join(lines) + b"\n"
    if not members:
        path.write_bytes(text)
        return
    # The first member ends in the middle of a line, as a writer that
    # flushes may leave it. The second ends before a line, where a dry run
    # can split the file.
    middle = text.index(b"\n{", len(text) // 2) + 1
    cuts = [0, len(text) // 4 + 7, middle, len(text)]
    path.write_bytes(
        b"".join(gzip.compress(text[start:stop], mtime=0) for start, stop in zip(cuts, cuts[1:]))
    )


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("members", [False, True], ids=["text", "gzip-members"])
def test_counted_dry_run_on_odd_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, members: bool
) -> None:
    path = tmp_path / ("odd.pfw.gz" if members else "odd.pfw")
    write_odd_trace(path, 60, members)
    # A small budget reads 4 KiB chunks, so events and long lines span chunks.
    plain = ReplayOptions(dry_run=True, memory_budget=64 * 1024)
    capped = ReplayOptions(dry_run=True, memory_budget=64 * 1024, max_events=10**12)
    tallied: List[int] = []
    add = EventTally.add

    def recording_add(self: EventTally, counted: Any) -> None:
        tallied.append(counted[0])
        add(self, counted)

    monkeypatch.setattr(EventTally, "add", recording_add)
    results = {}
    for pure in (False, True):
        monkeypatch.setattr(_decode, "PURE_PYTHON", pure)
        version = "pure" if pure else "compiled"
        results[f"{version} built"] = Replayer([str(path)], capped).run()
        results[f"{version} counted"] = Replayer([str(path)], plain).run()
    monkeypatch.setattr(_decode, "PURE_PYTHON", False)
    results["compiled parts"] = ShardedReplayer([str(path)], plain, 2, min_split_bytes=1).run()

    expected = counts(results["compiled built"])
    for name, summary in results.items():
        assert counts(summary) == expected, name
    assert sum(tallied) > 0
    built = results["compiled built"]
    assert built.events_seen == 60 * 11
    assert built.events_application == 60 * 3
    assert built.bad_lines == 60 * 2
    assert built.lines["joined"] == 60
    assert built.lines["unaccounted"] == 0
    assert [row["role"] for row in results["compiled parts"].processes] == ["main", "worker"]


@pytest.mark.timeout(TIMEOUT)
def test_counted_dry_run_cancels_mid_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress moves and cancel stops a dry run whose decoder counts every event."""
    events = [call("pread64", 1 + n, fd=3, count=1, offset=n, ret=1) for n in range(40_000)]
    trace = write_trace(tmp_path / "big.pfw", events)
    replayer = Replayer([str(trace)], ReplayOptions(dry_run=True, threads=1))
    reached = threading.Event()
    cancelled = threading.Event()
    counted: List[int] = []
    add = EventTally.add

    def pausing_add(self: EventTally, values: Any) -> None:
        add(self, values)
        if self.events >= 5_000 and not reached.is_set():
            counted.append(self.events)
            reached.set()
            cancelled.wait(TIMEOUT)

    monkeypatch.setattr(EventTally, "add", pausing_add)
    outcome: List[ReplaySummary] = []
    runner = threading.Thread(target=lambda: outcome.append(replayer.run()))
    runner.start()
    try:
        assert reached.wait(TIMEOUT)
        progress = replayer.progress()
        replayer.cancel()
    finally:
        cancelled.set()
        runner.join(TIMEOUT)

    assert not runner.is_alive()
    assert progress.phase == "dry-run"
    assert 0 < progress.events_done <= counted[0]
    summary = outcome[0]
    assert summary.interrupted
    # The decode stage stops at its next switch, after one batch at most.
    assert counted[0] <= summary.events_seen <= counted[0] + BATCH_EVENTS + FAST_BATCH
    assert summary.lines["unaccounted"] >= 0


def test_real_replay_processes_match_one(tmp_path: Path) -> None:
    inputs = [str(p) for p in INDEPENDENT]
    # The same root for both runs, since the summary shows paths in it.
    root = tmp_path / "r"
    options = ReplayOptions(root=str(root), max_size=65536, threads=2)

    single = Replayer(inputs, options).run()
    shutil.rmtree(root)
    sharded = ShardedReplayer(inputs, options, 2).run()

    assert counts(sharded) == counts(single)
    assert sharded.exit_code() == 0
    assert sharded.events_replayed == 1284 + 11 + 11 + 0 + 8055 + 0 + 0
    assert sharded.parity == single.parity
    assert sum(sharded.parity.values()) == sharded.events_replayed + sharded.events_failed
    assert sharded.lines == single.lines
    assert sharded.lines["unaccounted"] == 0
    assert sharded.preparation == single.preparation
    assert not sharded.worker_failures


def test_same_pid_in_two_files(tmp_path: Path) -> None:
    """Descriptor tables belong to one file, so a pid shared by two files shares nothing."""
    a = write_trace(tmp_path / "a.pfw", [
        call("open64", 10, fname="/data/a", flags=66, ret=4),
        call("write", 20, fd=4, count=100, ret=100),
        call("close", 30, fd=4, ret=0),
    ])
    b = write_trace(tmp_path / "b.pfw", [
        call("open64", 10, fname="/data/b", flags=66, ret=3),
        call("write", 20, fd=3, count=7, ret=7),
        call("read", 25, fd=4, count=7, ret=7),
        call("close", 30, fd=3, ret=0),
    ])
    inputs = [str(a), str(b)]
    root = tmp_path / "r"
    options = ReplayOptions(root=str(root))

    single = Replayer(inputs, options).run()
    shutil.rmtree(root)
    sharded = ShardedReplayer(inputs, options, 2).run()

    assert counts(sharded) == counts(single)
    assert (root / "data" / "a").stat().st_size == 100
    assert (root / "data" / "b").stat().st_size == 7
    assert sharded.events_replayed == 6
    # Descriptor 4 of the same pid is open in a.pfw, never in b.pfw.
    assert sharded.skipped == {"descriptor opened before the trace or filtered out": 1}
    assert sharded.bytes_read == 0


def test_mismatch_causes_merge_across_processes(tmp_path: Path) -> None:
    a = write_trace(tmp_path / "a.pfw", [
        call("open64", 10, fname="/data/a", flags=66, ret=3),
        call("write", 20, fd=3, count=100, ret=100),
        call("pread", 30, fd=3, count=100, offset=0, ret=10),
        call("lseek", 40, fd=3, offset=5, whence=1, ret=5),
        call("close", 50, fd=3, ret=0),
    ])
    b = write_trace(tmp_path / "b.pfw", [
        call("open64", 5, fname="/data/b", flags=66, ret=3),
        call("write", 25, fd=3, count=10, ret=4),
        call("open64", 35, fname="/data/missing", flags=0, ret=-1),
    ])
    inputs = [str(a), str(b)]
    root = tmp_path / "r"
    options = ReplayOptions(root=str(root))

    single = Replayer(inputs, options).run()
    shutil.rmtree(root)
    sharded = ShardedReplayer(inputs, options, 2).run()

    assert counts(sharded) == counts(single)
    assert sharded.parity == {"match": 5, "mismatch-class": 0, "mismatch-bytes": 3, "no-ret-recorded": 0}
    assert sharded.failures_reproduced == 1
    assert sharded.mismatch_cause_count == 2
    assert [c["path"] for c in sharded.mismatch_causes] == [
        str(root.resolve() / "data" / "b"), str(root.resolve() / "data" / "a")
    ]
    assert [c["mismatches"] for c in sharded.mismatch_causes] == [1, 2]


def test_processes_rows_report_budget_and_rss() -> None:
    budget = 256 * 1024 * 1024
    options = ReplayOptions(dry_run=True, memory_budget=budget)

    cm1 = DIST / "cm1_1_48_20240926"
    inputs = [str(cm1 / "cm1-DEFAULT-3537780-preload.pfw.gz"), str(cm1 / "cm1-DEFAULT-3537781-preload.pfw.gz")]

    summary = ShardedReplayer(inputs, options, 2).run()

    roles = [row["role"] for row in summary.processes]
    # The main process reads one share of the dry run itself.
    assert roles == ["main", "worker"]
    assert [row["files"] for row in summary.processes] == [1, 1]
    assert [row["memory_budget_bytes"] for row in summary.processes] == [budget // 2, budget // 2]
    assert all(row["peak_rss_bytes"] > 0 for row in summary.processes)


def test_processes_rows_without_local_share() -> None:
    budget = 256 * 1024 * 1024
    options = ReplayOptions(dry_run=True, memory_budget=budget)
    cm1 = DIST / "cm1_1_48_20240926"
    inputs = [str(cm1 / "cm1-DEFAULT-3537780-preload.pfw.gz"), str(cm1 / "cm1-DEFAULT-3537781-preload.pfw.gz")]

    summary = ShardedReplayer(inputs, options, 2, local_share=False).run()

    assert [row["role"] for row in summary.processes] == ["main", "worker", "worker"]
    assert [row["files"] for row in summary.processes] == [0, 1, 1]
    assert [row["memory_budget_bytes"] for row in summary.processes] == [0, budget // 2, budget // 2]


def test_one_process_row_in_single_process_replay() -> None:
    summary = Replayer([str(SMALL)], ReplayOptions(dry_run=True)).run()

    assert len(summary.processes) == 1
    row = summary.processes[0]
    assert row["role"] == "main"
    assert row["files"] == 1
    assert row["memory_budget_bytes"] == compute_memory_budget()
    assert row["peak_rss_bytes"] > 0


def test_sharded_replayer_rejects_zero_processes() -> None:
    with pytest.raises(ValueError, match=r"^processes must be an integer >= 1, not 0$"):
        ShardedReplayer([str(SMALL)], ReplayOptions(dry_run=True), 0)


def test_finished_dry_run_reports_its_events() -> None:
    replayer = Replayer([str(SMALL)], ReplayOptions(dry_run=True))

    summary = replayer.run()

    progress = replayer.progress()
    assert progress.phase == "done"
    assert progress.events_done == summary.events_seen == 1012


def test_finished_sharded_dry_run_reports_events() -> None:
    inputs = [str(path) for path in INDEPENDENT[:3]]
    replayer = ShardedReplayer(inputs, ReplayOptions(dry_run=True), 2)

    summary = replayer.run()

    progress = replayer.progress()
    assert progress.phase == "done"
    assert summary.events_seen > 0
    assert progress.events_done == summary.events_seen


def test_finished_sharded_replay_reports_progress(tmp_path: Path) -> None:
    """The done phase reports what a single-process replay reports."""
    inputs = [str(SMALL), str(DATA / "hariharan-devarajan_dftracer" / ".trace-0-of-2.pfw")]
    single = Replayer(inputs, ReplayOptions(root=str(tmp_path / "one")))
    sharded = ShardedReplayer(inputs, ReplayOptions(root=str(tmp_path / "two")), 2)

    single.run()
    sharded.run()

    expected = single.progress()
    progress = sharded.progress()
    assert progress.phase == "done"
    assert expected.events_done > 0
    assert progress.events_done == expected.events_done
    assert progress.bytes_done == expected.bytes_done
    assert progress.events_total == expected.events_total


def test_single_file_runs_in_this_process() -> None:
    replayer = ShardedReplayer([str(SMALL)], ReplayOptions(dry_run=True), 4)

    summary = replayer.run()

    assert summary.processes[0]["role"] == "main"
    assert len(summary.processes) == 1
    assert summary.events_seen == 1012


# -- the command ----------------------------------------------------------------------


def run_cli(*argv: str):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_processes_json_matches_one(tmp_path: Path) -> None:
    runs = {}
    for processes in ("1", "2"):
        target = tmp_path / f"{processes}.json"
        code, out, err = run_cli(
            "replay", str(DIST / "cm1_1_48_20240926"), "--dry-run", "--processes", processes,
            "--json", str(target),
        )
        assert code == 0
        assert err == ""
        data = json.loads(target.read_text())
        runs[processes] = (out, data)

    single_out, single = runs["1"]
    sharded_out, sharded = runs["2"]
    # In a dry run the main process reads one share itself.
    assert [row["role"] for row in sharded.pop("processes")] == ["main", "worker"]
    assert [row["role"] for row in single.pop("processes")] == ["main"]
    del single["wall_seconds"], sharded["wall_seconds"]
    del single["timing"]["elapsed_s"], sharded["timing"]["elapsed_s"]
    assert sharded == single
    # The printed report differs only in the replay time.
    expected = [line for line in single_out.splitlines() if "time     traced" not in line]
    assert [line for line in sharded_out.splitlines() if "time     traced" not in line] == expected


def test_cli_rejects_zero_processes() -> None:
    code, out, err = run_cli("replay", str(SMALL), "--dry-run", "--processes", "0")

    assert code == 1
    assert err == (
        "greenpipe replay: Argument --processes: 0 is not allowed; give 1 or more. "
        "Run 'greenpipe replay --help' for the options.\n"
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigint_stops_all_workers(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group; the replay stops and leaves no process."""
    inputs = []
    for name in ("a", "b"):
        copy = tmp_path / f"{name}.pfw.gz"
        shutil.copyfile(NEWEST, copy)
        inputs.append(str(copy))
    root = tmp_path / "r"
    # Original timing stretches each file over its traced 180 s, so the
    # signal arrives while both workers replay.
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "greenpipe", "replay", *inputs, "--root", str(root),
            "--timing", "original", "--processes", "2", "--json", "-",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        # The replay round has started once the preparation step made files.
        while len(list(root.glob("*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()

    assert proc.returncode == 130
    assert "(interrupted)" in out
    assert "Traceback" not in err
    data = json.loads(out[out.index("\n{") + 1:])
    assert data["interrupted"] is True
    assert [row["role"] for row in data["processes"]] == ["main", "worker", "worker"]
    assert not _group_alive(proc.pid)


def test_worker_crash_names_files(tmp_path: Path) -> None:
    options = ReplayOptions(root=str(tmp_path / "r"), timing="original")
    replayer = ShardedReplayer([str(NEWEST), str(SMALL)], options, 2)
    outcome: List[Any] = []
    runner = threading.Thread(target=lambda: outcome.append(replayer.run()))
    runner.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        # Progress messages from the workers show the replay round running.
        while time.monotonic() < deadline:
            progress = replayer.progress()
            if progress.phase == "replay" and progress.events_done > 0:
                break
            time.sleep(0.01)
        victims = [pid for pid, files in replayer.worker_processes() if files == (str(NEWEST),)]
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGKILL)
        runner.join(TIMEOUT)
    finally:
        if runner.is_alive():
            replayer.cancel()
            runner.join(TIMEOUT)

    summary = outcome[0]
    assert summary.worker_failures == (
        f"{NEWEST}: the worker process ended with signal SIGKILL",
    )
    assert summary.exit_code() == 1
    assert [row["path"] for row in summary.files] == [str(NEWEST), str(SMALL)]
    assert summary.files[1]["replayed"] == 1012
    assert summary.input_problems == (
        f"{NEWEST}: not counted because its worker process failed",
    )
    assert replayer.worker_processes() == []


def test_cancel_merges_partial_results(tmp_path: Path) -> None:
    copies = []
    for name in ("a", "b"):
        copy = tmp_path / f"{name}.pfw.gz"
        shutil.copyfile(NEWEST, copy)
        copies.append(str(copy))
    options = ReplayOptions(root=str(tmp_path / "r"), timing="original")
    replayer = ShardedReplayer(copies, options, 2)
    outcome: List[Any] = []
    runner = threading.Thread(target=lambda: outcome.append(replayer.run()))
    runner.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            progress = replayer.progress()
            if progress.phase == "replay" and progress.events_done > 0:
                break
            time.sleep(0.01)
        replayer.cancel()
        runner.join(TIMEOUT)
    finally:
        if runner.is_alive():
            replayer.cancel()
            runner.join(TIMEOUT)

    summary = outcome[0]
    assert summary.interrupted
    assert summary.exit_code() == 130
    assert not summary.worker_failures
    assert [row["path"] for row in summary.files] == copies
    # Both traces span 180 s with original timing, so each stopped early.
    assert 0 < summary.events_replayed < 2 * 1284
    assert replayer.worker_processes() == []


@pytest.mark.timeout(2 * TIMEOUT)
def test_abort_with_idle_local_share_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error after the round stops every worker, even the idle local share.

    A second Ctrl-C raises KeyboardInterrupt in the command. The thread
    that reads the main process's share may then wait for its next shard,
    and only the closing of its socket wakes it.
    """
    from greenpipe.replay import _processes

    def abort(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(_processes, "merge_file_parts", abort)
    cm1 = DIST / "cm1_1_48_20240926"
    inputs = [str(cm1 / "cm1-DEFAULT-3537780-preload.pfw.gz"), str(cm1 / "cm1-DEFAULT-3537781-preload.pfw.gz")]
    replayer = ShardedReplayer(inputs, ReplayOptions(dry_run=True), 2)
    outcome: List[BaseException] = []

    def run() -> None:
        try:
            replayer.run()
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(TIMEOUT)

    assert not runner.is_alive(), "run() did not return after the error"
    assert len(outcome) == 1
    assert isinstance(outcome[0], KeyboardInterrupt)
    assert replayer.worker_processes() == []
    local = [t for t in threading.enumerate() if t.name == "greenpipe-local-shard"]
    assert local == []


def test_worker_reports_shard_error(tmp_path: Path) -> None:
    """A shard that raises sends its traceback as the last message."""
    import socket
    from multiprocessing.connection import Connection

    from greenpipe.replay._processes import _run_one

    shard = ReplayShard("replay", ((0, str(SMALL)),), ReplayOptions(root=str(tmp_path / "missing")))
    parent_end, worker_end = socket.socketpair()
    cancel_read, cancel_write = os.pipe()
    parent = Connection(parent_end.detach())
    worker = Connection(worker_end.detach())
    try:
        _run_one(worker, shard, cancel_read)
        messages = []
        while parent.poll(0):
            messages.append(parent.recv())
    finally:
        parent.close()
        worker.close()
        os.close(cancel_read)
        os.close(cancel_write)

    assert messages[-2][0] == "progress"
    kind, text = messages[-1]
    assert kind == "error"
    assert "FileNotFoundError" in text.strip().splitlines()[-1]


# -- workers forked by the command ------------------------------------------------


def run_command(*argv: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(
        [sys.executable, "-m", "greenpipe", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=TIMEOUT,
    )


def test_command_forks_dry_run_workers_with_equal_counts(tmp_path: Path) -> None:
    target = tmp_path / "forked.json"
    forked = run_command(
        "replay", str(DIST / "cm1_1_48_20240926"), "--dry-run", "--processes", "2",
        "--json", str(target), "-vv",
    )
    single = Replayer([str(DIST / "cm1_1_48_20240926")], ReplayOptions(dry_run=True)).run()

    assert forked.returncode == 0, forked.stderr
    assert "forked 1 worker process(es)" in forked.stderr
    data = json.loads(target.read_text())
    assert [row["role"] for row in data["processes"]] == ["main", "worker"]
    assert all(row["files"] == 1 for row in data["processes"])
    assert json_counts(data) == json.loads(json.dumps(counts(single)))


def test_command_forks_replay_workers_with_equal_counts(tmp_path: Path) -> None:
    inputs = [str(path) for path in INDEPENDENT[1:4]]
    target = tmp_path / "forked.json"
    # The same root for both runs, since the summary shows paths in it.
    root = tmp_path / "r"
    single = Replayer(inputs, ReplayOptions(root=str(root), max_size=65536)).run()
    shutil.rmtree(root)
    forked = run_command(
        "replay", *inputs, "--root", str(root), "--max-size", "65536", "--processes", "2",
        "--json", str(target), "-vv",
    )

    assert forked.returncode == single.exit_code(), forked.stderr
    assert "forked 2 worker process(es)" in forked.stderr
    data = json.loads(target.read_text())
    assert [row["role"] for row in data["processes"]] == ["main", "worker", "worker"]
    assert json_counts(data) == json.loads(json.dumps(counts(single)))


def test_workers_start_fresh_while_another_thread_runs(tmp_path: Path) -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert not can_fork()
        replayer = ShardedReplayer(
            [str(NEWEST), str(SMALL)], ReplayOptions(dry_run=True), 2, local_share=False, fork=True
        )
        replayer.start()
        started = [type(worker.process) for worker in replayer._workers]
        summary = replayer.run()
    finally:
        release.set()
        other.join(TIMEOUT)

    assert started == [subprocess.Popen, subprocess.Popen]
    assert summary.events_seen == Replayer(
        [str(NEWEST), str(SMALL)], ReplayOptions(dry_run=True)
    ).run().events_seen


def test_can_fork_in_a_lone_thread() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", "from greenpipe.replay._processes import can_fork; print(can_fork())"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )

    assert completed.stdout.strip() == str(sys.platform.startswith("linux"))


#: Patches with gevent before or after importing greenpipe, as argv[1]
#: selects, then runs the command with forked workers allowed.
_GEVENT_COMMAND = """
import sys
patch_first = sys.argv[1] == "before"
if patch_first:
    from gevent import monkey
    monkey.patch_all()
from greenpipe.cli import main
if not patch_first:
    from gevent import monkey
    monkey.patch_all()
sys.exit(main(sys.argv[2:], fork_workers=True))
"""


@pytest.mark.timeout(2 * TIMEOUT)
@pytest.mark.parametrize("patch", ["before", "after"])
def test_gevent_dry_run_matches_one_process(tmp_path: Path, patch: str) -> None:
    """gevent makes sockets non-blocking and threads greenlets, and no worker may fail."""
    pytest.importorskip("gevent")
    inputs = [str(NEWEST), str(SMALL)]
    target = tmp_path / "summary.json"
    completed = subprocess.run(
        [sys.executable, "-c", _GEVENT_COMMAND, patch, "replay", *inputs, "--dry-run",
         "--processes", "2", "--quiet", "--json", str(target)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=TIMEOUT,
    )
    single = Replayer(inputs, ReplayOptions(dry_run=True)).run()

    assert completed.returncode == 0, completed.stderr
    data = json.loads(target.read_text())
    assert data["worker_failures"] == []
    assert json_counts(data) == json.loads(json.dumps(counts(single)))


@pytest.mark.timeout(2 * TIMEOUT)
@pytest.mark.parametrize("patch", ["before", "after"])
def test_gevent_replay_matches_one_process(tmp_path: Path, patch: str) -> None:
    pytest.importorskip("gevent")
    inputs = [str(path) for path in INDEPENDENT[1:4]]
    target = tmp_path / "summary.json"
    root = tmp_path / "r"
    single = Replayer(inputs, ReplayOptions(root=str(root), max_size=65536)).run()
    shutil.rmtree(root)
    completed = subprocess.run(
        [sys.executable, "-c", _GEVENT_COMMAND, patch, "replay", *inputs, "--root", str(root),
         "--max-size", "65536", "--processes", "2", "--quiet", "--json", str(target)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=TIMEOUT,
    )

    assert completed.returncode == single.exit_code(), completed.stderr
    data = json.loads(target.read_text())
    assert data["worker_failures"] == []
    assert json_counts(data) == json.loads(json.dumps(counts(single)))


def test_gevent_patched_process_never_forks() -> None:
    """A forked worker's shard watcher would be a greenlet that never runs."""
    pytest.importorskip("gevent")
    script = (
        "from greenpipe.replay._processes import can_fork\n"
        "print(can_fork())\n"
        "from gevent import monkey\n"
        "monkey.patch_all()\n"
        "print(can_fork())\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == [str(sys.platform.startswith("linux")), "False"]


#: Closes standard input and output, then runs the command with forked
#: workers when argv[1] is "fork" and with fresh interpreters otherwise.
_CLOSED_STREAMS_COMMAND = """
import os, sys
os.close(0)
os.close(1)
from greenpipe.cli import main
sys.exit(main(sys.argv[2:], fork_workers=sys.argv[1] == "fork"))
"""


@pytest.mark.parametrize("start", ["fork", "fresh"])
def test_closed_standard_streams_dry_run(tmp_path: Path, start: str) -> None:
    """The cancel pipe and the sockets must not take the numbers of closed streams."""
    inputs = [str(NEWEST), str(SMALL), str(INDEPENDENT[2])]
    target = tmp_path / "summary.json"
    completed = subprocess.run(
        [sys.executable, "-c", _CLOSED_STREAMS_COMMAND, start, "replay", *inputs, "--dry-run",
         "--processes", "3", "--quiet", "--json", str(target)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        timeout=TIMEOUT,
    )
    single = Replayer(inputs, ReplayOptions(dry_run=True)).run()

    assert completed.returncode == 0, completed.stderr
    data = json.loads(target.read_text())
    assert data["interrupted"] is False
    assert data["worker_failures"] == []
    assert json_counts(data) == json.loads(json.dumps(counts(single)))


@pytest.mark.parametrize("start", ["fork", "fresh"])
def test_closed_standard_streams_replay(tmp_path: Path, start: str) -> None:
    inputs = [str(path) for path in INDEPENDENT[1:4]]
    target = tmp_path / "summary.json"
    root = tmp_path / "r"
    single = Replayer(inputs, ReplayOptions(root=str(root), max_size=65536)).run()
    shutil.rmtree(root)
    completed = subprocess.run(
        [sys.executable, "-c", _CLOSED_STREAMS_COMMAND, start, "replay", *inputs,
         "--root", str(root), "--max-size", "65536", "--processes", "2", "--quiet",
         "--json", str(target)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        timeout=TIMEOUT,
    )

    assert completed.returncode == single.exit_code(), completed.stderr
    data = json.loads(target.read_text())
    assert data["interrupted"] is False
    assert data["worker_failures"] == []
    assert json_counts(data) == json.loads(json.dumps(counts(single)))


#: Writes a line to a buffered log file without flushing it, then runs
#: the command with that file as its standard error and forked workers.
_BUFFERED_STDERR_COMMAND = """
import sys
from greenpipe.cli import main
with open(sys.argv[1], "w") as log:
    log.write("program header\\n")
    code = main(sys.argv[2:], stderr=log, fork_workers=True)
sys.exit(code)
"""


def test_forked_workers_write_no_parent_buffer(tmp_path: Path) -> None:
    """A worker's log records must not flush text the parent had buffered."""
    log = tmp_path / "err.log"
    completed = subprocess.run(
        [sys.executable, "-c", _BUFFERED_STDERR_COMMAND, str(log), "replay", str(NEWEST),
         str(SMALL), str(INDEPENDENT[2]), "--dry-run", "--processes", "3", "--quiet", "-vv"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=TIMEOUT,
    )

    assert completed.returncode == 0, completed.stderr
    text = log.read_text()
    assert "forked 2 worker process(es)" in text
    assert text.count("replay started with") == 3
    assert text.count("program header") == 1


def test_run_after_failed_start_raises_again(tmp_path: Path) -> None:
    replayer = ShardedReplayer([str(tmp_path)], ReplayOptions(dry_run=True), 2, fork=True)

    with pytest.raises(ReplayError, match="No trace files to replay"):
        replayer.start()
    with pytest.raises(ReplayError, match="No trace files to replay"):
        replayer.run()
