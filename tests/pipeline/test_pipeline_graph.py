from __future__ import annotations

import pytest

from greenpipe.graph import TaskGraph, TaskGroup, num_outputs, split_every
from greenpipe.pipeline import Pipeline, PipelineConfig, make_task


def config() -> PipelineConfig:
    return PipelineConfig().with_name("graph").with_compute_threads(2)


def add_all(scope, *values):
    return sum(values)


def test_eight_workers_reduced_pairwise_to_36():
    graph = TaskGraph.builder("sum8")
    workers = graph.parallel(8, lambda scope, i: i + 1)
    total = graph.reduce(workers, split_every(2), add_all)

    assert graph.execute(config(), destination=total.task()) == 36
    assert len(graph.tasks()) == 8 + 4 + 2 + 1


def test_nine_workers_split_every_three_to_45():
    graph = TaskGraph.builder("sum9")
    workers = graph.parallel(9, lambda scope, i: i + 1)
    total = graph.reduce(workers, split_every(3), add_all)

    assert graph.execute(config(), destination=total.task()) == 45
    assert len(graph.tasks()) == 9 + 3 + 1


def test_fan_out_reduce_outside_task_500():
    graph = TaskGraph.builder("fan")
    source = graph.add(make_task(lambda scope: 5, name="source"))
    children = graph.fan_out(source, num_outputs(4), lambda scope, i, value: value * (i + 1))
    reduced = graph.reduce(children, split_every(2), add_all)
    outside = make_task(lambda scope, total: total * 10, name="times10").depends_on(reduced.task())

    result = Pipeline(config()).set_source(graph).set_destination(outside).execute()

    assert result == 500
    assert [task.get() for task in children] == [5, 10, 15, 20]


def test_reduce_chunk_of_one_passes_through_untouched():
    calls = []

    def concat(scope, *values):
        calls.append(values)
        return "".join(values)

    graph = TaskGraph.builder("tree")
    leaves = graph.parallel(5, lambda scope, i: str(i))
    root = graph.reduce(leaves, split_every(2), concat)

    assert graph.execute(config(), destination=root.task()) == "01234"
    assert sorted(calls) == sorted([("0", "1"), ("2", "3"), ("01", "23"), ("0123", "4")])
    assert [task.name for task in graph.tasks()[5:]] == [
        "tree.reduce[0.0]",
        "tree.reduce[0.1]",
        "tree.reduce[1.0]",
        "tree.reduce[2.0]",
    ]


def test_reduce_single_input_gets_one_call():
    calls = []

    def reducer(scope, *values):
        calls.append(values)
        return values[0] * 2

    graph = TaskGraph.builder("one")
    source = graph.parallel(1, lambda scope, i: 21)
    root = graph.reduce(source, split_every(4), reducer)

    assert graph.execute(config(), destination=root.task()) == 42
    assert calls == [(21,)]


def test_map_and_fan_in():
    graph = TaskGraph.builder("shape")
    numbers = graph.parallel(3, lambda scope, i: i)
    squares = graph.map(numbers, lambda scope, value: value * value)
    gathered = graph.fan_in(squares, lambda scope, *values: list(values))

    assert graph.execute(config(), destination=gathered.task()) == [0, 1, 4]
    assert [task.name for task in squares] == ["shape.map[0]", "shape.map[1]", "shape.map[2]"]


def test_repeated_group_names_are_numbered():
    graph = TaskGraph.builder("g")
    first = graph.parallel(1, lambda scope, i: i)
    second = graph.parallel(1, lambda scope, i: i)
    named = graph.parallel(1, lambda scope, i: i, name="load")

    assert (first.name, second.name, named.name) == ("g.parallel", "g.parallel2", "g.load")


def test_generator_bodies_in_graph():
    def produce(scope, i):
        value = yield from ()
        return i if value is None else value

    graph = TaskGraph.builder("gen")
    items = graph.parallel(3, produce)
    total = graph.reduce(items, split_every(3), add_all)

    assert graph.execute(config(), destination=total.task()) == 3


def test_group_task_requires_exactly_one():
    graph = TaskGraph.builder("g")
    group = graph.parallel(2, lambda scope, i: i)

    with pytest.raises(ValueError, match=r"^group 'g.parallel' has 2 tasks; task\(\) needs exactly one"):
        group.task()
    assert isinstance(group, TaskGroup)
    assert len(group.tasks()) == 2


def test_fan_out_requires_group_of_one():
    graph = TaskGraph.builder("g")
    group = graph.parallel(2, lambda scope, i: i)

    with pytest.raises(ValueError, match=r"^fan_out\(\) needs a group of one task, but group 'g.parallel' has 2"):
        graph.fan_out(group, num_outputs(3), lambda scope, i, value: value)


def test_group_from_other_graph_rejected():
    first = TaskGraph.builder("first")
    second = TaskGraph.builder("second")
    group = first.parallel(1, lambda scope, i: i)

    with pytest.raises(ValueError, match=r"^group 'first.parallel' belongs to graph 'first', not 'second'$"):
        second.map(group, lambda scope, value: value)


def test_add_rejects_task_added_twice():
    graph = TaskGraph.builder("g")
    task = make_task(lambda scope: 1, name="one")
    graph.add(task)

    with pytest.raises(ValueError, match=r"^task 'one' was added twice to graph 'g'$"):
        graph.add(task)


@pytest.mark.parametrize("k", [1, 0, -2])
def test_split_every_rejects_below_two(k):
    with pytest.raises(ValueError, match=rf"^split_every must be an int >= 2, not {k}$"):
        split_every(k)


@pytest.mark.parametrize("n", [0, -1])
def test_num_outputs_rejects_below_one(n):
    with pytest.raises(ValueError, match=rf"^num_outputs must be an int >= 1, not {n}$"):
        num_outputs(n)


def test_parallel_rejects_zero():
    with pytest.raises(ValueError, match=r"^n must be an int >= 1, not 0$"):
        TaskGraph.builder("g").parallel(0, lambda scope, i: i)


def test_reduce_needs_split_every():
    graph = TaskGraph.builder("g")
    group = graph.parallel(2, lambda scope, i: i)

    with pytest.raises(TypeError, match=r"^reduce\(\) needs split_every\(k\), not 2$"):
        graph.reduce(group, 2, add_all)


def test_execute_empty_graph_rejected():
    with pytest.raises(ValueError, match=r"^graph 'empty' has no tasks$"):
        TaskGraph.builder("empty").execute()
