"""Failures of task bodies on Dask reach execute() as they would locally."""

from __future__ import annotations

import os
import threading
import traceback

import pytest

import greenpipe
from greenpipe._errors import ExceptionGroup
from greenpipe.dask import RemoteTaskError
from greenpipe.pipeline import Pipeline, PipelineConfig, TaskState, make_task
from greenpipe.pipeline._errors import add_note

pytestmark = pytest.mark.timeout(60)


def dask_config(client, name: str) -> PipelineConfig:
    return PipelineConfig().with_name(name).with_backend("dask", client=client)


class ParseError(ValueError):
    """An exception type that only this test module defines."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line

    def __reduce__(self):
        return (type(self), (self.args[0], self.line), self.__dict__)


class LockedError(Exception):
    """An exception that cannot be pickled, because it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class Stop(BaseException):
    """A BaseException of the user's own."""


def parse(scope, text):
    try:
        int(text)
    except ValueError as error:
        failure = ParseError(f"cannot parse {text!r}", line=7)
        add_note(failure, "from the body")
        raise failure from error
    return int(text)


def run_parse(client, text: str):
    source = make_task(lambda scope: text, name="source")
    parsed = make_task(parse, name="parse").depends_on(source)
    report = parsed.then(lambda scope, value: value * 2, name="report")
    pipeline = Pipeline(dask_config(client, "errors")).set_source(source).set_destination(report)
    return pipeline, (source, parsed, report)


def test_exception_keeps_type_message_and_notes(dask_client):
    pipeline, (source, parsed, report) = run_parse(dask_client, "four")

    with pytest.raises(ParseError) as caught:
        pipeline.execute()

    error = caught.value
    assert str(error) == "cannot parse 'four'"
    assert error.line == 7
    assert error.__notes__ == ["from the body", "raised by task 'parse' of pipeline 'errors'"]
    assert (source.state, parsed.state, report.state) == (
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.SKIPPED,
    )
    assert parsed.error is error


def test_exception_keeps_traceback_and_cause(dask_client):
    pipeline, _ = run_parse(dask_client, "four")

    with pytest.raises(ParseError) as caught:
        pipeline.execute()

    frames = traceback.extract_tb(caught.value.__traceback__)
    body = [frame for frame in frames if frame.name == "parse"]
    assert body, [frame.name for frame in frames]
    assert body[-1].filename == __file__
    assert body[-1].line == "raise failure from error"
    cause = caught.value.__cause__
    assert isinstance(cause, ValueError)
    assert str(cause) == "invalid literal for int() with base 10: 'four'"
    assert caught.value.__suppress_context__


def test_same_error_as_local(dask_client):
    local_source = make_task(lambda scope: "x", name="source")
    local_parse = make_task(parse, name="parse").depends_on(local_source)
    local = Pipeline(PipelineConfig().with_name("errors").with_compute_threads(2))
    with pytest.raises(ParseError) as local_error:
        local.set_source(local_source).execute()
    pipeline, _ = run_parse(dask_client, "x")

    with pytest.raises(ParseError) as dask_error:
        pipeline.execute()

    assert str(dask_error.value) == str(local_error.value)
    assert dask_error.value.__notes__ == local_error.value.__notes__
    assert local_parse.state is TaskState.FAILED


def test_unpicklable_exception_arrives_as_remote_error(dask_client):
    def fail(scope):
        raise LockedError("cannot send")

    task = make_task(fail, name="locked")

    with pytest.raises(RemoteTaskError) as caught:
        Pipeline(dask_config(dask_client, "remote")).set_destination(task).execute()

    error = caught.value
    assert str(error) == f"{__name__}.LockedError: cannot send"
    assert error.type_name == f"{__name__}.LockedError"
    assert "in fail" in error.remote_traceback
    assert error.__notes__ == ["raised by task 'locked' of pipeline 'remote'"]


def test_unpicklable_task_function_is_named(dask_client):
    lock = threading.Lock()
    task = make_task(lambda scope: lock.locked(), name="holds a lock")
    pipeline = Pipeline(dask_config(dask_client, "pickling")).set_destination(task)

    with pytest.raises(
        TypeError,
        match=r"^task 'holds a lock' of pipeline 'pickling' cannot be sent to Dask workers: ",
    ):
        pipeline.execute()


def test_continue_policy_runs_independent_branches(dask_client):
    seen = []
    bad = make_task(lambda scope: 1 // 0, name="bad")
    after_bad = bad.then(lambda scope, value: value, name="after_bad")
    good = make_task(lambda scope: "fine", name="good")
    after_good = good.then(lambda scope, value: value.upper(), name="after_good")
    config = dask_config(dask_client, "branches").with_failure_policy(
        "continue", on_error=lambda name, error: seen.append((name, type(error)))
    )
    progress = []
    pipeline = Pipeline(config).set_source([bad, good])
    pipeline.set_progress_callback(lambda done, total: progress.append((done, total)))

    with pytest.raises(ZeroDivisionError):
        pipeline.execute()

    assert after_good.get() == "FINE"
    assert after_bad.state is TaskState.SKIPPED
    with pytest.raises(RuntimeError, match=r"^task 'after_bad' was skipped: it depends on task 'bad'"):
        after_bad.get()
    assert seen == [("bad", ZeroDivisionError)]
    assert progress[-1] == (4, 4)


def test_continue_policy_groups_several_failures(dask_client):
    first = make_task(lambda scope: 1 // 0, name="first")
    second = make_task(lambda scope: {}["missing"], name="second")
    config = dask_config(dask_client, "two").with_failure_policy("continue")

    with pytest.raises(ExceptionGroup) as caught:
        Pipeline(config).set_source([first, second]).execute()

    assert str(caught.value) == "2 failures in pipeline 'two' (2 sub-exceptions)"
    assert sorted(type(error).__name__ for error in caught.value.exceptions) == [
        "KeyError",
        "ZeroDivisionError",
    ]


def test_deadlock_inside_a_body_is_reported(dask_client):
    def wait_forever(scope):
        channel = greenpipe.make_channel(1)
        with channel.producer().guard():
            return channel.receive()

    task = make_task(wait_forever, name="stuck")

    with pytest.raises(greenpipe.DeadlockError) as caught:
        Pipeline(dask_config(dask_client, "deadlock")).set_destination(task).execute()

    assert "stuck" in str(caught.value)
    assert caught.value.__notes__ == ["raised by task 'stuck' of pipeline 'deadlock'"]


def raise_keyboard_interrupt(scope):
    raise KeyboardInterrupt("from the body")


def raise_system_exit(scope):
    raise SystemExit(3)


def raise_cancelled(scope):
    raise greenpipe.Cancelled("the body gave up")


def raise_stop(scope):
    raise Stop("a BaseException of its own")


BASE_EXCEPTIONS = [
    (raise_keyboard_interrupt, KeyboardInterrupt),
    (raise_system_exit, SystemExit),
    (raise_cancelled, greenpipe.Cancelled),
    (raise_stop, Stop),
]


@pytest.mark.parametrize(
    ("body", "expected"), BASE_EXCEPTIONS, ids=[case[1].__name__ for case in BASE_EXCEPTIONS]
)
def test_base_exception_neither_kills_nor_hangs_worker(process_client, body, expected):
    pids_before = process_client.run(os.getpid)
    task = make_task(body, name="base")
    check = make_task(lambda scope: "still serving", name="check")

    with pytest.raises(expected) as caught:
        Pipeline(dask_config(process_client, "base")).set_destination(task).execute()
    after = Pipeline(dask_config(process_client, "after")).set_destination(check).execute()

    assert caught.value.__notes__ == ["raised by task 'base' of pipeline 'base'"]
    assert task.state is TaskState.FAILED
    assert after == "still serving"
    assert process_client.run(os.getpid) == pids_before


def test_base_exception_same_as_local(dask_client):
    local_task = make_task(raise_system_exit, name="base")
    with pytest.raises(SystemExit) as local_error:
        Pipeline(PipelineConfig().with_name("base").with_compute_threads(1)).set_destination(
            local_task
        ).execute()
    task = make_task(raise_system_exit, name="base")

    with pytest.raises(SystemExit) as dask_error:
        Pipeline(dask_config(dask_client, "base")).set_destination(task).execute()

    assert dask_error.value.code == local_error.value.code == 3
    assert dask_error.value.__notes__ == local_error.value.__notes__
    assert task.state is local_task.state is TaskState.FAILED


def test_clusters_listen_on_loopback_only(dask_client, process_client):
    import psutil

    pids = [os.getpid(), *process_client.run(os.getpid).values()]

    for pid in pids:
        process = psutil.Process(pid)
        # psutil renamed connections() to net_connections() in version 6.
        list_connections = getattr(process, "net_connections", None) or process.connections
        connections = list_connections(kind="inet")
        listening = {conn.laddr.ip for conn in connections if conn.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}, (pid, listening)
