"""Task: one node of a pipeline, with its body, its parents and its outcome."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .._errors import Cancelled

if TYPE_CHECKING:
    from ._pipeline import Pipeline

__all__ = ["Task", "TaskState", "make_task"]


class TaskState(enum.Enum):
    """The stage of a task's life.

    Attributes:
        PENDING: Not run yet.
        RUNNING: Its body is running.
        SUCCEEDED: Its body returned; :meth:`Task.get` returns the value.
        FAILED: Its body raised, or it ran past the per-task timeout.
        CANCELLED: The pipeline cancelled it (global timeout, deadlock, or
            another task's failure under the fail-fast policy).
        SKIPPED: It never started, because a task it depends on did not
            succeed or the pipeline stopped first.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


FINAL_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED}
)


def make_task(fn: Callable[..., Any], name: str | None = None) -> Task:
    """Create a pipeline task that runs ``fn(scope, *parent_values)``.

    ``fn`` is a plain or generator function. It runs in a task of its own
    with its own :class:`greenpipe.CoroScope` (``scope``), and whatever it
    spawns there is joined before the task counts as done. The values of
    the tasks it depends on arrive as positional arguments, in the order of
    the :meth:`Task.depends_on` calls.

    Args:
        fn: The task body.
        name: The name used in logs, errors and reports; defaults to the
            qualified name of ``fn``.

    Raises:
        TypeError: ``fn`` is not callable.
    """
    return Task(fn, name)


class Task:
    """One node of a pipeline; create it with :func:`make_task`.

    Threads: build the graph (``depends_on``, ``then``) from one thread
    before the pipeline runs. :meth:`get` and :attr:`state` may be read
    from any thread.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {fn!r}")
        if name is None:
            name = getattr(fn, "__qualname__", None) or repr(fn)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, not {name!r}")
        self.name = name
        self.fn = fn
        self._parents: list[Task] = []
        self._children: list[Task] = []
        self._pipeline: Pipeline | None = None
        self.state = TaskState.PENDING
        self._value: Any = None
        self._error: BaseException | None = None
        self._skip_reason = ""

    def __repr__(self) -> str:
        return f"<Task {self.name!r} {self.state.value}>"

    @property
    def parents(self) -> tuple[Task, ...]:
        """The tasks whose values this task receives, in argument order."""
        return tuple(self._parents)

    @property
    def children(self) -> tuple[Task, ...]:
        """The tasks that depend on this one, in the order they were added."""
        return tuple(self._children)

    @property
    def error(self) -> BaseException | None:
        """The exception of a failed or cancelled task, else ``None``."""
        return self._error

    def depends_on(self, *parents: Task) -> Task:
        """Make this task wait for ``parents`` and receive their values.

        Each parent's value becomes the next positional argument of the
        body, after those of earlier calls. Returns this task, so calls
        chain. Never blocks.

        Raises:
            TypeError: A parent is not a :class:`Task`.
            ValueError: A parent is this task, is already a parent, or
                depends on this task (a cycle).
            RuntimeError: This task has already been handed to a pipeline
                that ran.
        """
        self._check_editable()
        for parent in parents:
            if not isinstance(parent, Task):
                raise TypeError(f"depends_on() takes Tasks, not {parent!r}")
            if parent is self:
                raise ValueError(f"task {self.name!r} cannot depend on itself")
            if parent in self._parents or parents.count(parent) > 1:
                raise ValueError(
                    f"task {self.name!r} already depends on {parent.name!r}; "
                    "a parent can be added once"
                )
            path = self._path_to(parent)
            if path is not None:
                cycle = " -> ".join(task.name for task in [*path, self])
                raise ValueError(
                    f"task {self.name!r} cannot depend on {parent.name!r}: "
                    f"that would create the cycle {cycle}"
                )
        for parent in parents:
            parent._check_editable()
            self._parents.append(parent)
            parent._children.append(self)
        return self

    def then(self, fn: Callable[..., Any], name: str | None = None) -> Task:
        """Create a task that runs ``fn(scope, value)`` after this one.

        Returns the new task. Never blocks.

        Raises:
            TypeError: ``fn`` is not callable.
        """
        return Task(fn, name).depends_on(self)

    def get(self) -> Any:
        """Return the value the body returned, once the pipeline has run.

        Never blocks: it only reads the recorded outcome.

        Raises:
            RuntimeError: The task has not run yet, or it was skipped or
                cancelled.
            BaseException: The exception of a failed task.
        """
        state = self.state
        if state is TaskState.SUCCEEDED:
            return self._value
        if state is TaskState.FAILED:
            assert self._error is not None
            raise self._error
        if state is TaskState.SKIPPED:
            raise RuntimeError(f"task {self.name!r} was skipped: {self._skip_reason}")
        if state is TaskState.CANCELLED:
            raise RuntimeError(f"task {self.name!r} was cancelled before it finished")
        raise RuntimeError(
            f"task {self.name!r} has not run; call execute() on its pipeline first"
        )

    # -- used by the pipeline ------------------------------------------------

    def _check_editable(self) -> None:
        if self._pipeline is not None:
            raise RuntimeError(
                f"task {self.name!r} belongs to pipeline {self._pipeline.name!r}, "
                "which has run; create new tasks for a new run"
            )

    def _path_to(self, target: Task) -> list[Task] | None:
        """Return the tasks from this task down to ``target``, if it descends."""
        stack: list[tuple[Task, list[Task]]] = [(self, [self])]
        seen = {self}
        while stack:
            node, path = stack.pop()
            if node is target:
                return path
            for child in node._children:
                if child not in seen:
                    seen.add(child)
                    stack.append((child, [*path, child]))
        return None

    def _succeed(self, value: Any) -> None:
        self._value = value
        self.state = TaskState.SUCCEEDED

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self.state = TaskState.FAILED

    def _cancel(self, error: BaseException | None) -> None:
        self._error = error if error is not None else Cancelled(f"task {self.name!r} was cancelled")
        self.state = TaskState.CANCELLED

    def _skip(self, reason: str) -> None:
        self._skip_reason = reason
        self.state = TaskState.SKIPPED


def flatten_tasks(items: Any, what: str) -> list[Task]:
    """Return the tasks in ``items``: a task, a group, a graph or an iterable.

    Raises:
        TypeError: Something in ``items`` is not a task.
    """
    if isinstance(items, Task):
        return [items]
    tasks_method = getattr(items, "tasks", None)
    if callable(tasks_method):
        return list(tasks_method())
    if isinstance(items, Iterable) and not isinstance(items, (str, bytes)):
        result = []
        for item in items:
            result.extend(flatten_tasks(item, what))
        return result
    raise TypeError(f"{what} takes Tasks, TaskGroups or a TaskGraph, not {items!r}")
