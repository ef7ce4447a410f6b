from __future__ import annotations

import threading

import pytest

import greenpipe
from greenpipe import Cancelled
from greenpipe._errors import ExceptionGroup
from greenpipe.testing import Sequencer, VirtualClock, wait_all_blocked


def run(fn, *args, threads=2, **kwargs):
    return greenpipe.run(fn, *args, threads=threads, **kwargs)


# -- spawn and results ---------------------------------------------------------


def test_spawn_returns_future_with_result():
    def body(scope):
        future = scope.spawn(lambda s, x: x + 1, 41, name="adder")
        return future.name, future.result(), future.done(), future.exception()

    assert run(body) == ("adder", 42, True, None)


def test_future_result_timeout_raises_timeout_error():
    clock = VirtualClock()

    def body(scope):
        slow = scope.spawn(lambda s: greenpipe.sleep(10), name="slow")
        with pytest.raises(TimeoutError, match=r"^'slow' did not finish within 1.0 s$"):
            slow.result(timeout=1)
        assert clock.now() == 1.0
        return slow.result()

    assert run(body, clock=clock) is None


def test_future_exception_marks_retrieved():
    def body(scope):
        future = scope.spawn(lambda s: 1 / 0)
        error = future.exception()
        return type(error)

    assert run(body) is ZeroDivisionError


def test_done_callback_runs_once_done():
    seen = []

    def body(scope):
        future = scope.spawn(lambda s: "value")
        future.add_done_callback(lambda f: seen.append(f.result()))
        scope.join_all()
        future.add_done_callback(lambda f: seen.append("late"))

    run(body)

    assert seen == ["value", "late"]


# -- joining and exceptions ----------------------------------------------------


def test_join_all_waits_for_every_child():
    finished = []

    def child(scope, index):
        greenpipe.sleep(index)
        finished.append(index)

    def body(scope):
        for index in range(5):
            scope.spawn(child, index)
        scope.join_all()
        return sorted(finished)

    assert run(body, clock=VirtualClock()) == [0, 1, 2, 3, 4]


def test_task_joins_its_children_before_finishing():
    order = []

    def grandchild(scope):
        greenpipe.sleep(1)
        order.append("grandchild")

    def child(scope):
        scope.spawn(grandchild)
        order.append("child body")

    def body(scope):
        scope.spawn(child).result()
        order.append("child done")

    run(body, clock=VirtualClock())

    assert order == ["child body", "grandchild", "child done"]


def test_join_all_raises_single_failure_as_itself():
    def body(scope):
        scope.spawn(lambda s: 1 / 0)
        scope.join_all()

    with pytest.raises(ZeroDivisionError):
        run(body)


def test_join_all_raises_several_failures_as_group():
    def body(scope):
        scope.spawn(lambda s: 1 / 0)
        scope.spawn(lambda s: {}["key"])
        scope.join_all()

    with pytest.raises(ExceptionGroup) as info:
        run(body)

    kinds = sorted(type(error).__name__ for error in info.value.exceptions)
    assert kinds == ["KeyError", "ZeroDivisionError"]


def test_unretrieved_failure_raised_at_task_end():
    def body(scope):
        scope.spawn(lambda s: 1 / 0)

    with pytest.raises(ZeroDivisionError):
        run(body)


def test_retrieved_failure_is_not_raised_again():
    def body(scope):
        future = scope.spawn(lambda s: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            future.result()
        scope.join_all()
        return "ok"

    assert run(body) == "ok"


def test_failure_does_not_cancel_siblings_by_default():
    def sibling(scope):
        greenpipe.sleep(5)
        return "finished"

    def body(scope):
        def inner(s):
            s.spawn(lambda s2: 1 / 0)
            return s.spawn(sibling)

        holder = []
        with pytest.raises(ZeroDivisionError):
            scope.scope(lambda s: holder.append(inner(s)))
        return holder[0].result()

    assert run(body, clock=VirtualClock()) == "finished"


def test_fail_fast_cancels_siblings():
    log = []

    def sibling(scope):
        try:
            greenpipe.sleep(100)
        except Cancelled:
            log.append("sibling cancelled")
            raise

    def failing(scope):
        greenpipe.sleep(1)
        raise ValueError("first failure")

    def inner(scope):
        scope.spawn(sibling)
        scope.spawn(failing)
        scope.join_all()

    def body(scope):
        with pytest.raises(ValueError, match="first failure"):
            scope.scope(inner, fail_fast=True)
        return log

    assert run(body, clock=VirtualClock()) == ["sibling cancelled"]


def test_body_failure_cancels_children_and_groups_errors():
    def child(scope):
        greenpipe.sleep(100)

    def inner(scope):
        scope.spawn(child)
        scope.spawn(lambda s: 1 / 0)
        greenpipe.sleep(1)
        raise KeyError("body")

    def body(scope):
        scope.scope(inner)

    with pytest.raises(ExceptionGroup) as info:
        run(body, clock=VirtualClock())

    kinds = [type(error).__name__ for error in info.value.exceptions]
    assert kinds == ["KeyError", "ZeroDivisionError"]


def test_scope_returns_body_value():
    def body(scope):
        return scope.scope(lambda s, x: x * 3, 7)

    assert run(body) == 21


def test_spawn_into_ended_scope_raises():
    def body(scope):
        holder = []
        scope.scope(lambda s: holder.append(s))
        with pytest.raises(RuntimeError, match="has ended"):
            holder[0].spawn(lambda s: None)

    run(body)


# -- cancellation --------------------------------------------------------------


def test_cancel_before_start_never_runs_body():
    ran = []

    def body(scope):
        future = scope.spawn(lambda s: ran.append(True))
        assert future.cancel() is True
        scope.join_all()
        return future.cancelled()

    assert run(body, threads=1) is True
    assert ran == []


def test_cancelled_is_not_failed():
    def child(scope):
        greenpipe.sleep(100)

    def body(scope):
        future = scope.spawn(child)
        wait_all_blocked()
        future.cancel()
        scope.join_all()
        return future.cancelled(), isinstance(future.exception(), Cancelled)

    assert run(body, clock=VirtualClock()) == (True, True)


def test_result_of_cancelled_task_raises_cancelled():
    def body(scope):
        future = scope.spawn(lambda s: greenpipe.sleep(100))
        wait_all_blocked()
        future.cancel()
        with pytest.raises(Cancelled):
            future.result()

    run(body, clock=VirtualClock())


def test_cancel_runs_finally_and_reaches_grandchildren():
    log = []

    def grandchild(scope):
        try:
            greenpipe.sleep(100)
        finally:
            log.append("grandchild finally")

    def child(scope):
        scope.spawn(grandchild)
        try:
            greenpipe.sleep(100)
        finally:
            log.append("child finally")

    def body(scope):
        future = scope.spawn(child)
        wait_all_blocked()
        future.cancel()
        scope.join_all()

    run(body, clock=VirtualClock())

    assert sorted(log) == ["child finally", "grandchild finally"]


def test_cancel_is_level_triggered():
    def child(scope):
        caught = 0
        for _ in range(3):
            try:
                greenpipe.sleep(1)
            except Cancelled:
                caught += 1
        return caught

    def body(scope):
        future = scope.spawn(child)
        wait_all_blocked()
        future.cancel()
        return future.result()

    assert run(body, clock=VirtualClock()) == 3


def test_scope_cancel_flag_and_polling():
    def poller(scope):
        steps = 0
        while not scope.is_cancellation_requested():
            steps += 1
            greenpipe.sleep(1)
        return steps

    def body(scope):
        future = scope.spawn(poller)
        greenpipe.sleep(3.5)
        scope.cancel()
        with pytest.raises(Cancelled):
            future.result()

    run(body, clock=VirtualClock())


def test_request_cancellation_alias():
    assert greenpipe.CoroScope.request_cancellation is greenpipe.CoroScope.cancel


def test_nested_scope_cancel_returns_none_and_outer_continues():
    def inner(scope):
        scope.cancel()
        greenpipe.sleep(100)
        return "unreachable"

    def body(scope):
        value = scope.scope(inner)
        greenpipe.sleep(1)
        return value, scope.is_cancellation_requested()

    assert run(body, clock=VirtualClock()) == (None, False)


def test_outer_cancel_propagates_through_nested_scope():
    def body(scope):
        def inner(s):
            greenpipe.sleep(100)

        def outer(s):
            s.scope(inner)
            return "not cancelled"

        future = scope.spawn(outer)
        wait_all_blocked()
        future.cancel()
        with pytest.raises(Cancelled):
            future.result()

    run(body, clock=VirtualClock())


def test_maybe_yield_is_cancellation_point():
    def spinner(scope):
        while True:
            scope.maybe_yield()

    def body(scope):
        future = scope.spawn(spinner)
        greenpipe.sleep(0)
        future.cancel()
        scope.join_all()
        return future.cancelled()

    assert run(body, threads=1) is True


def test_maybe_yield_lets_other_tasks_run():
    progress = []

    def spinner(scope, stop):
        while not stop:
            scope.maybe_yield()
        return "stopped"

    def body(scope):
        stop: list[bool] = []
        future = scope.spawn(spinner, stop)
        greenpipe.sleep(0)
        progress.append("main ran")
        stop.append(True)
        return future.result()

    assert run(body, threads=1) == "stopped"
    assert progress == ["main ran"]


def test_cancel_from_foreign_thread():
    started = threading.Event()
    with greenpipe.Executor(2) as executor:

        def body(scope):
            started.set()
            greenpipe.sleep(3600)

        future = executor.submit(body)
        assert started.wait(10)
        future.cancel()

        with pytest.raises(Cancelled):
            future.result(timeout=10)


def test_cancel_of_finished_task_returns_false():
    def body(scope):
        future = scope.spawn(lambda s: 1)
        future.result()
        return future.cancel()

    assert run(body) is False


# -- offloaded calls -------------------------------------------------------------


def test_spawn_io_runs_in_other_thread_and_hub_keeps_running():
    release = threading.Event()
    main_ident = []

    def blocking():
        assert release.wait(10)
        return threading.get_ident()

    def body(scope):
        main_ident.append(threading.get_ident())
        future = scope.spawn_io(blocking)
        other = scope.spawn(lambda s: "other ran")
        assert other.result() == "other ran"
        release.set()
        return future.result()

    io_ident = run(body, threads=1)

    assert io_ident != main_ident[0]


def test_spawn_io_failure_raised_at_scope_end():
    def broken():
        raise OSError("disk gone")

    def body(scope):
        scope.spawn_io(broken)

    with pytest.raises(OSError, match="disk gone"):
        run(body)


def test_spawn_io_not_counted_as_deadlock():
    release = threading.Event()

    def blocking():
        release.wait(10)
        return "done"

    def body(scope):
        future = scope.spawn_io(blocking)
        threading.Timer(0.2, release.set).start()
        return future.result()

    assert greenpipe.run(body, threads=1, deadlock_grace=0.01) == "done"


# -- current scope ---------------------------------------------------------------


def test_current_scope_is_innermost():
    def body(scope):
        outer = greenpipe.current_scope() is scope
        inner = scope.scope(lambda s: greenpipe.current_scope() is s)
        return outer, inner

    assert run(body) == (True, True)
    assert greenpipe.current_scope() is None


def test_sequencer_orders_tasks():
    seq = Sequencer()
    order = []

    def step(scope, position):
        with seq(position):
            order.append(position)

    def body(scope):
        for position in (3, 1, 0, 2):
            scope.spawn(step, position)

    run(body, threads=2)

    assert order == [0, 1, 2, 3]


def test_sequencer_position_used_twice_raises():
    seq = Sequencer()
    with seq(0):
        pass
    with pytest.raises(RuntimeError, match="position 0 was already used"):
        with seq(0):
            pass
