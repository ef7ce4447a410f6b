from __future__ import annotations

import re

import pytest

import greenpipe
from greenpipe import DeadlockError
from greenpipe.testing import VirtualClock


def test_two_tasks_waiting_on_each_other():
    def body(scope):
        futures = {}

        def first(s):
            return futures["second"].result()

        def second(s):
            return futures["first"].result()

        futures["first"] = scope.spawn(first, name="first")
        futures["second"] = scope.spawn(second, name="second")
        scope.join_all()

    with pytest.raises(DeadlockError) as info:
        greenpipe.run(body, threads=2)

    message = str(info.value)
    assert message.startswith("deadlock in ")
    assert re.search(r"task 'first' waits on the result of 'second' at .*test_deadlock.py:\d+ in first", message)
    assert re.search(r"task 'second' waits on the result of 'first' at .*test_deadlock.py:\d+ in second", message)
    assert re.search(r"task '\S*body' waits on join of a scope in '\S*body' \(children: first, second\)", message)


def test_deadlock_cancels_tasks_so_finally_runs():
    log = []

    def stuck(scope, other):
        try:
            other[0].result()
        finally:
            log.append("finally")

    def body(scope):
        holder: list = []
        holder.append(scope.spawn(stuck, holder))
        scope.join_all()

    with pytest.raises(DeadlockError):
        greenpipe.run(body, threads=1)

    assert log == ["finally"]


def test_pending_timer_is_not_a_deadlock():
    def body(scope):
        greenpipe.sleep(0.05)
        return "woke"

    assert greenpipe.run(body, threads=1, deadlock_grace=0.001) == "woke"


def test_virtual_clock_deadlock_detected_after_timers():
    clock = VirtualClock()

    def body(scope):
        greenpipe.sleep(10)
        holder: list = []
        holder.append(scope.spawn(lambda s: holder[0].result(), name="self-wait"))
        scope.join_all()

    with pytest.raises(DeadlockError, match="task 'self-wait' waits on the result of 'self-wait'"):
        greenpipe.run(body, threads=2, clock=clock)
    assert clock.now() == 10.0


def test_detection_can_be_turned_off():
    from greenpipe import Executor

    with Executor(1, deadlock_grace=None) as executor:

        def body(scope):
            holder: list = []
            holder.append(scope.spawn(lambda s: holder[0].result()))
            scope.join_all()

        future = executor.submit(body)
        with pytest.raises(TimeoutError):
            future.result(timeout=0.3)
