"""Pipelines: graphs of tasks run on an executor, with a watchdog.

Build tasks with :func:`make_task`, connect them with
:meth:`Task.depends_on` or :meth:`Task.then`, and run them with
:meth:`Pipeline.execute`. :class:`PipelineConfig` sets the threads, the
timeouts, the watchdog and the failure policy. The memory budget helpers
size channels and batches from the memory the process may use.
"""

from __future__ import annotations

from .._memory import available_memory as available_memory
from .._memory import compute_channel_capacity as compute_channel_capacity
from .._memory import compute_file_batch_size as compute_file_batch_size
from .._memory import compute_memory_budget as compute_memory_budget
from .._memory import estimate_per_file_bytes as estimate_per_file_bytes
from ._config import FailurePolicy as FailurePolicy
from ._config import PipelineConfig as PipelineConfig
from ._errors import PipelineTimeoutError as PipelineTimeoutError
from ._errors import TaskTimeoutError as TaskTimeoutError
from ._pipeline import Pipeline as Pipeline
from ._task import Task as Task
from ._task import TaskState as TaskState
from ._task import make_task as make_task

__all__ = [
    "FailurePolicy",
    "Pipeline",
    "PipelineConfig",
    "PipelineTimeoutError",
    "Task",
    "TaskState",
    "TaskTimeoutError",
    "available_memory",
    "compute_channel_capacity",
    "compute_file_batch_size",
    "compute_memory_budget",
    "estimate_per_file_bytes",
    "make_task",
]
