from __future__ import annotations

from datetime import timedelta

import pytest

import greenpipe
from greenpipe import Cancelled, WhenAnyResult, coroutine, when_all, when_any
from greenpipe.testing import VirtualClock


def run(fn, *args, threads=2):
    return greenpipe.run(fn, *args, threads=threads, clock=VirtualClock())


@coroutine
def after(seconds, value):
    greenpipe.sleep(seconds)
    return value


@coroutine
def fail_after_delay(seconds, message):
    greenpipe.sleep(seconds)
    raise ValueError(message)


def test_when_all_list_keeps_input_order():
    def body(scope):
        return when_all([after(3, "a"), after(1, "b"), after(2, "c")]).wait()

    assert run(body) == ["a", "b", "c"]


def test_when_all_variadic_returns_tuple():
    def body(scope):
        return when_all(after(1, 1), after(2, 2))

    def outer(scope):
        return body(scope).wait()

    assert run(outer) == (1, 2)


def test_when_all_runs_inputs_concurrently():
    clock = VirtualClock()

    def body(scope):
        when_all([after(5, None) for _ in range(10)]).wait()
        return clock.now()

    assert greenpipe.run(body, threads=2, clock=clock) == 5.0


def test_when_all_waits_for_all_then_raises_first_failure():
    finished = []

    @coroutine
    def slow_ok():
        greenpipe.sleep(10)
        finished.append("slow")
        return "slow"

    def body(scope):
        with pytest.raises(ValueError, match="^early$"):
            when_all([fail_after_delay(5, "late"), slow_ok(), fail_after_delay(1, "early")]).wait()
        return finished

    assert run(body) == ["slow"]


def test_when_all_accepts_running_futures():
    def body(scope):
        future = scope.spawn(lambda s: "spawned")
        return when_all([future, after(1, "lazy")]).wait()

    assert run(body) == ["spawned", "lazy"]


def test_when_all_rejects_non_awaitable():
    with pytest.raises(TypeError, match=r"takes CoroTasks, futures or objects with wait\(\), not 5"):
        when_all([5])


def test_when_any_first_finisher_wins_and_losers_cancelled():
    cancelled = []

    @coroutine
    def loser():
        try:
            greenpipe.sleep(100)
        except Cancelled:
            cancelled.append("loser")
            raise

    def body(scope):
        return when_any([loser(), after(2, "winner")]).wait()

    assert run(body) == WhenAnyResult(1, "winner")
    assert cancelled == ["loser"]


def test_when_any_lowest_index_among_done():
    def body(scope):
        first = scope.spawn(lambda s: "first")
        second = scope.spawn(lambda s: "second")
        scope.join_all()
        return when_any([second, first]).wait()

    assert run(body) == WhenAnyResult(0, "second")


def test_when_any_failing_winner_raises():
    def body(scope):
        when_any([fail_after_delay(1, "winner failed"), after(5, "slow")]).wait()

    with pytest.raises(ValueError, match="winner failed"):
        run(body)


def test_when_any_keep_losers_running():
    clock = VirtualClock()
    finished = []

    @coroutine
    def loser():
        greenpipe.sleep(5)
        finished.append(clock.now())

    def body(scope):
        result = when_any([loser(), after(1, "fast")], cancel_losers=False).wait()
        at_result = clock.now()
        scope.join_all()
        return result, at_result

    result, at_result = greenpipe.run(body, threads=2, clock=clock)

    assert result == WhenAnyResult(1, "fast")
    assert at_result == 1.0
    assert finished == [5.0]


def test_when_any_empty_raises():
    with pytest.raises(ValueError, match="needs at least one"):
        when_any([])


def test_timeout_reports_its_index():
    def body(scope):
        return when_any([after(10, "slow"), greenpipe.timeout(timedelta(seconds=3))]).wait()

    assert run(body) == WhenAnyResult(1, None)


def test_timeout_rejects_negative():
    with pytest.raises(ValueError, match=r"^seconds must be >= 0, not -2$"):
        greenpipe.timeout(-2)


@pytest.mark.parametrize(
    ("cache_delay", "disk_delay", "limit", "expected"),
    [
        (0.001, 0.5, 1.0, WhenAnyResult(0, "from cache")),
        (2.0, 0.5, 1.0, WhenAnyResult(1, "from disk")),
        (3.0, 2.0, 1.0, WhenAnyResult(2, None)),
    ],
    ids=["cache-first", "disk-first", "timeout-first"],
)
def test_race_of_cache_disk_and_timeout(cache_delay, disk_delay, limit, expected):
    clock = VirtualClock()
    finished = []

    @coroutine
    def cache_read():
        greenpipe.sleep(cache_delay)
        finished.append("cache")
        return "from cache"

    @coroutine
    def disk_read():
        greenpipe.sleep(disk_delay)
        finished.append("disk")
        return "from disk"

    def body(scope):
        result = when_any([cache_read(), disk_read(), greenpipe.timeout(limit)]).wait()
        return result, clock.now()

    result, now = greenpipe.run(body, threads=2, clock=clock)

    assert result == expected
    assert now == min(cache_delay, disk_delay, limit)
    assert len(finished) <= 1


def test_move_on_after_cancels_block_and_continues():
    clock = VirtualClock()

    def body(scope):
        with greenpipe.move_on_after(2) as deadline:
            greenpipe.sleep(10)
        after_block = clock.now()
        greenpipe.sleep(1)
        return deadline.cancelled_caught, after_block, clock.now()

    assert greenpipe.run(body, threads=1, clock=clock) == (True, 2.0, 3.0)


def test_move_on_after_not_triggered():
    def body(scope):
        with greenpipe.move_on_after(5) as deadline:
            greenpipe.sleep(1)
        return deadline.cancelled_caught

    assert run(body) is False


def test_fail_after_raises_timeout_error():
    def body(scope):
        with greenpipe.fail_after(timedelta(milliseconds=1500)):
            greenpipe.sleep(10)

    with pytest.raises(TimeoutError, match=r"^deadline of 1.5 s passed$"):
        run(body)


def test_deadline_does_not_swallow_outer_cancel():
    def body(scope):
        def inner(s):
            with greenpipe.move_on_after(50):
                greenpipe.sleep(100)
            return "continued"

        future = scope.spawn(inner)
        greenpipe.sleep(1)
        future.cancel()
        with pytest.raises(Cancelled):
            future.result()

    run(body)


def test_deadline_outside_task_raises():
    with pytest.raises(RuntimeError, match="must run inside a greenpipe task"):
        with greenpipe.move_on_after(1):
            pass
