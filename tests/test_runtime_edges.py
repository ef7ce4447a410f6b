"""Edge cases of cancellation, deadlock detection and bad input."""

from __future__ import annotations

import gc
import logging
import math
import random
import threading
import time
import weakref

import gevent
import pytest

import greenpipe
from greenpipe import Cancelled, DeadlockError, Executor, coroutine
from greenpipe._compat import RealEvent
from greenpipe.testing import Sequencer, VirtualClock


# -- cancellation ----------------------------------------------------------------


def test_handled_cancel_not_redelivered():
    def main(scope):
        def inner(s):
            delivered = RealEvent()

            def cancel_from_thread():
                s.cancel()
                delivered.set()

            threading.Thread(target=cancel_from_thread).start()
            # Run, without parking, until the cancellation has arrived.
            while not delivered.is_set():
                pass
            greenpipe.sleep(1)

        first = scope.scope(inner)
        gevent.sleep(0.01)
        return first, scope.is_cancellation_requested()

    assert greenpipe.run(main, threads=2) == (None, False)


def test_gevent_wait_of_cancelled_task_raises_cancelled():
    def main(scope):
        def child(s):
            try:
                greenpipe.sleep(100)
            except Cancelled:
                pass
            gevent.sleep(100)

        future = scope.spawn(child)
        greenpipe.sleep(0.01)
        future.cancel()
        scope.join_all()
        return future.cancelled()

    assert greenpipe.run(main, threads=1) is True


def test_shield_lets_cleanup_wait_after_cancel():
    log = []

    def child(scope):
        try:
            greenpipe.sleep(100)
        finally:
            with greenpipe.shield():
                gevent.sleep(0.01)
                greenpipe.sleep(0.01)
                log.append("cleanup done")

    def main(scope):
        future = scope.spawn(child)
        greenpipe.sleep(0.01)
        future.cancel()
        future.cancel()
        scope.join_all()
        return future.cancelled()

    assert greenpipe.run(main, threads=2) is True
    assert log == ["cleanup done"]


def test_cancel_still_pending_after_shield():
    def main(scope):
        def child(s):
            with greenpipe.shield():
                greenpipe.sleep(1)
            greenpipe.sleep(1)
            return "not cancelled"

        future = scope.spawn(child)
        greenpipe.sleep(0.5)
        future.cancel()
        scope.join_all()
        return future.cancelled()

    assert greenpipe.run(main, threads=1, clock=VirtualClock()) is True


def test_timers_served_during_spinning_task():
    rounds = []
    done = []

    def spinner(scope):
        while not done:
            started = time.perf_counter()
            while time.perf_counter() - started < 0.005:
                pass
            scope.maybe_yield()
            rounds.append(1)

    def sleeper(scope):
        greenpipe.sleep(0.01)
        done.append(True)

    def main(scope):
        scope.spawn(spinner)
        scope.spawn(sleeper)

    greenpipe.run(main, threads=1)

    # The sleeper is due after two 5 ms rounds. A scheduler that kept the
    # gevent loop from its timers between timeslices needed about a hundred.
    assert done == [True]
    assert len(rounds) < 20


# -- deadlocks ---------------------------------------------------------------------


def _self_wait(scope):
    box = [None]
    box[0] = scope.spawn(lambda s: box[0].result(), name="self-wait")
    box[0].result()


def test_executor_survives_deadlock_and_reports_the_next_one():
    with Executor(2) as executor:
        finished = executor.submit(lambda s: 42)
        assert finished.result() == 42

        with pytest.raises(DeadlockError):
            executor.submit(_self_wait).result(timeout=10)

        assert finished.result() == 42
        assert executor.submit(lambda s: "still works").result(timeout=10) == "still works"
        with pytest.raises(DeadlockError):
            executor.submit(_self_wait).result(timeout=10)


def test_finished_futures_are_not_retained():
    with Executor(1) as executor:
        future = executor.submit(lambda s: bytearray(10))
        future.result()
        ref = weakref.ref(future)
        del future
        gc.collect()

        assert ref() is None


def test_open_scope_deadlock_raises():
    with Executor(2) as executor:
        with pytest.raises(DeadlockError, match="self-wait"):
            with executor.open_scope() as scope:
                scope.spawn(_self_wait)


def test_waiting_on_another_executor_is_not_a_deadlock():
    def outer(scope):
        return greenpipe.run(lambda s: greenpipe.sleep(0.2) or "inner", threads=1)

    assert greenpipe.run(outer, threads=1, deadlock_grace=0.01) == "inner"


def test_gevent_greenlet_waker_not_deadlock():
    def main(scope):
        seq = Sequencer()

        def releaser():
            gevent.sleep(0.2)
            with seq(0):
                pass

        helper = gevent.spawn(releaser)
        with seq(1):
            pass
        helper.join()
        return "released"

    assert greenpipe.run(main, threads=1, deadlock_grace=0.01) == "released"


def test_gevent_greenlet_busy_hub_not_deadlock():
    """A worker hub busy with a gevent greenlet is not idle, so no deadlock."""
    with Executor(1, deadlock_grace=0.01) as executor:
        checks = 0
        checked_twice = RealEvent()
        on_quiet = executor._on_quiet

        def counting_on_quiet():
            nonlocal checks
            on_quiet()
            checks += 1
            if checks == 2:
                checked_twice.set()

        executor._on_quiet = counting_on_quiet

        def main(scope):
            seq = Sequencer()

            def releaser():
                # Keep the hub busy without switching (a real lock wait, as
                # in a blocking C call) until the monitor has checked twice
                # while the only task was parked.
                assert checked_twice.wait(10), "the deadlock monitor never ran"
                with seq(0):
                    pass

            helper = gevent.spawn(releaser)
            with seq(1):
                pass
            helper.join()
            return "released"

        assert executor.run(main) == "released"


def test_deadlock_report_accepts_non_string_names():
    def main(scope):
        box = {}
        box["a"] = scope.spawn(lambda s: box["b"].result(), name=123)
        box["b"] = scope.spawn(lambda s: box["a"].result(), name="b")
        scope.join_all()

    with pytest.raises(DeadlockError, match="task '123' waits on the result of 'b'"):
        greenpipe.run(main, threads=1)


def test_unretrieved_root_failure_is_logged(caplog):
    with Executor(1) as executor:
        future = executor.submit(lambda s: 1 / 0, name="lost")
        future._wait_done(None)
        del future
    with caplog.at_level(logging.ERROR, logger="greenpipe"):
        gc.collect()

    assert "task 'lost' failed and its exception was never retrieved" in caplog.text


# -- gevent waiters ------------------------------------------------------------------


def test_gevent_timeout_race_no_stray_switch():
    errors = []
    with Executor(1) as executor:

        def racer(seed):
            rng = random.Random(seed)
            future = executor.submit(lambda s: greenpipe.sleep(0.002))
            try:
                with gevent.Timeout(0.002 + rng.random() * 0.001):
                    future.result()
            except gevent.Timeout:
                pass
            try:
                gevent.sleep(0.01)
            except BaseException as error:  # noqa: BLE001 - recorded for the assert
                errors.append(error)

        racers = [gevent.spawn(racer, seed) for seed in range(200)]
        gevent.joinall(racers, timeout=30)

    assert errors == []
    assert all(racer.dead for racer in racers)


def test_gevent_waiter_timeout_counts_from_now():
    """A timeout on a hub whose loop has not run for a while still lasts in full."""
    with Executor(1) as executor:
        future = executor.submit(lambda s: greenpipe.sleep(60))
        # Resumed by a timer rather than by a loop callback, where gevent
        # would refresh the loop's cached time for every timer started.
        gevent.sleep(0.001)
        # Keep the loop from running, as a CPU-bound greenlet would, so its
        # cached time falls half a second behind.
        busy_until = time.monotonic() + 0.5
        while time.monotonic() < busy_until:
            pass
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            future.result(timeout=0.3)
        waited = time.monotonic() - started

    assert waited > 0.25


def test_task_sleep_counts_from_now():
    """A task that held its hub for a while still sleeps in full afterwards."""

    def child(scope):
        # Keep the hub busy, so the loop's cached time falls half a
        # second behind.
        busy_until = time.monotonic() + 0.5
        while time.monotonic() < busy_until:
            pass
        started = time.monotonic()
        greenpipe.sleep(0.3)
        return time.monotonic() - started

    def main(scope):
        return scope.spawn(child).result()

    # A zero timeslice makes the child start in a scheduler tick that a
    # timer resumed, where gevent does not refresh the loop's cached time.
    with Executor(1, timeslice=0) as executor:
        slept = executor.run(main)

    assert slept > 0.25


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (None, TypeError, "seconds must be a number of seconds or a timedelta, not None"),
        (math.inf, ValueError, "seconds must be finite, not inf; use None to wait forever"),
        ("1", TypeError, "seconds must be a number of seconds or a timedelta, not '1'"),
    ],
)
def test_sleep_rejects_bad_durations(value, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        greenpipe.sleep(value)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"io_threads": "2"}, TypeError, "io_threads must be an int, not '2'"),
        ({"io_threads": 0}, ValueError, "io_threads must be >= 1, not 0"),
        ({"rng": 5}, TypeError, "rng must be a random.Random instance, not 5"),
        ({"clock": VirtualClock}, TypeError, "clock must be None or a greenpipe.testing.VirtualClock instance"),
        ({"clock": "virtual"}, TypeError, "clock must be None or a greenpipe.testing.VirtualClock instance"),
    ],
)
def test_executor_rejects_bad_options(kwargs, error, message):
    with pytest.raises(error, match=f"^{message}"):
        Executor(1, **kwargs)


def test_shutdown_rejects_bad_timeout():
    executor = Executor(1)
    with pytest.raises(ValueError, match=r"^timeout must be >= 0, not -1$"):
        executor.shutdown(timeout=-1)
    executor.shutdown()


def test_scope_of_non_callable_raises():
    def main(scope):
        scope.scope(5)

    with pytest.raises(TypeError, match=r"^scope\(\) needs a function, not 5$"):
        greenpipe.run(main, threads=1)


@pytest.mark.parametrize("position", [-1, "a", 1.5])
def test_sequencer_rejects_bad_positions(position):
    with pytest.raises(ValueError, match="sequencer position must be an int >= 0"):
        with Sequencer()(position):
            pass


def test_spawn_coroutine_function_with_args_runs_it():
    @coroutine
    def triple(x):
        return 3 * x

    def main(scope):
        return scope.spawn(triple, 5).result()

    assert greenpipe.run(main, threads=1) == 15


def test_async_def_body_rejected():
    async def body(scope):
        return 1

    with pytest.raises(TypeError, match="is an 'async def' function"):
        greenpipe.run(body, threads=1)
