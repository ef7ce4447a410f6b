"""TaskGraph: a builder of common task shapes on top of pipeline tasks.

A :class:`TaskGraph` creates :class:`~greenpipe.pipeline.Task` objects in
groups: ``parallel`` (independent tasks), ``map`` (one task per input),
``fan_out`` (one input, several tasks), ``fan_in`` (several inputs, one
task) and ``reduce`` (a tree of reducers). The tasks are ordinary pipeline
tasks, so a graph runs with :meth:`TaskGraph.execute` or as part of a
larger :class:`~greenpipe.pipeline.Pipeline`, and tasks outside the graph
may depend on its groups.

Tree reduction. ``reduce(group, split_every(k), fn)`` cuts the group's
tasks, in order, into consecutive chunks of ``k``. Each chunk of two or
more gets one reducer task ``fn(scope, *values)``. A chunk of one (the
last, when the count is not a multiple of ``k``) passes to the next level
untouched, with no reducer call. Levels repeat until one task is left. A
group of a single task still gets exactly one reducer call,
``fn(scope, value)``, so the result always went through ``fn``. Values
keep their left-to-right order at every level, so ``fn`` must be
associative but need not be commutative; the grouping depends only on the
group's size, so the result is the same on every run. With ``n`` inputs,
``fn`` runs about ``(n - 1) / (k - 1)`` times in ``ceil(log_k(n))``
levels, and the reducers of one level run in parallel.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .pipeline import Pipeline, PipelineConfig, Task

__all__ = ["TaskGraph", "TaskGroup", "num_outputs", "split_every"]


@dataclass(frozen=True)
class num_outputs:  # noqa: N801 - reads as a function call at the call site
    """The number of tasks that :meth:`TaskGraph.fan_out` creates.

    Raises:
        ValueError: ``n`` is below 1.
    """

    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"num_outputs must be an int >= 1, not {self.n!r}")


@dataclass(frozen=True)
class split_every:  # noqa: N801 - reads as a function call at the call site
    """How many values each reducer of :meth:`TaskGraph.reduce` combines.

    Raises:
        ValueError: ``k`` is below 2, which would never shrink the group.
    """

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"split_every must be an int >= 2, not {self.k!r}")


class TaskGroup:
    """An ordered group of tasks made by one :class:`TaskGraph` call.

    Iterating a group and :meth:`tasks` give its tasks in order.
    """

    def __init__(self, graph: TaskGraph, name: str, tasks: list[Task]) -> None:
        self._graph = graph
        self.name = name
        self._tasks = tasks

    def __repr__(self) -> str:
        return f"<TaskGroup {self.name!r} of {len(self._tasks)} tasks>"

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    @property
    def graph(self) -> TaskGraph:
        """The graph that made this group."""
        return self._graph

    def tasks(self) -> list[Task]:
        """Return the group's tasks in order."""
        return list(self._tasks)

    def task(self) -> Task:
        """Return the only task of a group of one.

        Raises:
            ValueError: The group does not hold exactly one task.
        """
        if len(self._tasks) != 1:
            raise ValueError(
                f"group {self.name!r} has {len(self._tasks)} tasks; task() needs "
                "exactly one, use tasks() instead"
            )
        return self._tasks[0]


class TaskGraph:
    """A named set of tasks built in groups; create it with :meth:`builder`.

    Every builder method creates tasks, registers them in the graph and
    returns them as a :class:`TaskGroup`. Task names are
    ``"<graph>.<group>[<index>]"``, where ``<group>`` defaults to the
    method's name, numbered when used again (``map``, ``map2``). Nothing
    runs until :meth:`execute`, or until a pipeline that contains the
    tasks runs.

    Threads: build a graph from one thread.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, not {name!r}")
        self.name = name
        self._tasks: list[Task] = []
        self._members: set[Task] = set()
        self._group_names: dict[str, int] = {}

    @classmethod
    def builder(cls, name: str) -> TaskGraph:
        """Return a new, empty graph called ``name``.

        Raises:
            ValueError: ``name`` is not a non-empty string.
        """
        return cls(name)

    def __repr__(self) -> str:
        return f"<TaskGraph {self.name!r} of {len(self._tasks)} tasks>"

    def tasks(self) -> list[Task]:
        """Return every task of the graph in the order it was added."""
        return list(self._tasks)

    def sources(self) -> list[Task]:
        """Return the tasks of the graph that depend on no task."""
        return [task for task in self._tasks if not task.parents]

    # -- building --------------------------------------------------------------

    def add(self, task: Task) -> TaskGroup:
        """Add a task made with :func:`~greenpipe.pipeline.make_task`.

        Returns a group of one holding it.

        Raises:
            TypeError: ``task`` is not a :class:`Task`.
            ValueError: ``task`` is already in the graph.
        """
        if not isinstance(task, Task):
            raise TypeError(f"add() takes a Task, not {task!r}")
        if task in self._members:
            raise ValueError(f"task {task.name!r} was added twice to graph {self.name!r}")
        self._register(task)
        return TaskGroup(self, task.name, [task])

    def parallel(self, n: int, fn: Callable[..., Any], *, name: str | None = None) -> TaskGroup:
        """Create ``n`` independent tasks; task ``i`` runs ``fn(scope, i)``.

        Raises:
            ValueError: ``n`` is below 1.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, not {n!r}")
        group = self._group_name(name, "parallel")
        tasks = [
            self._new_task(_bind_index(fn, i), f"{group}[{i}]") for i in range(n)
        ]
        return TaskGroup(self, group, tasks)

    def map(self, group: TaskGroup, fn: Callable[..., Any], *, name: str | None = None) -> TaskGroup:
        """Create one task per task of ``group``, running ``fn(scope, value)``.

        Raises:
            ValueError: ``group`` belongs to another graph or is empty.
        """
        inputs = self._inputs(group)
        label = self._group_name(name, "map")
        tasks = [
            self._new_task(fn, f"{label}[{i}]").depends_on(source)
            for i, source in enumerate(inputs)
        ]
        return TaskGroup(self, label, tasks)

    def fan_out(
        self,
        group: TaskGroup,
        outputs: num_outputs,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
    ) -> TaskGroup:
        """Create ``outputs.n`` tasks fed by the one task of ``group``.

        Task ``i`` runs ``fn(scope, i, value)``.

        Raises:
            TypeError: ``outputs`` is not a :class:`num_outputs`.
            ValueError: ``group`` does not hold exactly one task, or belongs
                to another graph.
        """
        if not isinstance(outputs, num_outputs):
            raise TypeError(f"fan_out() needs num_outputs(n), not {outputs!r}")
        inputs = self._inputs(group)
        if len(inputs) != 1:
            raise ValueError(
                f"fan_out() needs a group of one task, but group {group.name!r} "
                f"has {len(inputs)}; use map() for one task per input"
            )
        label = self._group_name(name, "fan_out")
        tasks = [
            self._new_task(_bind_index(fn, i), f"{label}[{i}]").depends_on(inputs[0])
            for i in range(outputs.n)
        ]
        return TaskGroup(self, label, tasks)

    def fan_in(self, group: TaskGroup, fn: Callable[..., Any], *, name: str | None = None) -> TaskGroup:
        """Create one task running ``fn(scope, *values)`` over all of ``group``.

        Raises:
            ValueError: ``group`` belongs to another graph or is empty.
        """
        inputs = self._inputs(group)
        label = self._group_name(name, "fan_in")
        task = self._new_task(fn, f"{label}[0]").depends_on(*inputs)
        return TaskGroup(self, label, [task])

    def reduce(
        self,
        group: TaskGroup,
        split: split_every,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
    ) -> TaskGroup:
        """Reduce ``group`` to one value with a tree of ``fn(scope, *values)``.

        See the module docstring for the exact grouping. Returns a group of
        one: the root of the tree.

        Raises:
            TypeError: ``split`` is not a :class:`split_every`.
            ValueError: ``group`` belongs to another graph or is empty.
        """
        if not isinstance(split, split_every):
            raise TypeError(f"reduce() needs split_every(k), not {split!r}")
        level = self._inputs(group)
        label = self._group_name(name, "reduce")
        if len(level) == 1:
            root = self._new_task(fn, f"{label}[0.0]").depends_on(level[0])
            return TaskGroup(self, label, [root])
        depth = 0
        while len(level) > 1:
            next_level = []
            for start in range(0, len(level), split.k):
                chunk = level[start : start + split.k]
                if len(chunk) == 1:
                    next_level.append(chunk[0])
                    continue
                index = len(next_level)
                reducer = self._new_task(fn, f"{label}[{depth}.{index}]")
                next_level.append(reducer.depends_on(*chunk))
            level = next_level
            depth += 1
        return TaskGroup(self, label, level)

    # -- running ---------------------------------------------------------------

    def execute(self, config: PipelineConfig | None = None, *, destination: Task | None = None) -> Any:
        """Run every task of the graph as one pipeline.

        Blocking: as :meth:`Pipeline.execute`, whose errors it raises.

        Args:
            config: Pipeline settings; its name defaults to the graph's.
            destination: The task whose value to return; ``None`` returns
                ``None``.

        Raises:
            ValueError: The graph is empty.
        """
        if not self._tasks:
            raise ValueError(f"graph {self.name!r} has no tasks")
        if config is None:
            config = PipelineConfig().with_name(self.name)
        pipeline = Pipeline(config).set_source(self.sources() or self._tasks)
        if destination is not None:
            pipeline.set_destination(destination)
        return pipeline.execute()

    # -- helpers ---------------------------------------------------------------

    def _group_name(self, name: str | None, default: str) -> str:
        base = name if name is not None else default
        if not isinstance(base, str) or not base:
            raise ValueError(f"name must be a non-empty string, not {name!r}")
        uses = self._group_names.get(base, 0) + 1
        self._group_names[base] = uses
        label = base if uses == 1 else f"{base}{uses}"
        return f"{self.name}.{label}"

    def _inputs(self, group: TaskGroup) -> list[Task]:
        if not isinstance(group, TaskGroup):
            raise TypeError(f"expected a TaskGroup, not {group!r}")
        if group.graph is not self:
            raise ValueError(
                f"group {group.name!r} belongs to graph {group.graph.name!r}, "
                f"not {self.name!r}"
            )
        if not len(group):
            raise ValueError(f"group {group.name!r} is empty")
        return group.tasks()

    def _new_task(self, fn: Callable[..., Any], name: str) -> Task:
        task = Task(fn, name)
        self._register(task)
        return task

    def _register(self, task: Task) -> None:
        self._members.add(task)
        self._tasks.append(task)


def _bind_index(fn: Callable[..., Any], index: int) -> Callable[..., Any]:
    """Return a body that calls ``fn(scope, index, *values)``."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {fn!r}")

    body: Callable[..., Any]
    if inspect.isgeneratorfunction(fn):

        def body(scope: Any, *values: Any) -> Any:
            return (yield from fn(scope, index, *values))

    else:

        def body(scope: Any, *values: Any) -> Any:
            return fn(scope, index, *values)

    body.__qualname__ = getattr(fn, "__qualname__", "body")
    return body
