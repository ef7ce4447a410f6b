from __future__ import annotations

import contextvars

import greenpipe

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
