"""Time series and distributions collected during a replay.

The trace side of every series is a function of the trace alone, so it
must be equal, bucket for bucket, whether the streams run in one process,
in worker processes or in one shard per file. The replay side depends on
the machine, so only its byte totals are compared.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List

import pytest

from greenpipe.replay import ReplayOptions, Replayer
from greenpipe.replay._processes import ShardedReplayer
from greenpipe.replay._series import (
    MAX_BUCKETS,
    OTHER_PATHS,
    ReplaySeries,
    Timeline,
    _add_rows,
)
from greenpipe.replay._shards import ReplayShard, merge_results, run_shard
from greenpipe.replay._sandbox import PathSandbox, prepare_root
from greenpipe.replay._shards import anchors_of, merge_plans
from greenpipe.replay._pipeline import series_origin

from .conftest import call, file_hash, write_trace

DATA = Path(__file__).resolve().parent.parent / "data"
NEWEST = DATA / "anku94_dftracer" / "examples" / "dfanalyzer" / "test-trace.pfw.gz"
SMALL = DATA / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw.gz"
PLAIN = DATA / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw"
DIST = DATA / "hariharan-devarajan_dftracer" / "examples" / "dfanalyzer" / "test-trace-distributed"
CM1 = DIST / "cm1_1_48_20240926" / "cm1-DEFAULT-3537780-preload.pfw.gz"

TIMEOUT = 120


# -- Timeline ---------------------------------------------------------------------


def test_timeline_spreads_busy_time() -> None:
    line = Timeline(10)

    line.add(5, 30, 100, 0)

    assert line.busy == [5, 10, 10, 5]
    assert line.read == [100, 0, 0, 0]
    assert line.written == [0, 0, 0, 0]


def test_timeline_call_within_one_bucket() -> None:
    line = Timeline(10)

    line.add(12, 3, 0, 7)
    line.add(14, 0, 0, 1)

    assert line.busy == [0, 3]
    assert line.written == [0, 8]


def test_timeline_clamps_negative_start() -> None:
    line = Timeline(10)

    line.add(-5, 4, 1, 0)

    assert line.busy == [4]
    assert line.read == [1]


def test_timeline_widens_past_the_cap() -> None:
    line = Timeline(1)

    line.add(0, 1, 1, 0)
    line.add(MAX_BUCKETS, 1, 2, 0)

    assert line.width == 2
    assert len(line.busy) == MAX_BUCKETS // 2 + 1
    assert line.read[0] == 1
    assert line.read[MAX_BUCKETS // 2] == 2
    assert sum(line.busy) == 2


def test_timeline_long_call_widens_to_fit() -> None:
    line = Timeline(1)

    line.add(0, 10 * MAX_BUCKETS, 0, 0)

    assert line.width == 16
    assert len(line.busy) <= MAX_BUCKETS
    assert sum(line.busy) == 10 * MAX_BUCKETS
    assert line.busy[0] == 16


def _random_calls(seed: int, count: int) -> List[tuple]:
    rng = random.Random(seed)
    return [
        (rng.randrange(0, 50_000), rng.choice((0, 1, 3, 40, 900, 7000)), rng.randrange(0, 4096), rng.randrange(0, 2))
        for _ in range(count)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_timeline_merge_equals_one_pass(seed: int) -> None:
    calls = _random_calls(seed, 2000)
    whole = Timeline(1)
    for start, duration, size, write in calls:
        whole.add(start, duration, 0 if write else size, size if write else 0)

    rng = random.Random(seed)
    parts = [Timeline(1) for _ in range(5)]
    for start, duration, size, write in calls:
        rng.choice(parts).add(start, duration, 0 if write else size, size if write else 0)
    merged = Timeline(1)
    for part in rng.sample(parts, len(parts)):
        merged.merge(part)

    assert merged.width == whole.width
    assert merged.busy == whole.busy
    assert merged.read == whole.read
    assert merged.written == whole.written


def test_timeline_merge_into_wider() -> None:
    wide = Timeline(1)
    wide.add(3 * MAX_BUCKETS, 2, 0, 0)
    narrow = Timeline(1)
    narrow.add(5, 1, 9, 0)

    wide.merge(narrow)

    assert wide.width == 4
    assert wide.read[1] == 9
    assert sum(wide.busy) == 3


def test_path_rows_fold_past_the_cap() -> None:
    mine: Dict[str, List[int]] = {}

    new = _add_rows(mine, {f"/p{i}": [1, 0, 1, 0] for i in range(5)}, 3)

    assert new == 5
    assert sorted(mine) == sorted(["/p0", "/p1", "/p2", OTHER_PATHS])
    assert mine[OTHER_PATHS] == [2, 0, 2, 0]


# -- replays ----------------------------------------------------------------------


def _crafted(tmp_path: Path) -> Path:
    metadata = [file_hash("/data/a.bin", "aa"), file_hash("/data/b.bin", "bb")]
    events = [
        call("open64", 1_000_000, fhash="aa", flags=66, mode=420, ret=3),
        call("write", 1_000_100, fhash="aa", fd=3, count=4096, ret=4096),
        call("write", 1_000_200, fhash="aa", fd=3, count=4096, ret=4096),
        call("pread64", 1_003_000, fhash="aa", fd=3, count=1000, offset=0, ret=1000),
        call("close", 1_004_000, fhash="aa", fd=3, ret=0),
        call("open64", 1_000_050, tid=2, fhash="bb", flags=66, mode=420, ret=4),
        call("write", 1_002_500, tid=2, fhash="bb", fd=4, count=10, ret=10),
        call("close", 1_002_600, tid=2, fhash="bb", fd=4, ret=0),
    ]
    for event in events:
        event["dur"] = 50
    return write_trace(tmp_path / "crafted.pfw", events, metadata)


def test_crafted_trace_series(tmp_path: Path) -> None:
    trace = _crafted(tmp_path)

    summary = Replayer([str(trace)], ReplayOptions(root=str(tmp_path / "root"), series=True, threads=1)).run()

    series = summary.series
    assert series is not None
    trace_side = series["trace"]
    assert trace_side["bucket_s"] == pytest.approx(0.001)
    # Writes at 100 and 200 us and 2,500 us after the first start; the
    # pread at 3,000 us.
    assert trace_side["written_bytes"][0] == 8192
    assert trace_side["written_bytes"][2] == 10
    assert trace_side["read_bytes"][3] == 1000
    # Eight calls of 50 us each, in 1 ms buckets.
    assert sum(trace_side["in_flight"]) * 1000 == pytest.approx(8 * 50)
    assert sum(series["replay"]["written_bytes"]) == 8202
    assert sum(series["replay"]["read_bytes"]) == 1000
    assert series["files"] == [
        {
            "file": str(trace),
            "trace_read_bytes": 1000,
            "trace_written_bytes": 8202,
            "replay_read_bytes": 1000,
            "replay_written_bytes": 8202,
        }
    ]
    paths = {row["path"]: row for row in series["paths"]}
    mapped_a = str(tmp_path / "root" / "data" / "a.bin")
    assert paths[mapped_a]["trace_written_bytes"] == 8192
    assert paths[mapped_a]["replay_read_bytes"] == 1000
    assert series["path_count"] == 2
    ratios = series["duration_ratio"]
    assert ratios["write"]["count"] == 3
    assert ratios["open64"]["count"] == 2
    assert ratios["write"]["p50"] > 0


def test_dry_run_has_no_series(tmp_path: Path) -> None:
    trace = _crafted(tmp_path)

    summary = Replayer([str(trace)], ReplayOptions(dry_run=True, series=True)).run()

    assert summary.series is None


def test_series_off_by_default(tmp_path: Path) -> None:
    trace = _crafted(tmp_path)

    summary = Replayer([str(trace)], ReplayOptions(root=str(tmp_path / "root"))).run()

    assert summary.series is None
    assert "series" in summary.to_dict()


def _deterministic(series: Dict[str, Any], root: Path) -> Dict[str, Any]:
    """Return the parts of a series that depend on the trace alone.

    Mapped paths are given relative to ``root``.
    """
    prefix = str(root)
    return {
        "trace": series["trace"],
        "files": series["files"],
        "paths": [dict(row, path=row["path"][len(prefix):]) for row in series["paths"]],
        "path_count": series["path_count"],
        "ratio_counts": {
            name: row["count"] + row["zero_traced_dur"] for name, row in series["duration_ratio"].items()
        },
        "replay_read": sum(series["replay"]["read_bytes"]),
        "replay_written": sum(series["replay"]["written_bytes"]),
    }


INPUTS = [NEWEST, SMALL, PLAIN, CM1]


@pytest.mark.timeout(TIMEOUT)
def test_processes_series_equal_one_process(tmp_path: Path) -> None:
    options = dict(series=True, max_size=65536, threads=2)
    single = Replayer([str(p) for p in INPUTS], ReplayOptions(root=str(tmp_path / "one"), **options)).run()
    sharded = ShardedReplayer(
        [str(p) for p in INPUTS], ReplayOptions(root=str(tmp_path / "two"), **options), 2
    ).run()

    one = _deterministic(single.series, tmp_path / "one")
    two = _deterministic(sharded.series, tmp_path / "two")

    assert one == two
    assert one["replay_read"] == single.bytes_read
    assert one["replay_written"] == single.bytes_written


@pytest.mark.timeout(TIMEOUT)
def test_shard_per_file_series_equal_one_process(tmp_path: Path) -> None:
    """One shard per file, merged as a cluster engine's results are."""
    files = [str(p) for p in INPUTS]
    root = tmp_path / "shards"
    options = ReplayOptions(root=str(root), series=True, max_size=65536, threads=2)
    groups = [((index, path),) for index, path in enumerate(files)]
    planned = [run_shard(ReplayShard("plan", group, options)) for group in groups]
    plan = merge_plans(planned)
    assert prepare_root(str(root)) is None
    with PathSandbox(str(root)) as sandbox:
        plan.prepare(sandbox)
    origin = series_origin()
    results = [
        run_shard(ReplayShard("replay", group, options, anchors_of(plan, group), origin=origin))
        for group in reversed(groups)
    ]
    merged = merge_results(files, options, results)

    single = Replayer(files, ReplayOptions(root=str(tmp_path / "one"), series=True, max_size=65536, threads=2)).run()

    one = _deterministic(single.series, tmp_path / "one")
    many = _deterministic(merged.series, root)

    assert many == one


def test_replay_series_pickle(tmp_path: Path) -> None:
    import pickle

    series = ReplaySeries()
    series.trace.add(10, 5, 1, 2)
    series.files["f"] = [1, 2, 3, 4]

    copy = pickle.loads(pickle.dumps(series))

    assert copy.trace.busy == series.trace.busy
    assert copy.files == {"f": [1, 2, 3, 4]}
