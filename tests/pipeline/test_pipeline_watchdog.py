from __future__ import annotations

import logging
import re
import time

import pytest

import greenpipe
from greenpipe import DeadlockError, GreenpipeError
from greenpipe._compat import RealEvent
from greenpipe.pipeline import (
    Pipeline,
    PipelineConfig,
    PipelineTimeoutError,
    TaskState,
    TaskTimeoutError,
    make_task,
)
from greenpipe.testing import VirtualClock


def virtual_config(clock: VirtualClock) -> PipelineConfig:
    return (
        PipelineConfig()
        .with_name("watched")
        .with_compute_threads(2)
        .with_clock(clock)
        .with_watchdog(interval=0.01)
    )


class _EventOnMessage(logging.Handler):
    """Sets an event when a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text = text
        self.seen = RealEvent()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.records.append(record)
            self.seen.set()


@pytest.fixture
def hold_handler():
    handler = _EventOnMessage("held its hub")
    logger = logging.getLogger("greenpipe.pipeline")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def spin_until(event: RealEvent, limit: float = 10.0) -> None:
    """Hold the hub in a busy loop until ``event`` is set (at most ``limit`` s)."""
    deadline = time.perf_counter() + limit
    while not event.is_set() and time.perf_counter() < deadline:
        pass


# -- errors --------------------------------------------------------------------


def test_timeout_errors_are_greenpipe_and_timeout_errors():
    assert issubclass(PipelineTimeoutError, GreenpipeError)
    assert issubclass(PipelineTimeoutError, TimeoutError)
    assert issubclass(TaskTimeoutError, PipelineTimeoutError)


# -- global timeout ---------------------------------------------------------------


def test_global_timeout_cancels_running_tasks_virtual_clock():
    clock = VirtualClock()
    finally_ran = []

    def slow(scope):
        try:
            greenpipe.sleep(60)
        finally:
            finally_ran.append("slow")

    quick = make_task(lambda s: greenpipe.sleep(1), name="quick")
    slow_task = make_task(slow, name="slow")
    other = make_task(lambda s: greenpipe.sleep(50), name="other")
    after = slow_task.then(lambda s, x: x, name="after")

    cfg = virtual_config(clock).with_global_timeout(5)
    with pytest.raises(PipelineTimeoutError) as info:
        Pipeline(cfg).set_source([quick, slow_task, other]).execute()

    error = info.value
    assert str(error) == "pipeline 'watched' timed out after 5 s; running tasks: 'slow', 'other'"
    assert error.running_tasks == ("slow", "other")
    assert error.seconds == 5.0
    assert clock.now() == 5.0
    assert finally_ran == ["slow"]
    assert quick.state is TaskState.SUCCEEDED
    assert slow_task.state is TaskState.CANCELLED
    assert other.state is TaskState.CANCELLED
    assert after.state is TaskState.SKIPPED


def test_global_timeout_real_clock_within_one_interval():
    interval = 0.05
    limit = 0.3
    cfg = (
        PipelineConfig()
        .with_name("real")
        .with_compute_threads(2)
        .with_watchdog(interval=interval)
        .with_global_timeout(limit)
    )
    task = make_task(lambda s: greenpipe.sleep(3600), name="sleeper")

    started = time.monotonic()
    with pytest.raises(PipelineTimeoutError, match=r"^pipeline 'real' timed out after 0.3 s; running tasks: 'sleeper'$"):
        Pipeline(cfg).set_source(task).execute()
    elapsed = time.monotonic() - started

    assert elapsed >= limit
    # One interval of lateness, plus slack for a loaded test machine.
    assert elapsed < limit + interval + 1.0


# -- per-task timeout ---------------------------------------------------------------


def test_task_timeout_counts_from_each_task_start():
    clock = VirtualClock()
    first = make_task(lambda s: greenpipe.sleep(2) or "first", name="first")
    second = first.then(lambda s, x: greenpipe.sleep(2) or x + " second", name="second")

    cfg = virtual_config(clock).with_task_timeout(3)
    result = Pipeline(cfg).set_source(first).set_destination(second).execute()

    assert result == "first second"
    assert clock.now() == 4.0


def test_task_timeout_cancels_task_and_names_it():
    clock = VirtualClock()
    cancelled = []

    def stuck(scope):
        try:
            greenpipe.sleep(100)
        except greenpipe.Cancelled:
            cancelled.append(clock.now())
            raise

    stuck_task = make_task(stuck, name="stuck")
    child = stuck_task.then(lambda s, x: x, name="child")
    fine = make_task(lambda s: greenpipe.sleep(2) or "fine", name="fine")

    cfg = virtual_config(clock).with_task_timeout(3).with_failure_policy("continue")
    with pytest.raises(TaskTimeoutError) as info:
        Pipeline(cfg).set_source([stuck_task, fine]).execute()

    error = info.value
    assert str(error) == "task 'stuck' of pipeline 'watched' timed out after 3 s and was cancelled"
    assert error.task_name == "stuck"
    assert error.__notes__ == ["raised by task 'stuck' of pipeline 'watched'"]
    assert cancelled == [3.0]
    assert stuck_task.state is TaskState.FAILED
    assert child.state is TaskState.SKIPPED
    assert fine.get() == "fine"


def test_task_timeout_covers_join_of_children():
    clock = VirtualClock()

    def spawner(scope):
        scope.spawn(lambda s: greenpipe.sleep(10), name="grandchild")
        return "returned at once"

    cfg = virtual_config(clock).with_task_timeout(4)
    with pytest.raises(TaskTimeoutError, match=r"^task 'spawner' of pipeline 'watched' timed out after 4 s"):
        Pipeline(cfg).set_source(make_task(spawner, name="spawner")).execute()

    assert clock.now() == 4.0


# -- hub holders ---------------------------------------------------------------------


def test_hub_holder_is_logged_with_name_and_stack(hold_handler):
    cfg = (
        PipelineConfig()
        .with_name("busy")
        .with_compute_threads(2)
        .with_watchdog(interval=0.01, hold_threshold=0.05)
    )

    def spinner_body(scope):
        spin_until(hold_handler.seen)
        return "done"

    task = make_task(spinner_body, name="spinner")
    pipeline = Pipeline(cfg).set_source(task).set_destination(task)

    assert pipeline.execute() == "done"

    assert hold_handler.seen.is_set()
    record = hold_handler.records[0]
    assert record.name == "greenpipe.pipeline._watchdog"
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert re.match(r"^pipeline 'busy': task 'spinner' held its hub \(worker \d\) for \d+\.\d\d s", message)
    assert "in spinner_body" in message
    assert "in spin_until" in message
    holders = pipeline.hub_holders()
    assert [holder.task_name for holder in holders] == ["spinner"]
    assert holders[0].seconds >= 0.05


def test_hub_holder_report_joins_final_error(hold_handler):
    cfg = (
        PipelineConfig()
        .with_name("busy")
        .with_compute_threads(2)
        .with_watchdog(interval=0.01, hold_threshold=0.05)
    )

    def spin_then_fail(scope):
        spin_until(hold_handler.seen)
        raise ValueError("gave up")

    with pytest.raises(ValueError) as info:
        Pipeline(cfg).set_source(make_task(spin_then_fail, name="spinner")).execute()

    notes = info.value.__notes__
    assert notes[0] == "raised by task 'spinner' of pipeline 'busy'"
    assert notes[1].startswith("task 'spinner' held its hub (worker ")
    assert "its stack then:" in notes[1]
    assert "in spin_then_fail" in notes[1]


# -- deadlocks and idleness -------------------------------------------------------------


def test_runtime_deadlock_raises_deadlock_error():
    channel = greenpipe.make_channel(1)

    def waiter(scope):
        return channel.receive()

    wait_task = make_task(waiter, name="waiter")
    after = wait_task.then(lambda s, x: x, name="after")
    cfg = PipelineConfig().with_name("stuck").with_compute_threads(2)

    with pytest.raises(DeadlockError) as info:
        Pipeline(cfg).set_source(wait_task).execute()

    message = str(info.value)
    assert message.startswith("deadlock in stuck: all 2 tasks are waiting and nothing can wake them")
    assert re.search(
        r"task 'waiter' waits on <Channel capacity=1 .*> at .*test_pipeline_watchdog.py:\d+ in waiter",
        message,
    )
    assert "task 'stuck scheduler' waits on" in message
    assert wait_task.state is TaskState.CANCELLED
    assert after.state is TaskState.SKIPPED


def test_deadlock_timeout_fails_a_pipeline_that_stopped_moving(caplog):
    cfg = (
        PipelineConfig()
        .with_name("parked")
        .with_compute_threads(1)
        .with_watchdog(interval=0.01)
        .with_executor_idle_timeout(0.05)
        .with_executor_deadlock_timeout(0.2)
    )
    task = make_task(lambda s: greenpipe.sleep(3600), name="sleeper")

    with caplog.at_level(logging.WARNING, logger="greenpipe.pipeline"):
        with pytest.raises(DeadlockError) as info:
            Pipeline(cfg).set_source(task).execute()

    message = str(info.value)
    assert re.match(
        r"^deadlock in pipeline 'parked': every task waited for \d+\.\d s with no progress "
        r"\(deadlock timeout 0.2 s\)\n",
        message,
    )
    assert re.search(r"task 'sleeper' waits on sleep\(3600\) at .*in <lambda>", message)
    assert "pipeline 'parked' made no progress for" in caplog.text
    assert task.state is TaskState.CANCELLED


def test_polling_task_is_not_idle():
    # A task that wakes up regularly makes progress, so the deadlock timeout
    # must not fire even though it never finishes a piece of the graph.
    stop = RealEvent()
    polls = []

    def poller(scope):
        while not stop.is_set():
            polls.append(1)
            if len(polls) == 30:
                stop.set()
            greenpipe.sleep(0.01)
        return len(polls)

    cfg = (
        PipelineConfig()
        .with_name("polling")
        .with_compute_threads(1)
        .with_watchdog(interval=0.01)
        .with_executor_deadlock_timeout(0.1)
    )
    task = make_task(poller, name="poller")

    assert Pipeline(cfg).set_source(task).set_destination(task).execute() == 30
