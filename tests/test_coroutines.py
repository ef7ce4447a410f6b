from __future__ import annotations

import sys

import pytest

import greenpipe
from greenpipe import CoroTask, coroutine


def run1(fn, *args):
    return greenpipe.run(fn, *args, threads=1)


@coroutine
def double(x):
    return 2 * x


@coroutine
def fail(message):
    raise ValueError(message)


def test_coroutine_is_lazy():
    calls = []

    @coroutine
    def record():
        calls.append("ran")
        return 1

    task = record()

    assert isinstance(task, CoroTask)
    assert calls == []
    assert run1(lambda scope: task.wait()) == 1
    assert calls == ["ran"]


def test_coroutine_runs_once():
    task = double(2)

    def body(scope):
        task.wait()
        task.wait()

    with pytest.raises(RuntimeError, match="already ran"):
        run1(body)


def test_wait_outside_executor_runs_inline():
    assert double(4).wait() == 8


def test_then_and_gt_map_value():
    chained = double(3).then(lambda v: v + 1) > str

    assert run1(lambda scope: chained.wait()) == "7"


def test_then_flattens_returned_coroutine():
    chained = double(1).then(double)

    assert run1(lambda scope: chained.wait()) == 4


def test_tap_keeps_value():
    seen = []
    tapped = double(5).tap(seen.append)

    assert run1(lambda scope: tapped.wait()) == 10
    assert seen == [10]


def test_then_skipped_on_failure():
    calls = []
    chained = fail("boom").then(calls.append)

    with pytest.raises(ValueError, match="boom"):
        run1(lambda scope: chained.wait())
    assert calls == []


def test_or_fallback_runs_only_after_failure():
    started = []

    @coroutine
    def fallback_value():
        started.append("fallback")
        return "fallback"

    ok = double(2) | fallback_value()
    assert run1(lambda scope: ok.wait()) == 4
    assert started == []

    recovered = fail("x") | fallback_value()
    assert run1(lambda scope: recovered.wait()) == "fallback"
    assert started == ["fallback"]


def test_or_fallback_callable_gets_exception():
    recovered = fail("disk") | (lambda exc: f"handled {exc}")

    assert run1(lambda scope: recovered.wait()) == "handled disk"


def test_or_does_not_catch_cancelled():
    @coroutine
    def cancelled():
        raise greenpipe.Cancelled("stop")

    guarded = cancelled() | (lambda exc: "swallowed")

    with pytest.raises(greenpipe.Cancelled):
        guarded.wait()


def test_or_rejects_plain_value():
    with pytest.raises(TypeError, match="right side of | must be"):
        double(1) | 3


def test_then_rejects_non_callable():
    with pytest.raises(TypeError, match=r"needs a callable, not 3"):
        double(1).then(3)  # type: ignore[arg-type]


def test_generator_coroutine_awaits_with_yield():
    @coroutine
    def add_doubles(a, b):
        x = yield double(a)
        y = yield double(b)
        return x + y

    assert run1(lambda scope: add_doubles(1, 2).wait()) == 6


def test_generator_coroutine_receives_exception_from_yield():
    @coroutine
    def guarded():
        try:
            yield fail("inner")
        except ValueError as exc:
            return f"caught {exc}"

    assert run1(lambda scope: guarded().wait()) == "caught inner"


def test_generator_yield_of_non_awaitable_raises_type_error():
    @coroutine
    def bad():
        yield 42

    with pytest.raises(TypeError, match="can only yield an awaitable"):
        run1(lambda scope: bad().wait())


def test_generator_task_body_gets_scope_and_awaits_future():
    def child(scope, x):
        return x * 10

    def body(scope):
        future = scope.spawn(child, 4)
        value = yield future
        more = yield double(value)
        return more

    assert greenpipe.run(body, threads=2) == 80


def test_generator_task_can_block_inside():
    def body(scope):
        greenpipe.sleep(0)
        value = yield double(2)
        greenpipe.sleep(0)
        return value

    assert run1(body) == 4


def test_bare_yield_is_a_checkpoint():
    log = []

    def ticker(scope, name):
        for step in range(2):
            log.append((name, step))
            yield

    def body(scope):
        scope.spawn(ticker, "a")
        scope.spawn(ticker, "b")

    run1(body)

    assert sorted(log) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert log[0][0] != log[1][0]


def test_spawn_coroutine_as_task():
    def body(scope):
        future = scope.spawn(double(21))
        return future.result()

    assert greenpipe.run(body, threads=2) == 42


def test_spawn_coroutine_with_args_rejected():
    def body(scope):
        scope.spawn(double(1), 2)

    with pytest.raises(TypeError, match="takes no arguments"):
        run1(body)


def test_million_ready_awaits_keep_stack_flat():
    @coroutine
    def one():
        return 1

    depths = []

    @coroutine
    def loop(n):
        total = 0
        for _ in range(n):
            total += yield one()
        depths.append(_stack_depth())
        return total

    base = []

    def body(scope):
        base.append(_stack_depth())
        return loop(1_000_000).wait()

    assert run1(body) == 1_000_000
    assert depths[0] - base[0] < 20


def test_million_nested_awaits_hit_no_recursion_limit():
    @coroutine
    def nested(n):
        if n == 0:
            return 0
        value = yield nested(n - 1)
        return value + 1

    limit = sys.getrecursionlimit()

    assert run1(lambda scope: nested(1_000_000).wait()) == 1_000_000
    assert sys.getrecursionlimit() == limit


def test_million_then_chain_is_iterative():
    chained = double(0)
    for _ in range(1_000_000):
        chained = chained.then(_increment)

    assert run1(lambda scope: chained.wait()) == 1_000_000


def _increment(value):
    return value + 1


def _stack_depth() -> int:
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth
