from __future__ import annotations

import hashlib
import random
import threading

import pytest

import greenpipe
from greenpipe import Executor, ExecutorShutdownError
from greenpipe._compat import RealEvent, allocate_lock, get_ident
from greenpipe.testing import VirtualClock, wait_all_blocked


def test_run_returns_value_and_passes_args():
    def body(scope, a, b):
        return a + b

    assert greenpipe.run(body, 2, 3, threads=1) == 5


def test_run_raises_task_exception():
    def body(scope):
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        greenpipe.run(body, threads=2)


@pytest.mark.parametrize("threads", [0, -1])
def test_executor_rejects_bad_thread_count(threads):
    with pytest.raises(ValueError, match=rf"^threads must be >= 1, not {threads}$"):
        Executor(threads)


def test_executor_rejects_non_int_threads():
    with pytest.raises(TypeError, match=r"^threads must be an int, not '2'$"):
        Executor("2")  # type: ignore[arg-type]


def test_workers_are_distinct_os_threads():
    tasks = 4
    lock = allocate_lock()
    arrived = []
    all_arrived = RealEvent()

    def blocking(scope):
        # A real OS wait: no task can pass until all of them hold a thread.
        with lock:
            arrived.append(1)
            if len(arrived) == tasks:
                all_arrived.set()
        assert all_arrived.wait(10)
        return get_ident()

    def body(scope):
        futures = [scope.spawn(blocking) for _ in range(tasks)]
        return {future.result() for future in futures}

    idents = greenpipe.run(body, threads=tasks + 1)

    assert len(idents) == tasks
    assert get_ident() not in idents


def test_idle_workers_steal_unstarted_tasks():
    with Executor(4, rng=random.Random(7)) as executor:

        def spin(scope):
            # Holds its hub without switching, so the others must steal.
            hashlib.sha256(b"x" * (1 << 22)).digest()

        def body(scope):
            for _ in range(64):
                scope.spawn(spin)

        executor.run(body)
        stats = executor.statistics()

    assert sum(stats["steals"]) > 0
    assert sum(stats["tasks_started"]) == 65
    assert sum(1 for started in stats["tasks_started"] if started) >= 2


def _interleaving(seed: int) -> list[str]:
    log: list[str] = []

    def worker(scope, name):
        for step in range(3):
            log.append(f"{name}{step}")
            greenpipe.sleep(0)

    def body(scope):
        for name in "abcdef":
            scope.spawn(worker, name)

    greenpipe.run(body, threads=1, rng=random.Random(seed), randomize=True)
    return log


def test_seeded_single_thread_run_repeats_exactly():
    first = _interleaving(1234)
    second = _interleaving(1234)
    others = {tuple(_interleaving(seed)) for seed in range(5)}

    assert first == second
    assert len(first) == 18
    assert len(others) > 1


def test_single_thread_default_order_is_stable():
    assert _interleaving_fifo() == _interleaving_fifo()


def _interleaving_fifo() -> list[str]:
    log: list[str] = []

    def worker(scope, name):
        for step in range(2):
            log.append(f"{name}{step}")
            greenpipe.sleep(0)

    def body(scope):
        for name in "abc":
            scope.spawn(worker, name)

    greenpipe.run(body, threads=1)
    return log


def test_shutdown_cancels_parked_tasks_in_their_own_thread():
    executor = Executor(2)
    record: list[tuple[str, int, int]] = []
    started = threading.Event()

    def parked(scope, index):
        home = get_ident()
        try:
            if index == 3:
                started.set()
            greenpipe.sleep(3600)
        finally:
            record.append(("finally", home, get_ident()))

    def body(scope):
        for index in range(4):
            scope.spawn(parked, index)
        scope.join_all()

    future = executor.submit(body)
    assert started.wait(10)
    executor.shutdown(timeout=10)

    assert future.cancelled()
    assert len(record) == 4
    assert all(home == ended for _, home, ended in record)


def test_submit_after_shutdown_raises():
    executor = Executor(1)
    executor.shutdown()

    with pytest.raises(ExecutorShutdownError, match="is shut down"):
        executor.submit(lambda scope: None)


def test_shutdown_twice_is_harmless():
    executor = Executor(1)
    executor.shutdown()
    executor.shutdown()


def test_run_from_own_task_is_rejected():
    with Executor(1) as executor:

        def body(scope):
            executor.run(lambda s: None)

        with pytest.raises(RuntimeError, match="cannot be called from one of its own tasks"):
            executor.run(body)


def test_submit_from_foreign_thread_and_wait():
    with Executor(2) as executor:
        results = []

        def call():
            results.append(executor.submit(lambda scope, x: x * 2, 21).result())

        thread = threading.Thread(target=call)
        thread.start()
        thread.join(10)

    assert results == [42]


def test_open_scope_joins_children_from_plain_thread():
    with Executor(2) as executor:
        with executor.open_scope() as scope:
            futures = [scope.spawn(lambda s, i: i + 1, i) for i in range(10)]

        assert [future.result() for future in futures] == list(range(1, 11))


def test_open_scope_raises_unretrieved_failure():
    with Executor(2) as executor:
        with pytest.raises(ZeroDivisionError):
            with executor.open_scope() as scope:
                scope.spawn(lambda s: 1 / 0)


def test_sleep_uses_virtual_clock():
    clock = VirtualClock()

    def body(scope):
        greenpipe.sleep(5)
        first = clock.now()
        greenpipe.sleep(timedelta_seconds(2.5))
        return first, clock.now()

    assert greenpipe.run(body, threads=2, clock=clock) == (5.0, 7.5)


def timedelta_seconds(seconds: float):
    from datetime import timedelta

    return timedelta(seconds=seconds)


def test_sleep_rejects_negative_duration():
    def body(scope):
        greenpipe.sleep(-1)

    with pytest.raises(ValueError, match=r"^seconds must be >= 0, not -1$"):
        greenpipe.run(body, threads=1)


def test_sleep_outside_task_blocks_thread():
    greenpipe.sleep(0)


def test_statistics_report_counters():
    with Executor(2) as executor:

        def body(scope):
            wait_all_blocked()
            return executor.statistics()

        stats = executor.run(body)

    assert stats["threads"] == 2
    assert stats["live_tasks"] == 1
    assert stats["io_in_flight"] == 0


def test_virtual_clock_serves_one_executor():
    clock = VirtualClock()
    with Executor(1, clock=clock):
        with pytest.raises(RuntimeError, match="already drives another executor"):
            Executor(1, clock=clock)


def test_hub_holders_reports_busy_task_with_stack():
    release = RealEvent()
    spinning = RealEvent()

    def busy_loop(scope):
        spinning.set()
        while not release.is_set():
            pass

    with Executor(2) as executor:
        future = executor.submit(busy_loop, name="spinner")
        assert spinning.wait(10)
        holders = []
        for _ in range(10_000):
            holders = executor.hub_holders(0.05)
            if holders:
                break
            RealEvent().wait(0.01)
        release.set()
        future.result(timeout=10)

    assert [holder.task_name for holder in holders] == ["spinner"]
    assert holders[0].seconds >= 0.05
    assert "in busy_loop" in holders[0].stack


def test_waiting_tasks_report_and_event_count():
    with Executor(1) as executor:

        def body(scope):
            scope.spawn(lambda s: greenpipe.sleep(100), name="sleeper")
            wait_all_blocked()
            first = executor.statistics()["events"]
            report = executor.waiting_tasks_report()
            second = executor.statistics()["events"]
            scope.cancel()
            return report, first, second

        report, first, second = executor.run(body, name="root")

    assert any(line.startswith("  task 'sleeper' waits on sleep(100) at ") for line in report)
    assert any(line.startswith("  task 'root' waits on nothing known") for line in report)
    assert first == second
