"""Ordering between streams: ``--order stream|resource|global``.

The stream-mode violations are made deterministic by the schedule, not
by time: one worker thread, a timeslice of 0 (so every stream yields
after each call), and a long prefix of calls in the stream that must
run first. The delayed stream then reaches its call hundreds of turns
after the other stream has finished.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from greenpipe.cli import main
from greenpipe.replay import ReplayOptions, Replayer, ReplaySummary
from greenpipe.replay._order import OrderGates, ResourceOrder
from greenpipe.replay._processes import ShardedReplayer
from greenpipe.trace import Event

from .conftest import call, write_trace

REPO = Path(__file__).resolve().parents[2]
SHARED_THREADS = REPO / "examples" / "traces" / "trace-30752.pfw"
#: Calls in front of the stream that a test delays.
PREFIX = 400
#: Executor settings that make the interleaving of streams fixed.
FIXED_SCHEDULE = {"timeslice": 0}

O_RDONLY, O_WRONLY_CREAT = os.O_RDONLY, os.O_WRONLY | os.O_CREAT

pytestmark = pytest.mark.timeout(60)


def prefix(pid: int, count: int = PREFIX, tid: Optional[int] = None) -> List[Dict[str, Any]]:
    """Return ``count`` probes of paths that no other call uses, at ts 1..count."""
    return [
        call("stat", ts, pid=pid, tid=tid or pid, path=f"/elsewhere/{pid}/{ts}")
        for ts in range(1, count + 1)
    ]


def writer(pid: int, path: str = "/data/shared.bin", start: int = 1000) -> List[Dict[str, Any]]:
    return [
        call("open64", start, pid=pid, tid=pid, path=path, flags=O_WRONLY_CREAT, mode=0o644, ret=3),
        call("write", start + 10, pid=pid, tid=pid, path=path, fd=3, count=4096, ret=4096),
        call("close", start + 20, pid=pid, tid=pid, path=path, fd=3, ret=0),
    ]


def reader(pid: int, path: str = "/data/shared.bin", start: int = 2000) -> List[Dict[str, Any]]:
    return [
        call("open64", start, pid=pid, tid=pid, path=path, flags=O_RDONLY, ret=4),
        call("read", start + 10, pid=pid, tid=pid, path=path, fd=4, count=4096, ret=4096),
        call("close", start + 20, pid=pid, tid=pid, path=path, fd=4, ret=0),
    ]


def run(
    traces: List[Path], root: Path, order: str, fixed: bool = True, **options: Any
) -> ReplaySummary:
    settings = ReplayOptions(root=str(root), order=order, threads=1 if fixed else None, **options)
    replayer = Replayer([str(t) for t in traces], settings, executor_options=FIXED_SCHEDULE if fixed else None)
    return replayer.run()


def violations(summary: ReplaySummary) -> Dict[str, int]:
    return dict(summary.order["violations"])


# -- one process writes, another reads ---------------------------------------------


@pytest.fixture
def write_then_read(tmp_path: Path) -> Path:
    """Process 1 writes a new file after a long prefix; process 2 reads it later.

    In file order the write comes before the read, so the preparation
    step creates nothing: the file exists only once the writer made it.
    """
    return write_trace(tmp_path / "trace.pfw", prefix(1) + writer(1) + reader(2))


def test_resource_write_then_read_is_clean(write_then_read: Path, tmp_path: Path) -> None:
    summary = run([write_then_read], tmp_path / "root", "resource", fixed=False)

    assert summary.events_failed == 0
    assert summary.short_reads == 0
    assert summary.failed == {}
    assert violations(summary) == {}
    assert summary.order["mode"] == "resource"
    assert summary.missing_by_order == 0
    assert summary.bytes_read == 4096


def test_resource_write_then_read_fixed_schedule(write_then_read: Path, tmp_path: Path) -> None:
    summary = run([write_then_read], tmp_path / "root", "resource")

    assert summary.events_failed == 0
    assert summary.short_reads == 0
    assert violations(summary) == {}
    assert summary.order["waits"] >= 1


def test_stream_write_then_read_violates(write_then_read: Path, tmp_path: Path) -> None:
    summary = run([write_then_read], tmp_path / "root", "stream")

    assert summary.failed == {"ENOENT": 2}
    assert violations(summary) == {"before-create": 2}
    assert summary.missing_by_order == 2
    assert summary.order["waits"] == 0
    examples = summary.order["examples"]
    assert [row["call"] for row in examples] == ["open64", "read"]
    assert [row["ts"] for row in examples] == [2000, 2010]
    assert {row["reason"] for row in examples} == {"before-create"}
    assert {row["file"] for row in examples} == {str(write_then_read)}
    assert examples[0]["path"].endswith("/data/shared.bin")


def test_stream_violation_repeats(write_then_read: Path, tmp_path: Path) -> None:
    first = run([write_then_read], tmp_path / "one", "stream")
    second = run([write_then_read], tmp_path / "two", "stream")

    assert first.order["violations"] == second.order["violations"]
    assert first.failed == second.failed


def test_stream_short_read_caused_by_ordering(tmp_path: Path) -> None:
    """The file exists before the trace (it is opened without O_CREAT) but is empty."""
    trace = write_trace(
        tmp_path / "trace.pfw",
        prefix(1)
        + [
            call("open64", 1000, pid=1, tid=1, path="/d/f", flags=os.O_WRONLY, ret=3),
            call("pwrite64", 1010, pid=1, tid=1, path="/d/f", fd=3, count=16384, offset=0, ret=16384),
            call("open64", 2000, pid=2, tid=2, path="/d/f", flags=O_RDONLY, ret=4),
            call("pread64", 2010, pid=2, tid=2, path="/d/f", fd=4, count=4096, offset=8192, ret=4096),
        ],
    )

    resource = run([trace], tmp_path / "resource", "resource")
    stream = run([trace], tmp_path / "stream", "stream")

    assert resource.short_reads == 0
    assert violations(resource) == {}
    assert stream.short_reads == 1
    assert violations(stream) == {"read-before-write": 1}
    assert stream.short_reads_by_order == 1


def test_text_summary_lists_violations(write_then_read: Path, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["replay", str(write_then_read), "--root", str(tmp_path / "root"), "--order", "resource"],
        stdout=out, stderr=err,
    )
    stream_summary = run([write_then_read], tmp_path / "stream", "stream")
    from greenpipe.cli import format_summary

    text = format_summary(stream_summary)

    assert code == 0
    assert "order    resource" in out.getvalue()
    assert "no order violations" in out.getvalue()
    assert "order violations 2 (caused by ordering: missing files 2)" in text
    assert "before-create" in text


def test_json_has_order_shape(write_then_read: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    code = main(
        ["replay", str(write_then_read), "--root", str(tmp_path / "root"), "--order", "global",
         "--json", "-", "--quiet"],
        stdout=out, stderr=io.StringIO(),
    )
    data = json.loads(out.getvalue())

    assert code == 0
    assert set(data["order"]) == {"mode", "waits", "violations", "examples"}
    assert data["order"]["mode"] == "global"
    assert data["order"]["violations"] == {}


# -- each kind of dependency ---------------------------------------------------------


def test_rename_keeps_trace_order(tmp_path: Path) -> None:
    trace = write_trace(
        tmp_path / "trace.pfw",
        prefix(1)
        + writer(1, "/out/final.tmp")
        + [call("rename", 1100, pid=1, tid=1, path="/out/final.tmp", newpath="/out/final", ret=0)]
        + reader(2, "/out/final", start=3000),
    )

    resource = run([trace], tmp_path / "resource", "resource")
    stream = run([trace], tmp_path / "stream", "stream")

    assert resource.events_failed == 0
    assert violations(resource) == {}
    assert resource.bytes_read == 4096
    # The preparation step gives the renamed path the data the reader
    # needs, so in stream mode the reader finds a file, just the wrong one.
    assert violations(stream) == {"before-rename": 3}


def test_truncate_waits_for_earlier_read(tmp_path: Path) -> None:
    """A read traced before a truncation must see the data, so it runs first."""
    trace = write_trace(
        tmp_path / "trace.pfw",
        [call("truncate", 3000, pid=1, tid=1, path="/t/f", length=0, ret=0)]
        + prefix(2)
        + [
            call("open64", 2000, pid=2, tid=2, path="/t/f", flags=O_RDONLY, ret=4),
            call("pread64", 2010, pid=2, tid=2, path="/t/f", fd=4, count=4096, offset=0, ret=4096),
        ],
    )

    resource = run([trace], tmp_path / "resource", "resource")
    stream = run([trace], tmp_path / "stream", "stream")

    assert resource.short_reads == 0
    assert violations(resource) == {}
    assert stream.short_reads == 1
    assert violations(stream) == {"after-truncate": 2}
    assert stream.short_reads_by_order == 1


def test_removal_waits_for_earlier_io(tmp_path: Path) -> None:
    trace = write_trace(
        tmp_path / "trace.pfw",
        [call("unlink", 3000, pid=1, tid=1, path="/u/f", ret=0)]
        + prefix(2)
        + [
            call("open64", 2000, pid=2, tid=2, path="/u/f", flags=O_RDONLY, ret=4),
            call("pread64", 2010, pid=2, tid=2, path="/u/f", fd=4, count=100, offset=0, ret=100),
        ],
    )

    resource = run([trace], tmp_path / "resource", "resource")
    stream = run([trace], tmp_path / "stream", "stream")

    assert resource.events_failed == 0
    assert violations(resource) == {}
    assert stream.failed == {"ENOENT": 2}
    assert violations(stream) == {"after-remove": 2}
    assert stream.missing_by_order == 2


def test_io_waits_for_open_in_other_thread(tmp_path: Path) -> None:
    """A thread reads a descriptor (no path recorded) that another thread opens."""
    trace = write_trace(
        tmp_path / "trace.pfw",
        prefix(1, tid=1)
        + [call("open64", 1000, pid=1, tid=1, path="/o/f", flags=O_RDONLY, ret=7)]
        + [call("read", 2000, pid=1, tid=2, fd=7, count=10, ret=10)],
    )

    resource = run([trace], tmp_path / "resource", "resource")
    stream = run([trace], tmp_path / "stream", "stream")

    assert resource.events_skipped == 0
    assert resource.bytes_read == 10
    assert stream.skipped == {"descriptor opened before the trace or filtered out": 1}


def test_reused_descriptor_waits_for_close(tmp_path: Path) -> None:
    """A descriptor number comes back only after its close, in another thread too."""
    trace = write_trace(
        tmp_path / "trace.pfw",
        [
            call("open64", 2000, pid=1, tid=2, path="/r/b", flags=O_RDONLY, ret=5),
            call("read", 2010, pid=1, tid=2, fd=5, count=10, ret=10),
            call("close", 2020, pid=1, tid=2, fd=5, ret=0),
        ]
        + prefix(1, tid=1)
        + [
            call("open64", 1000, pid=1, tid=1, path="/r/a", flags=O_RDONLY, ret=5),
            call("read", 1010, pid=1, tid=1, fd=5, count=20, ret=20),
            call("close", 1020, pid=1, tid=1, fd=5, ret=0),
        ],
    )

    summary = run([trace], tmp_path / "root", "resource")

    assert summary.events_skipped == 0
    assert summary.events_failed == 0
    assert summary.bytes_read == 30
    assert summary.parity["mismatch-bytes"] == 0


# -- global order ---------------------------------------------------------------------


def test_global_orders_different_paths(tmp_path: Path) -> None:
    """A folder made by one process before another creates a file inside it.

    The two calls use different paths, so only ``global`` orders them.
    """
    trace = write_trace(
        tmp_path / "trace.pfw",
        [call("open64", 2000, pid=2, tid=2, path="/g/dir/f", flags=O_WRONLY_CREAT, mode=0o644, ret=3)]
        + prefix(1)
        + [call("mkdir", 1000, pid=1, tid=1, path="/g/dir", mode=0o755, ret=0)],
    )

    ordered = run([trace], tmp_path / "global", "global")
    stream = run([trace], tmp_path / "stream", "stream")

    assert ordered.events_failed == 0
    assert ordered.order["waits"] >= 1
    # The open ran first and made the missing folder, so mkdir found it.
    assert stream.failed == {"EEXIST": 1}


def test_global_runs_in_start_order_across_files(tmp_path: Path) -> None:
    """Calls of two files alternate in start order; each mkdir needs the one before."""
    first = write_trace(
        tmp_path / "a.pfw",
        [call("mkdir", 10, pid=1, tid=1, path="/chain/1", mode=0o755, ret=0),
         call("mkdir", 30, pid=1, tid=1, path="/chain/1/2/3", mode=0o755, ret=0)],
    )
    second = write_trace(
        tmp_path / "b.pfw",
        [call("mkdir", 20, pid=1, tid=1, path="/chain/1/2", mode=0o755, ret=0),
         call("mkdir", 40, pid=1, tid=1, path="/chain/1/2/3/4", mode=0o755, ret=0)],
    )

    summary = run([first, second], tmp_path / "root", "global")

    assert summary.events_failed == 0
    assert (tmp_path / "root" / "chain" / "1" / "2" / "3" / "4").is_dir()


# -- across trace files and processes --------------------------------------------------


def test_resource_orders_across_files(tmp_path: Path) -> None:
    """The reading rank alone reads a file it never writes, so the file is prepared."""
    reading = write_trace(tmp_path / "rank1.pfw", reader(1))
    writing = write_trace(tmp_path / "rank0.pfw", prefix(1) + writer(1))

    resource = run([reading, writing], tmp_path / "resource", "resource")
    stream = run([reading, writing], tmp_path / "stream", "stream")

    assert resource.events_failed == 0
    assert resource.bytes_read == 4096
    assert violations(resource) == {}
    assert violations(stream) == {"before-create": 3}


def _counts(summary: ReplaySummary) -> Dict[str, Any]:
    root = summary.root
    assert root is not None
    data = json.loads(json.dumps(summary.to_dict()).replace(root, "ROOT"))
    for key in ("wall_seconds", "processes", "root"):
        del data[key]
    data["latency"] = {name: row["count"] for name, row in data["latency"].items()}
    # How many calls had to wait, and how long the run took, depend on timing.
    del data["order"]["waits"]
    del data["timing"]["elapsed_s"]
    return data


@pytest.mark.parametrize("order", ["resource", "global"])
def test_processes_match_one_process(
    tmp_path: Path, order: str, caplog: pytest.LogCaptureFixture
) -> None:
    traces = [
        write_trace(tmp_path / "r1.pfw", reader(1)),
        write_trace(tmp_path / "r0.pfw", prefix(1) + writer(1)),
        write_trace(tmp_path / "x.pfw", writer(1, "/other/x") + reader(2, "/other/x")),
        write_trace(tmp_path / "y.pfw", writer(1, "/other/y") + reader(2, "/other/y")),
    ]
    options = ReplayOptions(root=str(tmp_path / "one"), order=order)
    one = Replayer([str(t) for t in traces], options).run()
    with caplog.at_level(logging.INFO, logger="greenpipe.replay"):
        options = ReplayOptions(root=str(tmp_path / "two"), order=order)
        two = ShardedReplayer([str(t) for t in traces], options, 2).run()

    assert _counts(two) == _counts(one)
    assert violations(two) == {}
    assert two.events_failed == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "greenpipe.replay._processes"]
    if order == "global":
        assert any("one worker process replays all 4 trace files" in m for m in messages)
    else:
        assert any("2 worker processes replay groups" in m for m in messages)


def test_groups_keep_files_sharing_a_path(tmp_path: Path) -> None:
    from greenpipe.replay._shards import partition_by_paths

    traces = [
        write_trace(tmp_path / "r1.pfw", reader(1)),
        write_trace(tmp_path / "r0.pfw", writer(1)),
        write_trace(tmp_path / "x.pfw", writer(1, "/other/x")),
    ]
    replayer = Replayer([str(t) for t in traces], ReplayOptions(dry_run=True))
    plan = replayer.plan_pass(list(enumerate(str(t) for t in traces)))

    groups = partition_by_paths([str(t) for t in traces], 3, plan)

    assert sorted(tuple(index for index, _ in group) for group in groups) == [(0, 1), (2,)]


def plan_of(traces: List[Path]) -> Any:
    replayer = Replayer([str(t) for t in traces], ReplayOptions(dry_run=True))
    return replayer.plan_pass(list(enumerate(str(t) for t in traces)))


def test_groups_ignore_paths_only_read(tmp_path: Path) -> None:
    # Three ranks read one input; one of them also writes a file that a
    # fourth rank reads. Only the writer and that reader are joined.
    traces = [
        write_trace(tmp_path / "a.pfw", reader(1, "/data/input")),
        write_trace(tmp_path / "b.pfw", reader(2, "/data/input") + writer(2, "/out/x", 3000)),
        write_trace(tmp_path / "c.pfw", reader(3, "/data/input")),
        write_trace(tmp_path / "d.pfw", reader(4, "/out/x", 4000)),
    ]

    groups = plan_of(traces).file_groups()

    names = sorted(sorted(Path(path).name for path in group) for group in groups)
    assert names == [["a.pfw"], ["b.pfw", "d.pfw"], ["c.pfw"]]


def test_groups_join_readers_seen_before_the_writer(tmp_path: Path) -> None:
    readers = [write_trace(tmp_path / f"r{n}.pfw", reader(n)) for n in range(3)]
    writing = write_trace(tmp_path / "w.pfw", writer(9))
    first = plan_of(readers + [writing])
    # The same files planned apart and merged the other way round.
    merged = plan_of([writing])
    for trace in reversed(readers):
        merged.update(plan_of([trace]))

    for plan in (first, merged):
        groups = plan.file_groups()
        assert len(groups) == 1
        assert sorted(Path(path).name for path in groups[0]) == ["r0.pfw", "r1.pfw", "r2.pfw", "w.pfw"]


def test_resource_replays_independent_files_like_stream(tmp_path: Path) -> None:
    # Files that share only read paths replay group by group, with the
    # same counts as independent streams.
    traces = [
        write_trace(tmp_path / f"rank{n}.pfw", reader(n, "/data/input") + writer(n, f"/out/{n}", 3000))
        for n in range(12)
    ]
    resource = run(traces, tmp_path / "resource", "resource", fixed=False)
    stream = run(traces, tmp_path / "stream", "stream", fixed=False)

    assert resource.events_replayed == stream.events_replayed == 12 * 6
    assert resource.events_failed == 0
    assert violations(resource) == {}
    assert sorted(p.name for p in (tmp_path / "resource" / "out").iterdir()) == sorted(
        str(n) for n in range(12)
    )


# -- dependencies that never come, cancellation ----------------------------------------


def test_filtered_writer_does_not_block(write_then_read: Path, tmp_path: Path) -> None:
    summary = run([write_then_read], tmp_path / "root", "resource", exclude_pids=frozenset({1}))

    assert summary.events_filtered == PREFIX + 3
    assert summary.calls["read"] == 1
    assert summary.bytes_read == 4096


def test_sampled_out_write_does_not_block(write_then_read: Path, tmp_path: Path) -> None:
    summary = run([write_then_read], tmp_path / "root", "resource", sample=0.0)

    assert summary.calls.get("write", 0) == 0
    assert summary.calls.get("read", 0) == 0
    assert summary.calls["open64"] == 2


def test_skipped_write_releases_reader(write_then_read: Path, tmp_path: Path) -> None:
    summary = run([write_then_read], tmp_path / "root", "resource", max_bytes=0)

    assert summary.skipped["--max-bytes reached"] == 2
    assert summary.events_failed == 0
    assert violations(summary) == {}


def test_cancel_while_waiting(tmp_path: Path) -> None:
    """A reader parked on a write due 100 s later stops when the replay is cancelled."""
    writing = write_trace(
        tmp_path / "rank0.pfw",
        [call("stat", 0, pid=1, tid=1, path="/elsewhere")] + writer(1, start=100_000_000),
    )
    reading = write_trace(tmp_path / "rank1.pfw", reader(2, start=100_000_100))
    options = ReplayOptions(root=str(tmp_path / "root"), order="resource", timing="original")
    replayer = Replayer([str(writing), str(reading)], options)
    result: List[ReplaySummary] = []
    thread = threading.Thread(target=lambda: result.append(replayer.run()))

    thread.start()
    deadline = time.monotonic() + 30
    while replayer.progress().phase != "replay" or replayer.progress().events_done < 1:
        assert time.monotonic() < deadline, "the replay did not start"
        time.sleep(0.01)
    replayer.cancel()
    thread.join(30)

    assert not thread.is_alive()
    assert result[0].interrupted
    assert result[0].calls.get("read", 0) == 0
    assert result[0].calls.get("write", 0) == 0


def test_dependency_tables_stay_bounded() -> None:
    gates = OrderGates()
    order = ResourceOrder(gates, lambda event: None)

    for number in range(50_000):
        event = Event("read", "POSIX", 1, 1, number, 1, "X", {"count": 1, "fd": 3}, f"/many/{number}")
        step = order.step(0, event, "read")
        assert step is not None
        gates.release(step)

    assert order.tracked_paths <= 4097


def _data_call(name: str, tid: int, ts: int) -> Event:
    return Event(name, "POSIX", 1, tid, ts, 1, "X", {"count": 4096, "fd": 3}, "/data/f")


def test_stream_never_waits_for_its_own_calls() -> None:
    order = ResourceOrder(OrderGates(), lambda event: None)

    steps = []
    for number in range(600):
        name = "write" if number % 2 else "read"
        steps.append(order.step(0, _data_call(name, 1, number), name))

    assert all(step is not None and step.waits == () for step in steps)


def _random_calls(seed: int, count: int) -> List[Any]:
    """Return ``(op, event)`` pairs mixing data and namespace calls on a few paths."""
    rng = random.Random(seed)
    paths = ["/d/a", "/d/b", "/d/c"]
    ops = ["read", "write", "pread", "pwrite", "read", "write", "open", "close", "stat", "unlink", "rename"]
    result = []
    for number in range(count):
        op = rng.choice(ops)
        pid, tid = rng.choice([(1, 1), (1, 2), (2, 7)])
        path: Optional[str] = rng.choice(paths)
        args: Dict[str, Any] = {"fd": rng.randrange(3, 6)}
        if op == "open":
            args = {"ret": args["fd"], "flags": rng.choice([0, os.O_CREAT | os.O_WRONLY])}
        elif op == "rename":
            args["to"] = rng.choice(paths)
        elif op in ("read", "write") and rng.random() < 0.2:
            path = None  # known through the descriptor only
        result.append((op, Event(op, "POSIX", pid, tid, number, 1, "X", args, path)))
    return result


@pytest.mark.parametrize("seed", range(8))
def test_transfer_short_path_matches_general_path(seed: int) -> None:
    # Two orders see the same calls and the same releases; one computes
    # reads and writes the general way. Gates are compared by the order in
    # which each order first handed them out, and by their counts.
    orders = []
    for fast in (True, False):
        order = ResourceOrder(OrderGates(), lambda event: event.args.get("to"))
        order.fast = fast
        orders.append(order)
    names: List[Dict[int, int]] = [{}, {}]
    # Keeps every gate alive, so that no id() is reused for a new one.
    seen: List[List[Any]] = [[], []]
    pending: List[List[Any]] = [[], []]
    rng = random.Random(seed)

    def shape(side: int, gates: Any) -> List[Any]:
        ids = names[side]
        seen[side].extend(gates)
        return [(ids.setdefault(id(gate), len(ids)), gate.count, gate.closed) for gate in gates]

    for op, event in _random_calls(seed, 400):
        steps = [order.step(0, event, op) for order in orders]
        assert (steps[0] is None) == (steps[1] is None)
        if steps[0] is None:
            continue
        for side in (0, 1):
            assert steps[side].event is event
        assert shape(0, steps[0].waits) == shape(1, steps[1].waits)
        assert shape(0, steps[0].releases) == shape(1, steps[1].releases)
        pending[0].append(steps[0])
        pending[1].append(steps[1])
        while pending[0] and rng.random() < 0.6:
            index = rng.randrange(len(pending[0]))
            for side in (0, 1):
                orders[side]._gates.release(pending[side].pop(index))


def test_read_waits_for_one_gate_per_other_stream() -> None:
    # Thread 1 queues 300 writes, none ended yet; thread 2's read then waits
    # for the newest of them only, which ends after all the others.
    order = ResourceOrder(OrderGates(), lambda event: None)
    writes = [order.step(0, _data_call("write", 1, n), "write") for n in range(300)]

    step = order.step(0, _data_call("read", 2, 400), "read")

    assert step is not None
    assert len(step.waits) == 1
    assert step.waits[0].count == 300
    assert all(write is not None and step.waits[0] in write.releases for write in writes)


# -- the repeated real trace -------------------------------------------------------------


def test_shared_threads_trace_is_stable(tmp_path: Path) -> None:
    """Threads of this trace reuse each other's descriptor numbers."""
    rows = []
    for number in range(5):
        summary = run([SHARED_THREADS], tmp_path / f"root{number}", "resource", fixed=False)
        rows.append(
            (summary.events_replayed, summary.events_skipped, summary.events_failed,
             summary.short_reads, dict(summary.parity), violations(summary))
        )

    assert rows == [rows[0]] * 5
    assert rows[0] == (
        256, 192, 0, 0,
        {"match": 256, "mismatch-class": 0, "mismatch-bytes": 0, "no-ret-recorded": 0},
        {},
    )


# -- options ------------------------------------------------------------------------------


def test_options_reject_unknown_order(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^order must be 'stream', 'resource' or 'global', not 'fifo'$"):
        ReplayOptions(root=str(tmp_path), order="fifo")


def test_cli_rejects_unknown_order(write_then_read: Path, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["replay", str(write_then_read), "--root", str(tmp_path / "r"), "--order", "fifo"], stdout=out, stderr=err)

    assert code == 1
    assert out.getvalue() == ""
    assert "'fifo' is not an order mode; use stream, resource or global" in err.getvalue()
