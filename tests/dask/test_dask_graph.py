"""Task graphs and pipelines give the same results on Dask as locally."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import pytest

import greenpipe
from greenpipe.dask import execute as dask_execute
from greenpipe.dask._client import task_keys
from greenpipe.graph import TaskGraph, num_outputs, split_every
from greenpipe.pipeline import Pipeline, PipelineConfig, TaskState, make_task

pytestmark = pytest.mark.timeout(60)

Build = Callable[[PipelineConfig], tuple[Any, list[Any]]]


def local_config(name: str) -> PipelineConfig:
    return PipelineConfig().with_name(name).with_compute_threads(2)


def dask_config(client: Any, name: str) -> PipelineConfig:
    return PipelineConfig().with_name(name).with_backend("dask", client=client)


def add_all(scope, *values):
    return sum(values)


def concat(scope, *values):
    return "".join(values)


def sum8(config: PipelineConfig) -> tuple[Any, list[Any]]:
    graph = TaskGraph.builder("sum8")
    workers = graph.parallel(8, lambda scope, i: i + 1)
    total = graph.reduce(workers, split_every(2), add_all)
    result = graph.execute(config, destination=total.task())
    return result, [task.get() for task in graph.tasks()]


def sum9(config: PipelineConfig) -> tuple[Any, list[Any]]:
    graph = TaskGraph.builder("sum9")
    workers = graph.parallel(9, lambda scope, i: i + 1)
    total = graph.reduce(workers, split_every(3), add_all)
    result = graph.execute(config, destination=total.task())
    return result, [task.get() for task in graph.tasks()]


def fan_out_500(config: PipelineConfig) -> tuple[Any, list[Any]]:
    graph = TaskGraph.builder("fan")
    source = graph.add(make_task(lambda scope: 5, name="source"))
    children = graph.fan_out(source, num_outputs(4), lambda scope, i, value: value * (i + 1))
    reduced = graph.reduce(children, split_every(2), add_all)
    outside = make_task(lambda scope, total: total * 10, name="times10")
    outside.depends_on(reduced.task())
    result = Pipeline(config).set_source(graph).set_destination(outside).execute()
    return result, [task.get() for task in [*graph.tasks(), outside]]


def chunk_of_one(config: PipelineConfig) -> tuple[Any, list[Any]]:
    graph = TaskGraph.builder("tree")
    leaves = graph.parallel(5, lambda scope, i: str(i))
    root = graph.reduce(leaves, split_every(2), concat)
    result = graph.execute(config, destination=root.task())
    return result, [task.get() for task in graph.tasks()]


def map_and_fan_in(config: PipelineConfig) -> tuple[Any, list[Any]]:
    graph = TaskGraph.builder("shape")
    numbers = graph.parallel(3, lambda scope, i: i)
    squares = graph.map(numbers, lambda scope, value: value * value)
    gathered = graph.fan_in(squares, lambda scope, *values: list(values))
    result = graph.execute(config, destination=gathered.task())
    return result, [task.get() for task in graph.tasks()]


def generator_bodies(config: PipelineConfig) -> tuple[Any, list[Any]]:
    def produce(scope, i):
        value = yield scope.spawn(lambda child: i * 10)
        return value + i

    graph = TaskGraph.builder("gen")
    items = graph.parallel(3, produce)
    total = graph.reduce(items, split_every(3), add_all)
    result = graph.execute(config, destination=total.task())
    return result, [task.get() for task in graph.tasks()]


def parents_in_order(config: PipelineConfig) -> tuple[Any, list[Any]]:
    first = make_task(lambda scope: "a", name="first")
    second = make_task(lambda scope: "b", name="second")
    third = make_task(lambda scope: "c", name="third")
    joined = make_task(lambda scope, *values: "-".join(values), name="joined")
    joined.depends_on(third, first).depends_on(second)
    result = Pipeline(config).set_source([first, second, third]).set_destination(joined).execute()
    return result, [task.get() for task in (first, second, third, joined)]


def scopes_and_channels(config: PipelineConfig) -> tuple[Any, list[Any]]:
    def produce_and_consume(scope, count):
        channel = greenpipe.make_channel(2)

        def producer(child, start):
            with channel.producer().guard() as handle:
                for number in range(start, count, 2):
                    handle.send(number)

        scope.spawn(producer, 0)
        scope.spawn(producer, 1)
        return sorted(channel)

    count = make_task(lambda scope: 10, name="count")
    numbers = count.then(produce_and_consume, name="numbers")
    total = numbers.then(lambda scope, values: sum(values), name="total")
    result = Pipeline(config).set_source(count).set_destination(total).execute()
    return result, [count.get(), numbers.get(), total.get()]


CASES = [
    (sum8, 36),
    (sum9, 45),
    (fan_out_500, 500),
    (chunk_of_one, "01234"),
    (map_and_fan_in, [0, 1, 4]),
    (generator_bodies, 33),
    (parents_in_order, "c-a-b"),
    (scopes_and_channels, 45),
]


@pytest.mark.parametrize(("build", "expected"), CASES, ids=[case[0].__name__ for case in CASES])
def test_graph_same_result_as_local(dask_client, build: Build, expected):
    local_result, local_values = build(local_config(build.__name__))
    dask_result, dask_values = build(dask_config(dask_client, build.__name__))

    assert local_result == expected
    assert dask_result == expected
    assert dask_values == local_values


def test_graph_through_dask_execute(dask_client):
    graph = TaskGraph.builder("direct")
    workers = graph.parallel(4, lambda scope, i: i * i)
    total = graph.reduce(workers, split_every(2), add_all)

    result = dask_execute(graph, client=dask_client, destination=total.task())

    assert result == 14
    assert all(task.state is TaskState.SUCCEEDED for task in graph.tasks())


def test_pipeline_through_dask_execute(dask_client):
    load = make_task(lambda scope: [3, 1, 2], name="load")
    head = load.then(lambda scope, values: sorted(values)[0], name="head")
    pipeline = Pipeline(local_config("direct")).set_source(load).set_destination(head)

    assert dask_execute(pipeline, client=dask_client) == 1
    assert pipeline.config.backend == "dask"


def test_dask_execute_rejects_other_targets(dask_client):
    with pytest.raises(TypeError, match=r"^execute\(\) takes a Pipeline or a TaskGraph, not 3$"):
        dask_execute(3, client=dask_client)


def test_default_client_is_used(dask_client):
    from distributed import Client

    task = make_task(lambda scope: "default", name="only")
    config = PipelineConfig().with_name("default").with_backend("dask")

    with Client(dask_client.scheduler.address, set_as_default=True, timeout=30):
        result = Pipeline(config).set_destination(task).execute()

    assert result == "default"


def test_address_opens_and_closes_a_client(dask_client):
    address = dask_client.scheduler.address
    task = make_task(lambda scope: "by address", name="only")
    config = PipelineConfig().with_name("address").with_backend("dask", address=address)

    result = Pipeline(config).set_destination(task).execute()

    assert result == "by address"


def test_scheduler_file_connects(dask_client, tmp_path):
    path = tmp_path / "scheduler.json"
    path.write_text(json.dumps({"type": "Scheduler", "address": dask_client.scheduler.address}))
    task = make_task(lambda scope: "by file", name="only")
    config = PipelineConfig().with_name("file").with_backend("dask", scheduler_file=path)

    assert Pipeline(config).set_destination(task).execute() == "by file"


def test_body_sees_worker_and_readable_key(dask_client):
    def current_key(scope):
        from distributed import get_worker
        from distributed.worker import thread_state

        assert get_worker().address.startswith("tcp://127.0.0.1:")
        return thread_state.key

    task = make_task(current_key, name="which key")
    key = Pipeline(dask_config(dask_client, "keys")).set_destination(task).execute()

    assert re.fullmatch(r"keys/which key-[0-9a-f]{32}", key), key


def test_repeated_task_names_get_unique_keys():
    tasks = [make_task(lambda scope: 1, name="same") for _ in range(3)]

    keys = task_keys(tasks, "pipe", "0" * 32)

    assert list(keys.values()) == [
        "pipe/same-" + "0" * 32,
        "pipe/same#2-" + "0" * 32,
        "pipe/same#3-" + "0" * 32,
    ]


def test_repeated_task_names_run_on_dask(dask_client):
    tasks = [make_task(lambda scope, i=i: i, name="same") for i in range(3)]
    total = make_task(add_all, name="total").depends_on(*tasks)

    result = Pipeline(dask_config(dask_client, "names")).set_source(tasks).set_destination(total).execute()

    assert result == 3


def test_progress_callback_counts_every_task(dask_client):
    calls = []
    graph = TaskGraph.builder("progress")
    workers = graph.parallel(4, lambda scope, i: i)
    total = graph.reduce(workers, split_every(2), add_all)
    pipeline = Pipeline(dask_config(dask_client, "progress")).set_source(graph)
    pipeline.set_destination(total.task()).set_progress_callback(lambda done, all_: calls.append((done, all_)))

    assert pipeline.execute() == 6
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert calls[-1] == (7, 7)
    assert {all_ for _, all_ in calls} == {7}


def test_task_threads_size_the_body_executor(dask_client):
    task = make_task(lambda scope: scope._executor.threads, name="threads")
    config = PipelineConfig().with_name("threads").with_backend(
        "dask", client=dask_client, task_threads=3
    )

    assert Pipeline(config).set_destination(task).execute() == 3


def test_function_defined_in_test_module_travels_by_value(dask_client):
    task = make_task(module_level_body, name="module body")

    result = Pipeline(dask_config(dask_client, "by value")).set_destination(task).execute()

    # The worker got a copy of the module's globals, even though it runs in
    # this process, so the change to the counter stays on the worker side.
    assert result == 1
    assert COUNTER == [0]


COUNTER = [0]


def module_level_body(scope):
    COUNTER[0] += 1
    return COUNTER[0]
