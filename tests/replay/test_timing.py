"""Timed replays: due times, lateness, think time, and one time origin.

The unit tests pace streams on a clock they drive themselves, and the
pipeline tests run the whole replay on a virtual clock, so every time
they compare is exact and no test waits in real time. Only the CLI tests
at the end replay a short trace in real time, and they check counts and
ordering, never speed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from greenpipe import run
from greenpipe import sleep as task_sleep
from greenpipe.cli import main
from greenpipe.replay import ReplayOptions
from greenpipe.replay._execute import ReplayContext, StreamPacer, StreamRunner, Timeline
from greenpipe.replay._pipeline import START_LEAD, Replayer
from greenpipe.replay._processes import ShardedReplayer
from greenpipe.replay._sandbox import PathSandbox
from greenpipe.replay._summary import StreamStats, TimingSetup, build_summary, Preparation
from greenpipe.testing import VirtualClock
from greenpipe.trace import Event

from .conftest import call, write_trace

#: A traced start time in microseconds, as DFTracer writes them.
BASE = 1_700_000_000_000_000


class ManualClock:
    """A clock that moves only when slept on or advanced by the test."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.woke: List[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.woke.append(self.now)


def stat_event(ts: int, tid: int = 1, dur: int = 1) -> Event:
    return Event("stat", "POSIX", 1, tid, ts, dur, "X", {}, path="/probe")


def make_context(tmp_path: Path, clock: ManualClock, **options: Any) -> ReplayContext:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return ReplayContext(PathSandbox(str(root)), clock=clock, sleep=clock.sleep, **options)


def summary_of(streams: List[StreamStats], setup: TimingSetup) -> Dict[str, Any]:
    summary = build_summary(
        inputs=[], root=None, dry_run=False, interrupted=False, file_counters=[],
        streams=streams, wall_seconds=0.0, preparation=Preparation(), timing=setup,
    )
    return summary.timing


# -- due times ------------------------------------------------------------------


def test_open_loop_calls_start_at_due_times(tmp_path: Path) -> None:
    clock = ManualClock(100.0)
    timeline = Timeline(BASE, BASE + 3_000_000, BASE + 3_000_001)
    context = make_context(tmp_path, clock, mode="original", speed=2.0, timeline=timeline, start=100.5)
    stats = StreamStats("t.pfw", 1, 1)
    runner = StreamRunner(context, stats)
    offsets = [0, 250, 1_000_000, 1_000_100, 3_000_000]

    for offset in offsets:
        runner.execute(stat_event(BASE + offset))

    assert clock.woke == pytest.approx([100.5 + offset / 2e6 for offset in offsets], abs=1e-9)
    assert stats.replayed == len(offsets)
    assert stats.lateness_replayer.count == len(offsets)
    assert stats.lateness_replayer.maximum == pytest.approx(0.0, abs=1e-9)
    assert stats.lateness_busy.maximum == 0.0


def test_late_call_keeps_later_due_times(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    context = make_context(tmp_path, clock, mode="original", start=0.0)
    context.ts0 = BASE
    stats = StreamStats("t.pfw", 1, 1)
    runner = StreamRunner(context, stats)

    runner.execute(stat_event(BASE + 1_000))
    clock.now += 0.5  # the replayer stalls for half a second
    runner.execute(stat_event(BASE + 2_000))
    runner.execute(stat_event(BASE + 600_000))

    # The stalled call runs at once; the next one is still due at 0.6 s.
    assert clock.woke == pytest.approx([0.001, 0.6], abs=1e-9)
    assert stats.lateness_replayer.maximum == pytest.approx(0.5 + 0.001 - 0.002, abs=1e-9)


def test_no_drift_over_many_events(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    count = 20_000
    last = BASE + (count - 1) * 300
    context = make_context(
        tmp_path, clock, mode="original", speed=3.0, timeline=Timeline(BASE, last, last + 1), start=0.0
    )
    stats = StreamStats("t.pfw", 1, 1)
    pacer = StreamPacer(context, stats)

    for number in range(count):
        ts = BASE + number * 300
        pacer.wait(ts)
        # Every call takes a little less than the traced gap divided by
        # the speed, which would accumulate if gaps were added up.
        clock.now += 0.000099
        pacer.ended(clock(), ts + 1)

    assert pacer.due(last) == pytest.approx((count - 1) * 300 / 3e6, abs=1e-9)
    assert clock.woke[-1] == pytest.approx((count - 1) * 300 / 3e6, abs=1e-9)
    assert stats.lateness_replayer.maximum == pytest.approx(0.0, abs=1e-9)
    assert stats.lateness_head.count == stats.lateness_tail.count == 200
    timing = summary_of([stats], TimingSetup("original", 3.0, last + 1 - BASE))
    assert timing["drift_s"] == pytest.approx(0.0, abs=1e-9)


# -- lateness split ---------------------------------------------------------------


def test_lateness_splits_busy_and_replayer(tmp_path: Path) -> None:
    clock = ManualClock(10.0)
    context = make_context(tmp_path, clock, mode="original", start=10.0)
    context.ts0 = BASE
    stats = StreamStats("t.pfw", 1, 1)
    pacer = StreamPacer(context, stats)

    pacer.record(BASE, 10.0, 10.0)
    pacer.ended(10.004, BASE + 10)  # the first call ran until 4 ms
    due = pacer.due(BASE + 2_000)
    pacer.record(BASE + 2_000, due, 10.005)  # started 1 ms after it ended

    assert due == pytest.approx(10.002, abs=1e-12)
    assert stats.lateness_busy.count == stats.lateness_replayer.count == 2
    assert stats.lateness_busy.maximum == pytest.approx(0.002, abs=1e-12)
    assert stats.lateness_replayer.maximum == pytest.approx(0.001, abs=1e-12)


def test_previous_call_ending_before_due_is_not_busy(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    context = make_context(tmp_path, clock, mode="original", start=0.0)
    context.ts0 = BASE
    stats = StreamStats("t.pfw", 1, 1)
    pacer = StreamPacer(context, stats)

    pacer.ended(0.001, BASE + 1)
    pacer.record(BASE + 2_000, pacer.due(BASE + 2_000), 0.0035)

    assert stats.lateness_busy.maximum == 0.0
    assert stats.lateness_replayer.maximum == pytest.approx(0.0015, abs=1e-12)


def test_early_start_counts_as_on_time(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    context = make_context(tmp_path, clock, mode="original", start=0.0)
    context.ts0 = BASE
    stats = StreamStats("t.pfw", 1, 1)

    StreamPacer(context, stats).record(BASE + 5_000, 0.005, 0.004)

    assert stats.lateness_replayer.count == 1
    assert stats.lateness_replayer.maximum == 0.0


# -- think time -------------------------------------------------------------------


def test_think_waits_traced_gap_after_previous_end(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    context = make_context(tmp_path, clock, mode="think", speed=2.0, start=1.0)
    context.ts0 = BASE
    pacer = StreamPacer(context, StreamStats("t.pfw", 1, 1))

    first = pacer.due(BASE + 10_000)
    pacer.ended(7.0, BASE + 10_000 + 400)
    after_gap = pacer.due(BASE + 10_000 + 400 + 3_000)
    overlapping = pacer.due(BASE + 10_000 + 100)

    assert first == pytest.approx(1.0 + 0.01 / 2, abs=1e-12)
    assert after_gap == pytest.approx(7.0 + 0.003 / 2, abs=1e-12)
    assert overlapping == 7.0


def test_think_runner_measures_from_actual_end(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    context = make_context(tmp_path, clock, mode="think", start=0.0)
    context.ts0 = BASE
    stats = StreamStats("t.pfw", 1, 1)
    runner = StreamRunner(context, stats)

    runner.execute(stat_event(BASE, dur=100))
    clock.now += 0.25  # the replayer stalls after the first call
    runner.execute(stat_event(BASE + 1_100, dur=100))
    runner.execute(stat_event(BASE + 1_300, dur=100))

    # The second call is 249 ms late; the third is due 100 us after the
    # second ended, so it is on time.
    assert clock.woke == pytest.approx([0.25 + 0.0001], abs=1e-9)
    assert stats.lateness_busy.maximum == 0.0
    assert stats.lateness_replayer.maximum == pytest.approx(0.249, abs=1e-9)
    assert stats.lateness_replayer.count == 3


# -- one origin for every stream and file ----------------------------------------


def test_streams_of_two_files_share_origin(tmp_path: Path) -> None:
    clock = VirtualClock(50.0)
    woke: List[tuple] = []
    root = tmp_path / "root"
    root.mkdir()
    timeline = Timeline(BASE, BASE + 9_000_000, BASE + 9_000_001)

    def body(scope: Any) -> None:
        context = ReplayContext(
            PathSandbox(str(root)), mode="original", timeline=timeline, start=51.0,
            clock=clock.now, sleep=task_sleep,
        )
        streams = {
            ("a.pfw", 1): [BASE, BASE + 2_000_000],
            ("a.pfw", 2): [BASE + 1_000_000],
            ("b.pfw", 1): [BASE + 5_000_000, BASE + 9_000_000],
        }

        def stream(inner: Any, key: tuple, times: List[int]) -> None:
            runner = StreamRunner(context, StreamStats(key[0], 1, key[1]))
            for ts in times:
                runner.execute(stat_event(ts, tid=key[1]))
                woke.append((key, clock.now()))

        for key, times in streams.items():
            scope.spawn(stream, key, times)

    run(body, clock=clock)

    assert sorted(woke) == [
        (("a.pfw", 1), 51.0),
        (("a.pfw", 1), 53.0),
        (("a.pfw", 2), 52.0),
        (("b.pfw", 1), 56.0),
        (("b.pfw", 1), 60.0),
    ]


def test_pipeline_paces_two_files_from_earliest_start(tmp_path: Path) -> None:
    first = write_trace(
        tmp_path / "a.pfw",
        [call("stat", BASE + i * 100_000, fname="/a", tid=1 + i % 2) for i in range(20)],
    )
    second = write_trace(
        tmp_path / "b.pfw",
        [call("stat", BASE + 30_000_000 + i * 500_000, fname="/b", pid=2) for i in range(10)],
    )
    options = ReplayOptions(root=str(tmp_path / "root"), timing="original", speed=4.0, threads=2)

    summary = Replayer([str(first), str(second)], options, clock=VirtualClock()).run()

    timing = summary.timing
    last_start = (30_000_000 + 9 * 500_000) / 4e6
    assert summary.events_replayed == 30
    assert timing["mode"] == "original"
    assert timing["speed"] == 4.0
    assert timing["lateness"]["replayer"]["count"] == 30
    assert timing["lateness"]["replayer"]["max_s"] == pytest.approx(0.0, abs=1e-9)
    assert timing["lateness"]["busy"]["max_s"] == 0.0
    # Had the second file been paced from its own first start, the replay
    # would have ended after 4.5 s / 4.
    assert timing["elapsed_s"] == pytest.approx(last_start, abs=1e-9)
    assert timing["expected_s"] == pytest.approx((30_000_000 + 9 * 500_000 + 1) / 4e6)
    assert timing["elapsed_error_s"] == pytest.approx(-1 / 4e6, abs=1e-9)
    assert timing["drift_s"] == pytest.approx(0.0, abs=1e-9)
    assert summary.wall_seconds == pytest.approx(START_LEAD + last_start, abs=1e-9)


def test_pipeline_think_on_virtual_clock(tmp_path: Path) -> None:
    events = [call("stat", BASE + i * 1_000_000, fname="/a") for i in range(5)]
    trace = write_trace(tmp_path / "a.pfw", events)
    options = ReplayOptions(root=str(tmp_path / "root"), timing="think", speed=2.0, threads=1)

    summary = Replayer([str(trace)], options, clock=VirtualClock()).run()

    # Four think times of 1 s less the 1 us duration, halved.
    assert summary.timing["elapsed_s"] == pytest.approx(4 * (1.0 - 1e-6) / 2, abs=1e-9)
    assert summary.timing["expected_s"] is None
    assert summary.timing["elapsed_error_s"] is None
    assert summary.timing["lateness"]["replayer"]["count"] == 5


def test_dry_run_ignores_timing(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "a.pfw", [call("stat", BASE + i * 10_000_000, fname="/a") for i in range(3)])
    options = ReplayOptions(dry_run=True, timing="original")

    summary = Replayer([str(trace)], options).run()

    assert summary.events_seen == 3
    assert summary.wall_seconds < 10.0
    assert summary.timing["lateness"]["replayer"]["count"] == 0
    assert summary.timing["drift_s"] is None


# -- merging -------------------------------------------------------------------------


def test_merged_streams_give_same_timing_as_one(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    last = BASE + 999 * 1_000
    context = make_context(
        tmp_path, clock, mode="original", timeline=Timeline(BASE, last, last + 5), start=0.0
    )
    whole = StreamStats("t.pfw", 1, 1)
    parts = [StreamStats("t.pfw", 1, 2), StreamStats("u.pfw", 1, 1)]
    samples = []
    for number in range(1000):
        ts = BASE + number * 1_000
        due = number / 1000
        samples.append((ts, due, due + (number * 7919 % 1000) * 1e-6))

    for ts, due, start in samples:
        StreamPacer(context, whole).record(ts, due, start)
        StreamPacer(context, parts[ts % 2]).record(ts, due, start)
    whole.end_offset = 0.999
    parts[0].end_offset, parts[1].end_offset = 0.998, 0.999
    setup = TimingSetup("original", 1.0, last + 5 - BASE)

    assert summary_of(parts, setup) == summary_of([whole], setup)
    assert summary_of(parts, setup)["lateness"]["replayer"]["count"] == 1000


def test_timing_summary_shape(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    context = make_context(tmp_path, clock, mode="original", start=0.0)
    context.ts0 = BASE
    stats = StreamStats("t.pfw", 1, 1)
    StreamPacer(context, stats).record(BASE, 0.0, 0.00005)
    stats.end_offset = 2.0

    timing = summary_of([stats], TimingSetup("original", 2.0, 3_000_000))

    assert set(timing) == {
        "mode", "speed", "elapsed_s", "expected_s", "elapsed_error_s", "drift_s", "lateness"
    }
    assert timing["expected_s"] == 1.5
    assert timing["elapsed_error_s"] == 0.5
    assert timing["drift_s"] is None
    replayer = timing["lateness"]["replayer"]
    assert set(replayer) == {"count", "p50_s", "p95_s", "p99_s", "max_s", "histogram"}
    assert replayer["max_s"] == 0.00005
    assert replayer["p50_s"] == 0.00005
    assert len(replayer["histogram"]) == 1
    upper, count = replayer["histogram"][0]
    assert count == 1
    assert 0.00005 <= upper <= 0.00005 * 1.07


def test_asap_timing_summary(tmp_path: Path) -> None:
    summary = summary_of([StreamStats("t.pfw", 1, 1)], TimingSetup())

    assert summary["mode"] == "asap"
    assert summary["speed"] is None
    assert summary["expected_s"] is None
    assert summary["drift_s"] is None
    assert summary["lateness"]["busy"]["histogram"] == []


# -- options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"timing": 2.0, "speed": 3.0}, r"^speed \(3\.0\) and a numeric timing \(2\.0\) both set the speed; give timing 'original' with speed instead$"),
        ({"timing": "asap", "speed": 2.0}, r"^speed \(2\.0\) applies to timing 'original' or 'think', not 'asap'$"),
        ({"timing": "original", "speed": 0.0}, r"^speed must be a finite number > 0, not 0\.0$"),
        ({"timing": "think", "speed": float("inf")}, r"^speed must be a finite number > 0, not inf$"),
        ({"timing": "later"}, r"^timing must be 'asap', 'original', 'think' or a positive number, not 'later'$"),
    ],
)
def test_options_reject_bad_timing(options: Dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReplayOptions(dry_run=True, **options)


@pytest.mark.parametrize(
    "options, mode, speed",
    [
        ({}, "asap", None),
        ({"timing": "original"}, "original", 1.0),
        ({"timing": "think", "speed": 0.5}, "think", 0.5),
        ({"timing": 8}, "original", 8.0),
    ],
)
def test_options_timing_mode_and_speed(options: Dict[str, Any], mode: str, speed: Any) -> None:
    replay_options = ReplayOptions(dry_run=True, **options)

    assert replay_options.timing_mode() == mode
    assert replay_options.speed_factor() == speed


# -- the command, in real time ------------------------------------------------------------


def _short_trace(path: Path, pid: int, offset_us: int) -> Path:
    events = [
        call("open", BASE + offset_us, pid=pid, fname=f"/d/{pid}", flags=0o102, mode=0o644, ret=3)
    ]
    for number in range(1, 50):
        events.append(
            call("pwrite", BASE + offset_us + number * 1_000, pid=pid, fname=f"/d/{pid}", fd=3,
                 count=4096, offset=4096 * number, ret=4096)
        )
    return write_trace(path, events)


def _run_json(capsys: pytest.CaptureFixture[str], *arguments: str) -> Dict[str, Any]:
    code = main(["replay", *arguments, "--json", "-", "--quiet"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_cli_original_timing_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = _short_trace(tmp_path / "a.pfw", 1, 0)

    data = _run_json(capsys, str(trace), "--root", str(tmp_path / "root"), "--timing", "original", "--speed", "2", "--processes", "1")

    timing = data["timing"]
    assert timing["mode"] == "original"
    assert timing["speed"] == 2.0
    assert timing["expected_s"] == pytest.approx((49 * 1_000 + 1) / 2e6)
    # The last call cannot start before it is due.
    assert timing["elapsed_s"] >= 49 * 1_000 / 2e6
    assert timing["lateness"]["replayer"]["count"] == 50
    assert timing["lateness"]["busy"]["count"] == 50
    assert sum(count for _, count in timing["lateness"]["replayer"]["histogram"]) == 50


def test_cli_two_processes_share_origin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _short_trace(tmp_path / "a.pfw", 1, 0)
    second = _short_trace(tmp_path / "b.pfw", 2, 100_000)

    data = _run_json(capsys, str(first), str(second), "--root", str(tmp_path / "root"), "--timing", "original", "--processes", "2")

    timing = data["timing"]
    assert [row["role"] for row in data["processes"]] == ["main", "worker", "worker"]
    assert timing["lateness"]["replayer"]["count"] == 100
    assert timing["expected_s"] == pytest.approx((100_000 + 49 * 1_000 + 1) / 1e6)
    # The second file's last call is due 149 ms after the common origin.
    assert timing["elapsed_s"] >= (100_000 + 49 * 1_000) / 1e6


def test_cli_text_summary_prints_lateness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = _short_trace(tmp_path / "a.pfw", 1, 0)

    code = main(["replay", str(trace), "--root", str(tmp_path / "root"), "--timing", "think", "--speed", "4", "--processes", "1"])

    out = capsys.readouterr().out
    assert code == 0
    assert "  timing   think at speed 4, elapsed " in out
    assert "  lateness replayer p50 " in out


def test_sharded_replayer_timing_matches_counts(tmp_path: Path) -> None:
    first = _short_trace(tmp_path / "a.pfw", 1, 0)
    second = _short_trace(tmp_path / "b.pfw", 2, 0)
    options = ReplayOptions(root=str(tmp_path / "root"), timing=20.0)

    summary = ShardedReplayer([str(first), str(second)], options, 2).run()

    assert summary.events_replayed == 100
    assert summary.timing["speed"] == 20.0
    assert summary.timing["lateness"]["busy"]["count"] == 100
