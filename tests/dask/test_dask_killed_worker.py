"""A worker process that dies mid-graph: Dask retries the task, or gives up.

Each test gets a two-process cluster of its own, because the bodies here
end their worker process with ``os._exit``. The nanny then starts a new
one. Files under ``tmp_path`` count the attempts across processes.
"""

from __future__ import annotations

import os

import pytest

from greenpipe.pipeline import Pipeline, PipelineConfig, TaskState, make_task

pytestmark = pytest.mark.timeout(90)


def dask_config(client, name: str) -> PipelineConfig:
    return PipelineConfig().with_name(name).with_backend("dask", client=client)


def dies_on_first_attempt(attempts):
    def body(scope, value):
        done = sorted(attempts.glob("attempt-*"))
        (attempts / f"attempt-{len(done)}").write_text(str(os.getpid()))
        if not done:
            os._exit(1)
        return value * 2

    return body


def always_dies(scope, value):
    os._exit(1)


def test_killed_worker_task_completes_on_retry(fresh_process_cluster, tmp_path):
    client = fresh_process_cluster()
    source = make_task(lambda scope: 21, name="source")
    flaky = make_task(dies_on_first_attempt(tmp_path), name="flaky").depends_on(source)
    report = flaky.then(lambda scope, value: f"got {value}", name="report")

    result = Pipeline(dask_config(client, "retry")).set_source(source).set_destination(report).execute()

    assert result == "got 42"
    assert (source.state, flaky.state, report.state) == (TaskState.SUCCEEDED,) * 3
    pids = [(tmp_path / f"attempt-{n}").read_text() for n in range(2)]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["attempt-0", "attempt-1"]
    assert pids[0] != pids[1]


def test_killed_worker_fails_naming_the_task(fresh_process_cluster):
    from distributed import KilledWorker

    client = fresh_process_cluster(**{"distributed.scheduler.allowed-failures": 0})
    source = make_task(lambda scope: 21, name="source")
    crashing = make_task(always_dies, name="crashing").depends_on(source)
    report = crashing.then(lambda scope, value: value, name="report")
    pipeline = Pipeline(dask_config(client, "crash")).set_source(source).set_destination(report)

    with pytest.raises(KilledWorker) as caught:
        pipeline.execute()

    error = caught.value
    assert error.__notes__ == ["raised by task 'crashing' of pipeline 'crash'"]
    assert "crash/crashing-" in str(error)
    assert (source.state, crashing.state, report.state) == (
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.SKIPPED,
    )
    assert crashing.error is error
    assert client.submit(lambda: "serving again").result(timeout=30) == "serving again"
