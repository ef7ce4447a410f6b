from __future__ import annotations

import pytest

import greenpipe
from greenpipe.testing import VirtualClock, wait_all_blocked


def test_virtual_clock_runs_timeouts_without_waiting():
    clock = VirtualClock(start=100.0)
    wakes = []

    def sleeper(scope, seconds):
        greenpipe.sleep(seconds)
        wakes.append((seconds, clock.now()))

    def body(scope):
        for seconds in (3600, 60, 1):
            scope.spawn(sleeper, seconds)

    greenpipe.run(body, threads=2, clock=clock)

    assert wakes == [(1, 101.0), (60, 160.0), (3600, 3700.0)]


def test_virtual_clock_waits_for_running_tasks():
    clock = VirtualClock()

    def busy(scope):
        total = 0
        for index in range(200_000):
            total += index
        return clock.now()

    def body(scope):
        busy_future = scope.spawn(busy)
        greenpipe.sleep(5)
        return busy_future.result(), clock.now()

    assert greenpipe.run(body, threads=2, clock=clock) == (0.0, 5.0)


def test_wait_all_blocked_sees_settled_state():
    clock = VirtualClock()
    states = []

    def child(scope, index):
        states.append(f"started {index}")
        greenpipe.sleep(10)

    def body(scope):
        for index in range(3):
            scope.spawn(child, index)
        wait_all_blocked()
        snapshot = sorted(states)
        scope.cancel()
        return snapshot, clock.now()

    snapshot, now = greenpipe.run(body, threads=2, clock=clock)

    assert snapshot == ["started 0", "started 1", "started 2"]
    assert now == 0.0


def test_wait_all_blocked_returns_before_clock_moves():
    clock = VirtualClock()

    def body(scope):
        scope.spawn(lambda s: greenpipe.sleep(10))
        wait_all_blocked()
        return clock.now()

    assert greenpipe.run(body, threads=1, clock=clock) == 0.0


def test_wait_all_blocked_outside_task_raises():
    with pytest.raises(RuntimeError, match="must be called from a task"):
        wait_all_blocked()
