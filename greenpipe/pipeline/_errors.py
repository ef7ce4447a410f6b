"""Errors raised by pipelines, and the notes attached to task failures."""

from __future__ import annotations

from typing import Sequence

from .._errors import GreenpipeError

__all__ = ["PipelineTimeoutError", "TaskTimeoutError", "add_note"]


class PipelineTimeoutError(GreenpipeError, TimeoutError):
    """Raised by :meth:`Pipeline.execute` when the global timeout passed.

    Attributes:
        pipeline: The pipeline's name.
        seconds: The limit that passed, in seconds.
        running_tasks: Names of the tasks that were running and were
            cancelled, in the order of :meth:`Pipeline.tasks`.
    """

    def __init__(
        self, message: str, *, pipeline: str, seconds: float, running_tasks: Sequence[str]
    ) -> None:
        super().__init__(message)
        self.pipeline = pipeline
        self.seconds = seconds
        self.running_tasks = tuple(running_tasks)


class TaskTimeoutError(PipelineTimeoutError):
    """The failure of one task that ran longer than the per-task timeout.

    The task was cancelled; the pipeline's failure policy then treats it
    like any other failed task.

    Attributes:
        task_name: The name of the task that timed out.
    """

    def __init__(self, message: str, *, pipeline: str, seconds: float, task_name: str) -> None:
        super().__init__(message, pipeline=pipeline, seconds=seconds, running_tasks=[task_name])
        self.task_name = task_name


def add_note(error: BaseException, note: str) -> None:
    """Attach ``note`` to ``error`` as ``BaseException.add_note`` does.

    Python 3.9 and 3.10 have no ``add_note``; there the note goes into
    ``__notes__`` directly, which the ``exceptiongroup`` backport prints.
    """
    if hasattr(error, "add_note"):
        error.add_note(note)
        return
    notes = getattr(error, "__notes__", None)
    if not isinstance(notes, list):
        notes = []
        error.__notes__ = notes  # type: ignore[attr-defined]
    notes.append(note)
