"""The client's bookkeeping when Dask reports outcomes in any order.

Dask marks a failed task and its dependents as erred at the same time, and
the client may hear of a dependent first. A fake client runs the graph in
this process with the real worker function, then reports the outcomes in
an order chosen by the test.
"""

from __future__ import annotations

import types
from typing import Any, Callable

import pytest

from greenpipe.dask._worker import TaskFailure
from greenpipe.pipeline import Pipeline, PipelineConfig, TaskState, make_task


class FakeFuture:
    def __init__(self, client: FakeClient, key: str) -> None:
        self.client = client
        self.key = key
        self.status = "pending"
        self.value: Any = None
        self.error: BaseException | None = None
        self.callbacks: list[Callable[[Any], None]] = []

    def done(self) -> bool:
        return self.status != "pending"

    def exception(self) -> BaseException | None:
        return self.error

    def traceback(self) -> None:
        return None

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self.callbacks.append(callback)
        self.client.deliver_when_ready()


class FakeClient:
    """Runs a graph in order and reports the outcomes in ``report_order``."""

    def __init__(self, report_order: Callable[[list[str]], list[str]]) -> None:
        self.report_order = report_order
        self.scheduler = types.SimpleNamespace(address="fake://scheduler")
        self.futures: dict[str, FakeFuture] = {}
        self.cancelled: list[str] = []

    def submit(self, *args: Any) -> None:
        raise AssertionError("the backend submits whole graphs")

    def get(self, graph: dict, keys: list[str], sync: bool = True) -> list[FakeFuture]:
        assert sync is False
        for key in keys:
            function, blob, *parents = graph[key]
            future = FakeFuture(self, key)
            self.futures[key] = future
            errors = [self.futures[parent].error for parent in parents]
            inherited = next((error for error in errors if error is not None), None)
            if inherited is not None:
                future.error = inherited
                continue
            try:
                future.value = function(blob, *(self.futures[parent].value for parent in parents))
            except TaskFailure as error:
                future.error = error
        return [self.futures[key] for key in keys]

    def deliver_when_ready(self) -> None:
        if not all(future.callbacks for future in self.futures.values()):
            return
        for key in self.report_order(list(self.futures)):
            future = self.futures[key]
            if future.status == "pending":
                future.status = "error" if future.error is not None else "finished"
            for callback in future.callbacks:
                callback(future)

    def gather(self, futures: list[FakeFuture]) -> list[Any]:
        return [future.result() for future in futures]

    def run(self, function: Callable[..., Any], *args: Any, on_error: str) -> dict[str, Any]:
        return {"fake://worker": function(*args)}

    def cancel(self, futures: list[FakeFuture]) -> None:
        for future in futures:
            if not future.done():
                future.status = "cancelled"
                self.cancelled.append(future.key)


def chain(client: FakeClient, policy: str) -> tuple[Pipeline, list]:
    source = make_task(lambda scope: 1, name="source")
    bad = source.then(lambda scope, value: value // 0, name="bad")
    child = bad.then(lambda scope, value: value, name="child")
    grandchild = child.then(lambda scope, value: value, name="grandchild")
    side = source.then(lambda scope, value: value + 1, name="side")
    config = (
        PipelineConfig()
        .with_name("order")
        .with_backend("dask", client=client, cancel_grace=0.5)
        .with_failure_policy(policy)
    )
    return Pipeline(config).set_source(source), [source, bad, child, grandchild, side]


@pytest.mark.parametrize("policy", ["fail_fast", "continue"])
@pytest.mark.parametrize("order", ["as_run", "dependents_first"])
def test_dependent_error_before_its_origin(policy, order):
    report = (lambda keys: keys) if order == "as_run" else (lambda keys: keys[::-1])
    client = FakeClient(report)
    progress = []
    pipeline, tasks = chain(client, policy)
    pipeline.set_progress_callback(lambda done, total: progress.append(done))

    with pytest.raises(ZeroDivisionError) as caught:
        pipeline.execute()

    source, bad, child, grandchild, side = tasks
    assert caught.value.__notes__ == ["raised by task 'bad' of pipeline 'order'"]
    assert bad.state is TaskState.FAILED
    assert child.state is TaskState.SKIPPED
    assert grandchild.state is TaskState.SKIPPED
    assert source.state is TaskState.SUCCEEDED
    assert side.state is TaskState.SUCCEEDED
    assert progress[-1] == 5
    assert progress == sorted(progress)
    assert client.cancelled == []


def test_skip_reason_names_failed_task_under_continue():
    client = FakeClient(lambda keys: keys[::-1])
    pipeline, tasks = chain(client, "continue")

    with pytest.raises(ZeroDivisionError):
        pipeline.execute()

    with pytest.raises(RuntimeError, match=r"^task 'grandchild' was skipped: it depends on task 'bad'"):
        tasks[3].get()
