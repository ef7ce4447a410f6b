"""SystemExit and KeyboardInterrupt raised on a worker thread reach the caller.

A task body, a task nested below it, a blocking call offloaded with
``spawn_io``, a pipeline task and a plain gevent greenlet running on a
worker each raise one of the two. Each time, the caller of ``run()`` or
``execute()`` gets that same exception object, every other task is
cancelled with its ``finally`` blocks run, and the executor's threads stop
(the autouse leak check).
"""

from __future__ import annotations

import gevent
import pytest
from .squares_pipeline import (
    PIPELINE_NAME,
    STAGES,
    Ledger,
    check_ledger,
    new_channels,
    run_pipeline,
)

import greenpipe
from greenpipe import Executor, TaskState
from greenpipe.testing import VirtualClock

ERRORS = [
    pytest.param(lambda: SystemExit(3), id="SystemExit"),
    pytest.param(lambda: KeyboardInterrupt(), id="KeyboardInterrupt"),
]


@pytest.mark.parametrize("make_error", ERRORS)
@pytest.mark.parametrize("threads", [1, 2])
def test_root_task_error_reaches_run(make_error, threads):
    error = make_error()

    def root(scope):
        raise error

    with pytest.raises(type(error)) as info:
        greenpipe.run(root, threads=threads)
    assert info.value is error


@pytest.mark.timeout(20)
@pytest.mark.parametrize("make_error", ERRORS)
@pytest.mark.parametrize("threads", [1, 2])
def test_nested_task_error_ends_run(make_error, threads):
    """A sibling that would keep its scope open forever does not hide the error."""
    error = make_error()
    finalized = []

    def serve_forever(scope):
        try:
            while True:
                greenpipe.sleep(1)
        finally:
            finalized.append("server")

    def quit_later(scope):
        greenpipe.sleep(2.5)
        raise error

    def middle(scope):
        scope.spawn(quit_later, name="quitter")
        try:
            scope.join_all()
        finally:
            finalized.append("middle")

    def root(scope):
        scope.spawn(serve_forever, name="server")
        scope.spawn(middle, name="middle")
        try:
            greenpipe.make_channel(1).receive()
        finally:
            finalized.append("root")

    with pytest.raises(type(error)) as info:
        greenpipe.run(root, threads=threads, clock=VirtualClock())
    assert info.value is error
    assert sorted(finalized) == ["middle", "root", "server"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("make_error", ERRORS)
def test_awaited_task_error_still_ends_run(make_error):
    """Like asyncio, the run ends even when the awaiting task catches it."""
    error = make_error()

    def child(scope):
        raise error

    def root(scope):
        future = scope.spawn(child, name="child")
        try:
            future.result()
        except BaseException as caught:  # noqa: BLE001 - the case under test
            assert caught is error
        greenpipe.make_channel(1).receive()

    with pytest.raises(type(error)) as info:
        greenpipe.run(root, threads=2)
    assert info.value is error


def test_offloaded_call_error_reaches_run():
    def root(scope):
        scope.spawn_io(exit_with, 4).result()

    with pytest.raises(SystemExit) as info:
        greenpipe.run(root, threads=2)
    assert info.value.code == 4


def exit_with(code):
    raise SystemExit(code)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("make_error", ERRORS)
def test_gevent_greenlet_error_reaches_run(make_error):
    """gevent throws it out of the worker's hub; the worker keeps running."""
    error = make_error()
    finalized = []

    def raise_error():
        raise error

    def root(scope):
        try:
            gevent.spawn(raise_error)
            greenpipe.make_channel(1).receive()
        finally:
            finalized.append("root")

    with Executor(2) as executor:
        with pytest.raises(type(error)) as info:
            executor.run(root)
        assert info.value is error
        assert finalized == ["root"]
        # Both workers survived: a second run on the same executor works.
        futures = [executor.submit(lambda scope, i=i: i * 2) for i in range(8)]
        assert [future.result() for future in futures] == [i * 2 for i in range(8)]


@pytest.mark.parametrize("stage", [*STAGES, "total"])
@pytest.mark.parametrize("threads", [1, 2])
def test_pipeline_task_error_names_task(stage, threads):
    # ``total`` handles no items: it can only fail at its start.
    fail_after = 0 if stage == "total" else 1
    ledger = Ledger(stage, fail_after, make_error=lambda name: SystemExit(name))
    channels = new_channels()

    _, error, pipeline = run_pipeline(ledger, channels, threads=threads, seed=1)

    assert len(ledger.raised) == 1
    assert error is ledger.raised[0]
    assert error.__notes__ == [f"raised by task {stage!r} of pipeline {PIPELINE_NAME!r}"]
    states = {task.name: task.state for task in pipeline.tasks()}
    assert [name for name, state in states.items() if state is TaskState.FAILED] == [stage]
    check_ledger(ledger, channels)
