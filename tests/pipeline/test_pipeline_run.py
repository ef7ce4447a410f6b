from __future__ import annotations

import logging
import re

import pytest

import greenpipe
from greenpipe import Cancelled
from greenpipe._errors import ExceptionGroup
from greenpipe.pipeline import (
    FailurePolicy,
    Pipeline,
    PipelineConfig,
    TaskState,
    make_task,
)
from greenpipe.testing import Sequencer, VirtualClock


def config(threads: int = 2, **kwargs) -> PipelineConfig:
    result = PipelineConfig().with_name("test").with_compute_threads(threads)
    if "clock" in kwargs:
        result.with_clock(kwargs["clock"])
    return result


# -- building ----------------------------------------------------------------


def test_make_task_default_name_is_qualname():
    def load(scope):
        return 1

    assert make_task(load).name.endswith("load")
    assert make_task(load, name="loader").name == "loader"


def test_make_task_rejects_uncallable():
    with pytest.raises(TypeError, match=r"^fn must be callable, not 3$"):
        make_task(3)


def test_depends_on_rejects_cycle():
    a = make_task(lambda s: 1, name="a")
    b = make_task(lambda s, x: x, name="b").depends_on(a)
    c = make_task(lambda s, x: x, name="c").depends_on(b)

    with pytest.raises(
        ValueError,
        match=r"^task 'a' cannot depend on 'c': that would create the cycle a -> b -> c -> a$",
    ):
        a.depends_on(c)
    assert a.parents == ()


def test_depends_on_rejects_itself():
    a = make_task(lambda s: 1, name="a")

    with pytest.raises(ValueError, match=r"^task 'a' cannot depend on itself$"):
        a.depends_on(a)


def test_depends_on_rejects_parent_added_twice():
    a = make_task(lambda s: 1, name="a")
    b = make_task(lambda s, x: x, name="b").depends_on(a)

    with pytest.raises(ValueError, match=r"^task 'b' already depends on 'a'; a parent can be added once$"):
        b.depends_on(a)


def test_depends_on_rejects_parent_twice_in_one_call():
    a = make_task(lambda s: 1, name="a")
    b = make_task(lambda s, x, y: x + y, name="b")

    with pytest.raises(ValueError, match=r"^task 'b' already depends on 'a'; a parent can be added once$"):
        b.depends_on(a, a)

    assert b.parents == ()


def test_depends_on_rejects_non_task():
    with pytest.raises(TypeError, match=r"^depends_on\(\) takes Tasks, not 'a'$"):
        make_task(lambda s: 1).depends_on("a")


def test_set_source_rejects_task_added_twice():
    a = make_task(lambda s: 1, name="a")

    with pytest.raises(ValueError, match=r"^task 'a' was added twice to pipeline 'test'$"):
        Pipeline(config()).set_source([a, a])


def test_get_before_execute_raises():
    a = make_task(lambda s: 1, name="a")

    with pytest.raises(RuntimeError, match=r"^task 'a' has not run; call execute\(\) on its pipeline first$"):
        a.get()


def test_execute_without_tasks_raises():
    with pytest.raises(ValueError, match=r"^pipeline 'test' has no tasks; call set_source\(\)"):
        Pipeline(config()).execute()


def test_build_errors_happen_before_anything_runs():
    ran = []
    a = make_task(lambda s: ran.append("a"), name="a")

    with pytest.raises(ValueError):
        Pipeline(config()).set_source([a, a]).execute()

    assert ran == []
    assert a.state is TaskState.PENDING


# -- running -----------------------------------------------------------------


def test_parent_values_arrive_in_depends_on_order():
    a = make_task(lambda s: "a", name="a")
    b = make_task(lambda s: "b", name="b")
    c = make_task(lambda s, *values: values, name="c").depends_on(b).depends_on(a)

    result = Pipeline(config()).set_source([a, b]).set_destination(c).execute()

    assert result == ("b", "a")
    assert c.get() == ("b", "a")
    assert a.get() == "a"
    assert [t.state for t in (a, b, c)] == [TaskState.SUCCEEDED] * 3


def test_then_chains_tasks():
    start = make_task(lambda s: 2, name="start")
    end = start.then(lambda s, x: x * 10, name="times10").then(lambda s, x: x + 1)

    assert Pipeline(config()).set_source(start).set_destination(end).execute() == 21


def test_pipeline_runs_every_connected_task():
    a = make_task(lambda s: 1, name="a")
    b = a.then(lambda s, x: x + 1, name="b")
    side = a.then(lambda s, x: x + 100, name="side")

    Pipeline(config()).set_destination(b).execute()

    assert side.get() == 101


def test_execute_returns_none_without_destination():
    a = make_task(lambda s: 1, name="a")

    assert Pipeline(config()).set_source(a).execute() is None


def test_generator_task_body_awaits():
    @greenpipe.coroutine
    def double(x):
        return 2 * x

    def body(scope, value):
        doubled = yield double(value)
        return doubled + 1

    a = make_task(lambda s: 20, name="a")
    b = make_task(body, name="b").depends_on(a)

    assert Pipeline(config()).set_source(a).set_destination(b).execute() == 41


def test_task_scope_is_joined_before_task_counts_done():
    clock = VirtualClock()
    finished = []
    scopes = []

    def spawner(scope):
        scopes.append(scope)

        def child(s):
            greenpipe.sleep(5)
            finished.append("child")

        scope.spawn(child, name="child")
        return "spawned"

    def reader(scope, value):
        scopes.append(scope)
        return (value, list(finished), clock.now())

    a = make_task(spawner, name="spawner")
    b = make_task(reader, name="reader").depends_on(a)

    result = Pipeline(config(clock=clock)).set_source(a).set_destination(b).execute()

    assert result == ("spawned", ["child"], 5.0)
    assert scopes[0] is not scopes[1]


def test_execute_twice_raises():
    a = make_task(lambda s: 1, name="a")
    pipeline = Pipeline(config()).set_source(a)
    pipeline.execute()

    with pytest.raises(RuntimeError, match=r"^pipeline 'test' has already run; build a new pipeline"):
        pipeline.execute()


def test_task_cannot_run_in_second_pipeline():
    a = make_task(lambda s: 1, name="a")
    Pipeline(config()).set_source(a).execute()

    with pytest.raises(RuntimeError, match=r"^task 'a' has already run; create new tasks"):
        Pipeline(config()).set_source(a).execute()
    with pytest.raises(RuntimeError, match=r"^task 'a' belongs to pipeline 'test', which has run"):
        make_task(lambda s, x: x).depends_on(a)


def test_seeded_single_thread_run_repeats_order():
    def build(log):
        root = make_task(lambda s: log.append("root") or 0, name="root")
        for i in range(6):
            root.then(lambda s, x, i=i: log.append(f"leaf{i}"), name=f"leaf{i}")
        return root

    orders = []
    for _ in range(2):
        log: list = []
        root = build(log)
        cfg = config(threads=1).with_rng(__import__("random").Random(3))
        Pipeline(cfg).set_source(root).execute()
        orders.append(log)

    assert orders[0] == orders[1]
    assert orders[0][0] == "root"
    assert sorted(orders[0][1:]) == [f"leaf{i}" for i in range(6)]


# -- progress ------------------------------------------------------------------


def test_progress_callback_counts_every_task():
    calls = []
    a = make_task(lambda s: 1, name="a")
    a.then(lambda s, x: x, name="b")
    a.then(lambda s, x: x, name="c")

    pipeline = Pipeline(config()).set_source(a)
    pipeline.set_progress_callback(lambda done, total: calls.append((done, total)))
    pipeline.execute()

    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_progress_reaches_total_when_tasks_are_skipped():
    calls = []
    a = make_task(lambda s: 1 / 0, name="a")
    a.then(lambda s, x: x, name="b").then(lambda s, x: x, name="c")

    pipeline = Pipeline(config()).set_source(a)
    pipeline.set_progress_callback(lambda done, total: calls.append((done, total)))
    with pytest.raises(ZeroDivisionError):
        pipeline.execute()

    assert calls[-1] == (3, 3)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_failing_progress_callback_is_logged_and_disabled(caplog):
    calls = []

    def callback(done, total):
        calls.append(done)
        raise RuntimeError("display broke")

    a = make_task(lambda s: 1, name="a")
    a.then(lambda s, x: x, name="b")
    pipeline = Pipeline(config()).set_source(a).set_progress_callback(callback)

    with caplog.at_level(logging.ERROR, logger="greenpipe"):
        pipeline.execute()

    assert calls == [1]
    assert "progress callback of pipeline 'test' failed; it is disabled" in caplog.text


# -- failure policies ------------------------------------------------------------


def test_fail_fast_cancels_running_and_skips_rest():
    clock = VirtualClock()
    seq = Sequencer()

    def slow(scope):
        with seq(0):
            pass
        greenpipe.sleep(100)

    def failing(scope):
        with seq(1):
            raise ValueError("bad input 7")

    slow_task = make_task(slow, name="slow")
    failing_task = make_task(failing, name="failing")
    after = failing_task.then(lambda s, x: x, name="after")

    pipeline = Pipeline(config(clock=clock)).set_source([slow_task, failing_task])
    with pytest.raises(ValueError) as info:
        pipeline.execute()

    assert str(info.value) == "bad input 7"
    assert info.value.__notes__ == ["raised by task 'failing' of pipeline 'test'"]
    assert failing_task.state is TaskState.FAILED
    assert slow_task.state is TaskState.CANCELLED
    assert after.state is TaskState.SKIPPED
    assert clock.now() == 0.0
    with pytest.raises(ValueError) as again:
        failing_task.get()
    assert again.value is info.value
    with pytest.raises(RuntimeError, match=r"^task 'after' was skipped: the pipeline stopped after task 'failing' failed$"):
        after.get()
    with pytest.raises(RuntimeError, match=r"^task 'slow' was cancelled before it finished$"):
        slow_task.get()


def test_fail_fast_notes_failures_during_stop():
    seq = Sequencer()

    def stubborn(scope):
        try:
            with seq(0):
                pass
            greenpipe.sleep(100)
        except Cancelled:
            raise KeyError("cleanup failed") from None

    def failing(scope):
        with seq(1):
            raise ValueError("first")

    pipeline = Pipeline(config(clock=VirtualClock())).set_source(
        [make_task(stubborn, name="stubborn"), make_task(failing, name="failing")]
    )
    with pytest.raises(ValueError) as info:
        pipeline.execute()

    assert str(info.value) == "first"
    assert info.value.__notes__ == [
        "raised by task 'failing' of pipeline 'test'",
        "task 'stubborn' also failed while the pipeline was stopping: KeyError: 'cleanup failed'",
    ]


def test_continue_policy_runs_independent_branches():
    handled = []
    clock = VirtualClock()

    def fail_later(scope):
        greenpipe.sleep(1)
        raise KeyError("missing")

    bad = make_task(lambda s: 1 / 0, name="bad")
    bad_child = bad.then(lambda s, x: x, name="bad_child")
    grandchild = bad_child.then(lambda s, x: x, name="grandchild")
    good = make_task(lambda s: (greenpipe.sleep(3), "good")[1], name="good")
    good_child = good.then(lambda s, x: x + "!", name="good_child")
    late = make_task(fail_later, name="late")
    joined = make_task(lambda s, a, b: a, name="joined").depends_on(good, late)

    cfg = config(clock=clock).with_failure_policy(
        "continue", on_error=lambda name, error: handled.append((name, type(error)))
    )
    with pytest.raises(ExceptionGroup) as info:
        Pipeline(cfg).set_source([bad, good, late]).execute()

    group = info.value
    assert group.message == "2 failures in pipeline 'test'"
    assert [type(e) for e in group.exceptions] == [ZeroDivisionError, KeyError]
    assert handled == [("bad", ZeroDivisionError), ("late", KeyError)]
    assert good_child.get() == "good!"
    assert bad_child.state is TaskState.SKIPPED
    assert grandchild.state is TaskState.SKIPPED
    assert joined.state is TaskState.SKIPPED
    assert clock.now() == 3.0


def test_continue_policy_single_failure_raised_as_itself():
    bad = make_task(lambda s: 1 / 0, name="bad")
    good = make_task(lambda s: 2, name="good")

    cfg = config().with_failure_policy(FailurePolicy.CONTINUE)
    with pytest.raises(ZeroDivisionError) as info:
        Pipeline(cfg).set_source([bad, good]).execute()

    assert info.value.__notes__ == ["raised by task 'bad' of pipeline 'test'"]
    assert good.get() == 2


def test_failing_error_handler_is_logged_and_disabled(caplog):
    def handler(name, error):
        raise RuntimeError("handler broke")

    bad = make_task(lambda s: 1 / 0, name="bad")
    cfg = config().with_failure_policy("continue", on_error=handler)

    with caplog.at_level(logging.ERROR, logger="greenpipe"):
        with pytest.raises(ZeroDivisionError):
            Pipeline(cfg).set_source(bad).execute()

    assert "error handler of pipeline 'test' failed; it is disabled" in caplog.text


def test_task_cancelling_itself_counts_as_failure():
    def quits(scope):
        scope.cancel()
        greenpipe.sleep(0)

    a = make_task(quits, name="quits")
    b = a.then(lambda s, x: x, name="b")

    with pytest.raises(Cancelled) as info:
        Pipeline(config()).set_source(a).execute()

    assert info.value.__notes__ == ["raised by task 'quits' of pipeline 'test'"]
    assert a.state is TaskState.FAILED
    assert b.state is TaskState.SKIPPED


def test_failure_note_names_task():
    def broken(scope):
        raise OSError(5, "disk on fire")

    with pytest.raises(OSError) as info:
        Pipeline(config()).set_source(make_task(broken, name="read_disk")).execute()

    assert re.fullmatch(r"raised by task 'read_disk' of pipeline 'test'", info.value.__notes__[0])
