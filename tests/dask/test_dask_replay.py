"""Trace replay on a Dask cluster: the same counts as a local replay.

Each summary from the cluster is compared with a single-process replay of
the same input. The comparison leaves out what differs between any two
runs (wall times, latency values, the per-process rows) and the prepared
examples, which name the sub-root of a shard. Every count is compared
exactly.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import orjson
import pytest

from greenpipe.cli import main
from greenpipe.dask import _replay as dask_replay
from greenpipe.dask._replay import DaskReplayer
from greenpipe.replay import ReplayOptions, Replayer, ReplaySummary
from greenpipe.replay._pipeline import InsufficientSpaceError
from greenpipe.replay._sandbox import ROOT_MARKER
from greenpipe.replay._shards import run_shard_in_subroot

pytestmark = pytest.mark.timeout(90)

DATA = Path(__file__).resolve().parent.parent / "data"
REPO = Path(__file__).resolve().parents[2]
NEWEST = DATA / "anku94_dftracer" / "examples" / "dfanalyzer" / "test-trace.pfw.gz"
SMALL = DATA / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw.gz"
DIST = DATA / "hariharan-devarajan_dftracer" / "examples" / "dfanalyzer" / "test-trace-distributed"

# Real traces whose replays touch disjoint paths, so each replays the same
# in a sub-root of its own as in one shared root.
INDEPENDENT = [
    NEWEST,
    SMALL,
    DATA / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw",
    DATA / "hariharan-devarajan_dftracer" / ".trace-0-of-2.pfw",
    DIST / "cm1_1_48_20240926" / "cm1-DEFAULT-3537780-preload.pfw.gz",
    DIST / "test-trace-dist-0.pfw.gz",
    DATA / "hariharan-devarajan_dftracer" / "examples" / "graph_visualization" / "test_data1.pfw",
]

# O_WRONLY | O_CREAT | O_APPEND: a second run of the same calls on the
# same file would double it.
APPEND_FLAGS = 0o1 | 0o100 | 0o2000


def counts(summary: ReplaySummary) -> Dict[str, Any]:
    """Return the summary as JSON values without times, process rows and root paths."""
    data = summary.to_dict()
    for key in ("wall_seconds", "processes", "root"):
        del data[key]
    del data["preparation"]["examples"]
    data["latency"] = {name: row["count"] for name, row in data["latency"].items()}
    # How many calls waited for an order dependency depends on timing.
    del data["order"]["waits"]
    del data["timing"]["elapsed_s"]
    return data


def call(name: str, ts: int, pid: int = 1, **args: Any) -> Dict[str, Any]:
    return {"id": ts, "name": name, "cat": "POSIX", "pid": pid, "tid": pid, "ts": ts, "dur": 1, "ph": "X", "args": args}


def write_trace(path: Path, events: List[Dict[str, Any]]) -> str:
    path.write_bytes(b"\n".join([b"[", *(orjson.dumps(e) for e in events)]) + b"\n]")
    return str(path)


def appending_traces(folder: Path) -> List[str]:
    """Return two traces that each append 100 bytes to a file of their own."""
    traces = []
    for number in range(2):
        traces.append(write_trace(folder / f"rank{number}.pfw", [
            call("open64", 10, pid=number + 1, fname=f"/out/rank{number}.dat", flags=APPEND_FLAGS, ret=3),
            call("write", 20, pid=number + 1, fd=3, count=100, ret=100),
            call("close", 30, pid=number + 1, fd=3, ret=0),
        ]))
    return traces


def snapshot(folder: Path) -> Dict[str, Any]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            info = os.lstat(full)
            content = Path(full).read_bytes() if os.path.isfile(full) and not os.path.islink(full) else None
            found[os.path.relpath(full, folder)] = (info.st_mode, info.st_size, content)
    return found


# -- equality with a local run ----------------------------------------------------


def test_dry_run_matches_local(dask_client) -> None:
    options = ReplayOptions(dry_run=True, sample=0.8, seed=11)

    local = Replayer([str(DATA)], options).run()
    on_dask = DaskReplayer([str(DATA)], options, client=dask_client).run()

    assert counts(on_dask) == counts(local)
    assert on_dask.events_seen == 204081
    assert len(on_dask.files) == 13
    assert not on_dask.worker_failures


def test_real_replay_matches_local(process_client, tmp_path: Path) -> None:
    inputs = [str(p) for p in INDEPENDENT]
    options = ReplayOptions(root=str(tmp_path / "local"), max_size=65536, threads=2)

    local = Replayer(inputs, options).run()
    cluster_options = ReplayOptions(root=str(tmp_path / "cluster"), max_size=65536, threads=2)
    on_dask = DaskReplayer(inputs, cluster_options, client=process_client).run()

    assert counts(on_dask) == counts(local)
    assert on_dask.exit_code() == 0
    assert on_dask.events_replayed == 1284 + 11 + 11 + 0 + 8055 + 0 + 0
    assert on_dask.parity == local.parity
    assert on_dask.lines == local.lines
    assert on_dask.lines["unaccounted"] == 0
    assert not on_dask.worker_failures
    shards = sorted(path.name for path in (tmp_path / "cluster" / ".shards").iterdir())
    assert shards == [str(n) for n in range(len(inputs))]
    roles = [row["role"] for row in on_dask.processes]
    assert roles[0] == "main"
    assert set(roles[1:]) == {"dask-worker"}
    assert sum(row["files"] for row in on_dask.processes) == len(inputs)


def test_cli_dask_json_matches_local(process_client, tmp_path: Path) -> None:
    address = process_client.scheduler.address
    runs = {}
    for name, extra in (("local", ["--processes", "1"]), ("dask", ["--dask", address])):
        target = tmp_path / f"{name}.json"
        out, err = io.StringIO(), io.StringIO()
        code = main(
            ["replay", str(DIST / "cm1_1_48_20240926"), "--dry-run", *extra, "--json", str(target)],
            stdout=out,
            stderr=err,
        )
        assert code == 0
        assert err.getvalue() == ""
        runs[name] = (out.getvalue(), json.loads(target.read_text()))

    local_out, local = runs["local"]
    dask_out, on_dask = runs["dask"]
    assert [row["role"] for row in local.pop("processes")] == ["main"]
    assert on_dask.pop("processes")[0]["role"] == "main"
    del local["wall_seconds"], on_dask["wall_seconds"]
    del local["timing"]["elapsed_s"], on_dask["timing"]["elapsed_s"]
    assert on_dask == local
    expected = [line for line in local_out.splitlines() if "time     traced" not in line]
    assert [line for line in dask_out.splitlines() if "time     traced" not in line] == expected


# -- retries ----------------------------------------------------------------------


def dies_after_first_replay(attempts: Path):
    """Return a shard function that replays, records the file size, then kills its worker once."""

    def replay_then_die(shard, plan):
        result = run_shard_in_subroot(shard, plan)
        lowest = shard.files[0][0]
        written = Path(shard.options.root) / ".shards" / str(lowest) / "out" / f"rank{lowest}.dat"
        done = sorted(attempts.glob(f"shard{lowest}-*"))
        (attempts / f"shard{lowest}-{len(done)}").write_text(str(written.stat().st_size))
        if lowest == 0 and not done:
            os._exit(1)
        return result

    return replay_then_die


def test_retried_shard_writes_once(fresh_process_cluster, tmp_path: Path) -> None:
    client = fresh_process_cluster()
    traces = appending_traces(tmp_path)
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    root = tmp_path / "root"

    local = Replayer(traces, ReplayOptions(root=str(tmp_path / "local"))).run()
    summary = DaskReplayer(
        traces,
        ReplayOptions(root=str(root)),
        client=client,
        shard_function=dies_after_first_replay(attempts),
    ).run()

    # The first attempt of shard 0 wrote its 100 bytes before its worker died.
    assert (attempts / "shard0-0").read_text() == "100"
    assert (attempts / "shard0-1").read_text() == "100"
    assert sorted(path.name for path in attempts.iterdir()) == ["shard0-0", "shard0-1", "shard1-0"]
    assert (root / ".shards" / "0" / "out" / "rank0.dat").stat().st_size == 100
    assert (root / ".shards" / "1" / "out" / "rank1.dat").stat().st_size == 100
    assert counts(summary) == counts(local)
    assert summary.bytes_written == 200
    assert not summary.worker_failures


# -- the sandbox --------------------------------------------------------------------


def test_outside_of_root_untouched(dask_client, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"original")
    root = tmp_path / "root"
    # A sub-root left by an earlier replay, with a symlink planted in it.
    stale = root / ".shards" / "0"
    stale.mkdir(parents=True)
    (root / ROOT_MARKER).write_text("marker")
    (stale / ROOT_MARKER).write_text("marker")
    (stale / "escape").symlink_to(outside)
    trace = write_trace(tmp_path / "climb.pfw", [
        call("open64", 10, fname="/../../outside/keep.txt", flags=0o1 | 0o100 | 0o1000, ret=3),
        call("write", 20, fd=3, count=5, ret=5),
        call("close", 30, fd=3, ret=0),
        call("open64", 40, fname="/escape/keep.txt", flags=0o1 | 0o100 | 0o1000, ret=4),
        call("write", 50, fd=4, count=5, ret=5),
        call("close", 60, fd=4, ret=0),
    ])
    before = snapshot(outside)

    summary = DaskReplayer([trace], ReplayOptions(root=str(root)), client=dask_client).run()

    assert snapshot(outside) == before
    assert not (stale / "escape").is_symlink()
    assert (stale / "outside" / "keep.txt").stat().st_size == 5
    assert (stale / "escape" / "keep.txt").stat().st_size == 5
    assert summary.events_replayed == 6
    assert not summary.worker_failures


def test_symlinked_shard_folder_rejected(dask_client, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "0").mkdir(parents=True)
    (outside / "0" / ROOT_MARKER).write_text("marker")
    (outside / "0" / "keep.txt").write_bytes(b"original")
    root = tmp_path / "root"
    root.mkdir()
    (root / ROOT_MARKER).write_text("marker")
    (root / ".shards").symlink_to(outside)
    traces = appending_traces(tmp_path)[:1]
    before = snapshot(outside)

    summary = DaskReplayer(traces, ReplayOptions(root=str(root)), client=dask_client).run()

    assert snapshot(outside) == before
    assert summary.exit_code() == 1
    assert len(summary.worker_failures) == 1
    assert "SandboxError" in summary.worker_failures[0]
    assert "is not a folder" in summary.worker_failures[0]


# -- progress ------------------------------------------------------------------------


def waits_for_release(shard, plan):
    """Replay a shard; the shard of file 1 first waits for the 'release' event."""
    from distributed import Event

    if shard.files[0][0] == 1:
        assert Event("release").wait(timeout=60)
    return run_shard_in_subroot(shard, plan)


def test_progress_advances_per_shard(dask_client, tmp_path: Path) -> None:
    from distributed import Event

    traces = appending_traces(tmp_path)
    replayer = DaskReplayer(
        traces, ReplayOptions(root=str(tmp_path / "root")), client=dask_client,
        shard_function=waits_for_release,
    )
    outcome: List[Any] = []
    runner = threading.Thread(target=lambda: outcome.append(replayer.run()))
    runner.start()
    release = Event("release", client=dask_client)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            progress = replayer.progress()
            if progress.phase == "replay" and progress.events_done > 0:
                break
            time.sleep(0.01)
        # One shard of two finished: its 3 events and 100 bytes count.
        assert (progress.phase, progress.events_done, progress.events_total) == ("replay", 3, 6)
        assert progress.bytes_done == 100
    finally:
        release.set()
        runner.join(60)

    assert outcome[0].events_replayed == 6
    assert replayer.progress().phase == "done"


# -- the command -----------------------------------------------------------------------


def test_gevent_patched_process_rejects_dask() -> None:
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import sys\n"
        "from greenpipe.cli import main\n"
        f"status = main(['replay', {str(SMALL)!r}, '--dry-run', '--dask', 'tcp://127.0.0.1:1'])\n"
        "print('distributed' in sys.modules)\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )

    assert done.returncode == 1
    assert done.stdout == "False\n"
    assert done.stderr.count("\n") == 1
    assert "gevent.monkey" in done.stderr


def test_local_replay_imports_no_dask() -> None:
    code = (
        "import sys\n"
        "from greenpipe.cli import main\n"
        f"main(['replay', {str(SMALL)!r}, '--dry-run', '--quiet', '--processes', '1'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )

    assert done.returncode == 0
    assert done.stdout == "[]\n"


def test_cli_rejects_processes_with_dask() -> None:
    out, err = io.StringIO(), io.StringIO()

    code = main(
        ["replay", str(SMALL), "--dry-run", "--dask", "tcp://127.0.0.1:1", "--processes", "2"],
        stdout=out, stderr=err,
    )

    assert code == 1
    assert err.getvalue() == (
        "greenpipe replay: The option --processes (2) applies to local replays; "
        "drop it with --dask or --scheduler-file. Run 'greenpipe replay --help' for the options.\n"
    )


def test_cli_scheduler_file(process_client, tmp_path: Path) -> None:
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"address": process_client.scheduler.address}))
    out, err = io.StringIO(), io.StringIO()

    code = main(
        ["replay", str(SMALL), "--dry-run", "--quiet", "--scheduler-file", str(scheduler_file),
         "--json", "-"],
        stdout=out, stderr=err,
    )

    assert code == 0
    assert err.getvalue() == ""
    assert json.loads(out.getvalue())["events_seen"] == 1012


def test_second_run_clears_subroots(dask_client, tmp_path: Path) -> None:
    """A second run into the same root clears each sub-root, so nothing doubles."""
    traces = appending_traces(tmp_path)
    root = tmp_path / "root"

    for _ in range(2):
        summary = DaskReplayer(traces, ReplayOptions(root=str(root)), client=dask_client).run()
        assert summary.bytes_written == 200

    assert (root / ".shards" / "0" / "out" / "rank0.dat").stat().st_size == 100


def test_shards_together_must_fit_the_free_space(
    dask_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each shard alone fits; the client adds them up before any shard
    # replays. Only the client's measure is lowered, so the workers'
    # own checks would let every shard through.
    monkeypatch.setattr(dask_replay, "free_bytes_near", lambda root: 150)
    root = tmp_path / "root"

    with pytest.raises(InsufficientSpaceError) as caught:
        DaskReplayer(appending_traces(tmp_path), ReplayOptions(root=str(root)), client=dask_client).run()

    assert caught.value.needed == 200
    assert caught.value.available == 150
    assert not (root / ".shards").exists()


def test_free_bytes_near_measures_the_nearest_existing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "yet" / "there"

    assert dask_replay.free_bytes_near(str(missing)) == shutil.disk_usage(tmp_path).free


# -- cancelling -----------------------------------------------------------------------


def test_cancel_stops_running_shards(process_client, tmp_path: Path) -> None:
    # Each rank writes once, then waits a minute of trace time for its
    # second write: cancelling must end that wait on the workers.
    traces = []
    for number in range(2):
        traces.append(write_trace(tmp_path / f"slow{number}.pfw", [
            call("open64", 10, pid=number + 1, fname=f"/out/slow{number}.dat", flags=APPEND_FLAGS, ret=3),
            call("write", 20, pid=number + 1, fd=3, count=100, ret=100),
            call("write", 60_000_000, pid=number + 1, fd=3, count=100, ret=100),
            call("close", 60_000_010, pid=number + 1, fd=3, ret=0),
        ]))
    replayer = DaskReplayer(
        traces, ReplayOptions(root=str(tmp_path / "root"), timing="original"), client=process_client
    )
    outcome: List[Any] = []
    runner = threading.Thread(target=lambda: outcome.append(replayer.run()))
    runner.start()
    def first_writes_done() -> bool:
        written = list((tmp_path / "root" / ".shards").glob("*/out/slow*.dat"))
        return len(written) == 2 and all(path.stat().st_size == 100 for path in written)

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not first_writes_done():
            time.sleep(0.05)
        # Both shards are running and waiting for their second write.
        assert first_writes_done()
        started = time.monotonic()
        replayer.cancel()
        runner.join(30)
        stopped_after = time.monotonic() - started
    finally:
        replayer.cancel()
        runner.join(60)

    summary = outcome[0]
    assert stopped_after < dask_replay.CANCEL_GRACE
    assert summary.interrupted
    assert summary.bytes_written == 200
    assert not summary.worker_failures
    for number in range(2):
        subroots = list((tmp_path / "root" / ".shards").glob(f"*/out/slow{number}.dat"))
        assert [path.stat().st_size for path in subroots] == [100]
