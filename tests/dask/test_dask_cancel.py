"""Stopping a run on Dask: fail-fast, global and per-task timeouts.

Bodies that must start before something else happens signal through a
``distributed.Event``. The timeouts below are real time, because Dask runs
on the real clock, and they are kept short.
"""

from __future__ import annotations

import logging
import time
import uuid

import pytest

import greenpipe
from greenpipe.pipeline import (
    Pipeline,
    PipelineConfig,
    PipelineTimeoutError,
    TaskState,
    TaskTimeoutError,
    make_task,
)

pytestmark = pytest.mark.timeout(60)


def dask_config(client, name: str, **options) -> PipelineConfig:
    return PipelineConfig().with_name(name).with_backend("dask", client=client, **options)


def event_name() -> str:
    return f"greenpipe-test-{uuid.uuid4().hex}"


def sleeper(marker, started=None):
    """Return a body that signals its start, sleeps, and records a cancel."""

    def body(scope, *values):
        if started is not None:
            from distributed import Event

            Event(started).set()
        try:
            greenpipe.sleep(3600)
        except greenpipe.Cancelled:
            marker.write_text("cancelled")
            raise
        return "woke up"

    return body


def test_failure_cancels_running_and_queued_tasks(dask_client, tmp_path):
    started = event_name()

    def fail_after_start(scope):
        from distributed import Event

        assert Event(started).wait(20), "the sleeper never started"
        raise ValueError("stop the run")

    sleeping = make_task(sleeper(tmp_path / "cancelled", started), name="sleeping")
    queued = sleeping.then(lambda scope, value: (tmp_path / "ran").write_text(value), name="queued")
    failing = make_task(fail_after_start, name="failing")
    pipeline = Pipeline(dask_config(dask_client, "fail fast")).set_source([sleeping, failing])

    with pytest.raises(ValueError) as caught:
        pipeline.execute()

    assert str(caught.value) == "stop the run"
    assert caught.value.__notes__ == ["raised by task 'failing' of pipeline 'fail fast'"]
    assert sleeping.state is TaskState.CANCELLED
    assert queued.state is TaskState.SKIPPED
    with pytest.raises(RuntimeError, match=r"^task 'queued' was skipped: the pipeline stopped after task 'failing' failed$"):
        queued.get()
    assert (tmp_path / "cancelled").read_text() == "cancelled"
    assert not (tmp_path / "ran").exists()


def test_global_timeout_cancels_running_body(dask_client, tmp_path):
    sleeping = make_task(sleeper(tmp_path / "cancelled"), name="stuck_upload")
    queued = sleeping.then(lambda scope, value: value, name="publish")
    config = dask_config(dask_client, "nightly").with_global_timeout(1)
    started = time.monotonic()

    with pytest.raises(PipelineTimeoutError) as caught:
        Pipeline(config).set_source(sleeping).execute()

    elapsed = time.monotonic() - started
    error = caught.value
    assert str(error) == "pipeline 'nightly' timed out after 1 s; running tasks: 'stuck_upload'"
    assert error.running_tasks == ("stuck_upload",)
    assert error.seconds == 1
    assert 1 <= elapsed < 10
    assert sleeping.state is TaskState.CANCELLED
    assert queued.state is TaskState.SKIPPED
    assert (tmp_path / "cancelled").read_text() == "cancelled"


def test_task_timeout_cancels_body_on_worker(dask_client, tmp_path):
    fast = make_task(lambda scope: "quick", name="fast")
    slow = fast.then(sleeper(tmp_path / "cancelled"), name="slow")
    config = dask_config(dask_client, "ingest").with_task_timeout(0.3)

    with pytest.raises(TaskTimeoutError) as caught:
        Pipeline(config).set_source(fast).execute()

    error = caught.value
    assert str(error) == "task 'slow' of pipeline 'ingest' timed out after 0.3 s and was cancelled"
    assert error.task_name == "slow"
    assert error.__notes__ == ["raised by task 'slow' of pipeline 'ingest'"]
    assert (fast.state, slow.state) == (TaskState.SUCCEEDED, TaskState.FAILED)
    assert (tmp_path / "cancelled").read_text() == "cancelled"


def test_body_ignoring_cancellation_is_released_after_grace(dask_client, caplog, executors_ended):
    from distributed import Event

    release = event_name()

    def blocks_its_hub(scope):
        # A plain blocking call is no cancellation point.
        Event(release).wait(30)
        return "late"

    task = make_task(blocks_its_hub, name="stubborn")
    config = dask_config(dask_client, "grace", cancel_grace=0.5).with_global_timeout(0.5)
    started = time.monotonic()

    try:
        with caplog.at_level(logging.WARNING, logger="greenpipe.dask"):
            with pytest.raises(PipelineTimeoutError):
                Pipeline(config).set_destination(task).execute()
        elapsed = time.monotonic() - started
    finally:
        Event(release, client=dask_client).set()

    assert elapsed < 10
    assert task.state is TaskState.CANCELLED
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("1 tasks still running 0.5 s after their cancellation: 'stubborn'" in message for message in warnings), warnings
    assert executors_ended() == 0


def test_interrupted_client_cancels_the_run(dask_client, tmp_path, executors_ended):
    sleeping = make_task(sleeper(tmp_path / "cancelled"), name="sleeping")
    quick = make_task(lambda scope: 1, name="quick")

    def interrupt(done, total):
        raise KeyboardInterrupt

    pipeline = Pipeline(dask_config(dask_client, "interrupted")).set_source([sleeping, quick])
    pipeline.set_progress_callback(interrupt)

    with pytest.raises(KeyboardInterrupt):
        pipeline.execute()

    assert executors_ended() == 0
    assert (tmp_path / "cancelled").read_text() == "cancelled"
    assert sleeping.state is TaskState.CANCELLED
