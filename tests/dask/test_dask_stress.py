"""Longer runs of the Dask backend, deselected by default (``stress_long``)."""

from __future__ import annotations

import pytest

from greenpipe.graph import TaskGraph, split_every
from greenpipe.pipeline import PipelineConfig, TaskState

pytestmark = [pytest.mark.stress_long, pytest.mark.timeout(300)]


def add_all(scope, *values):
    return sum(values)


def tree_of(leaves: int) -> tuple[TaskGraph, object]:
    graph = TaskGraph.builder("tree")
    numbers = graph.parallel(leaves, lambda scope, i: i * i)
    total = graph.reduce(numbers, split_every(8), add_all)
    return graph, total.task()


def test_thousand_leaf_reduction_on_two_processes(process_client):
    local_graph, local_root = tree_of(1000)
    local = local_graph.execute(PipelineConfig().with_compute_threads(2), destination=local_root)
    graph, root = tree_of(1000)
    config = PipelineConfig().with_name("tree").with_backend("dask", client=process_client)

    result = graph.execute(config, destination=root)

    assert result == local == sum(i * i for i in range(1000))
    assert all(task.state is TaskState.SUCCEEDED for task in graph.tasks())
    assert [task.get() for task in graph.tasks()] == [task.get() for task in local_graph.tasks()]
