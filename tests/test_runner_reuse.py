from __future__ import annotations

import contextvars

import greenpipe
import greenpipe.testing

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


def test_context_variables_do_not_leak_between_tasks():
    seen = []

    def first(scope):
        request_id.set("first")
        seen.append(request_id.get())

    def second(scope):
        seen.append(request_id.get())

    def body(scope):
        scope.spawn(first).result()
        scope.spawn(second).result()

    greenpipe.run(body, threads=1)

    assert seen == ["first", "unset"]


def test_gevent_waiting_greenlet_not_reused():
    import gevent

    greenlets = []

    def waits_in_gevent(scope):
        greenlets.append(gevent.getcurrent())
        gevent.sleep(0)

    def body(scope):
        scope.spawn(waits_in_gevent).result()
        scope.spawn(waits_in_gevent).result()

    greenpipe.run(body, threads=1)

    assert greenlets[0] is not greenlets[1]


def test_idle_runner_kill_keeps_next_task():
    import gevent

    ran = []

    def first(scope):
        gevent.spawn_later(0.05, gevent.kill, gevent.getcurrent())

    def second(scope):
        ran.append("second")
        return "ran"

    def body(scope):
        scope.spawn(first).result()
        greenpipe.sleep(0.2)
        return scope.spawn(second).result(timeout=10)

    assert greenpipe.run(body, threads=1) == "ran"
    assert ran == ["second"]


def test_seeded_random_run_with_cancelled_scope_repeats():
    import random

    def run_once():
        order = []

        def child(scope, index):
            try:
                greenpipe.sleep(100)
            except greenpipe.Cancelled:
                order.append(index)
                raise

        def inner(scope):
            for index in range(20):
                scope.spawn(child, index)
            greenpipe.sleep(1)
            scope.cancel()

        def body(scope):
            scope.scope(inner)

        greenpipe.run(
            body, threads=1, rng=random.Random(7), randomize=True,
            clock=greenpipe.testing.VirtualClock(),
        )
        return order

    first = run_once()

    assert len(first) == 20
    assert all(run_once() == first for _ in range(4))
