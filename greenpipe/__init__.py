"""greenpipe: structured concurrency on greenlets, pipelines and trace replay.

The public names are re-exported here; the modules behind them are private.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, List

from ._channel import Channel as Channel
from ._channel import ChannelClosedError as ChannelClosedError
from ._channel import ChannelProducer as ChannelProducer
from ._channel import ChannelStatistics as ChannelStatistics
from ._channel import make_channel as make_channel
from ._errors import Cancelled as Cancelled
from ._errors import DeadlockError as DeadlockError
from ._errors import ExecutorShutdownError as ExecutorShutdownError
from ._errors import GreenpipeError as GreenpipeError
from ._executor import Executor as Executor
from ._executor import run as run
from ._scope import CoroScope as CoroScope
from ._scope import IOFuture as IOFuture
from ._scope import SpawnFuture as SpawnFuture
from ._scope import current_scope as current_scope
from ._scope import shield as shield
from ._scope import sleep as sleep
from ._sync import JoinHandle as JoinHandle
from ._task import CoroTask as CoroTask
from ._task import coroutine as coroutine

# Loaded on first use: the replay's worker processes need none of these,
# and importing them would add to the start of every worker.
_LAZY = {
    "WhenAnyResult": "._combinators",
    "fail_after": "._combinators",
    "move_on_after": "._combinators",
    "timeout": "._combinators",
    "when_all": "._combinators",
    "when_any": "._combinators",
    "AsyncGenerator": "._generators",
    "TaskGraph": ".graph",
    "TaskGroup": ".graph",
    "num_outputs": ".graph",
    "split_every": ".graph",
    "FailurePolicy": ".pipeline",
    "Pipeline": ".pipeline",
    "PipelineConfig": ".pipeline",
    "PipelineTimeoutError": ".pipeline",
    "Task": ".pipeline",
    "TaskState": ".pipeline",
    "TaskTimeoutError": ".pipeline",
    "available_memory": ".pipeline",
    "compute_channel_capacity": ".pipeline",
    "compute_file_batch_size": ".pipeline",
    "compute_memory_budget": ".pipeline",
    "estimate_per_file_bytes": ".pipeline",
    "make_task": ".pipeline",
}

if TYPE_CHECKING:
    from ._combinators import WhenAnyResult as WhenAnyResult
    from ._combinators import fail_after as fail_after
    from ._combinators import move_on_after as move_on_after
    from ._combinators import timeout as timeout
    from ._combinators import when_all as when_all
    from ._combinators import when_any as when_any
    from ._generators import AsyncGenerator as AsyncGenerator
    from .graph import TaskGraph as TaskGraph
    from .graph import TaskGroup as TaskGroup
    from .graph import num_outputs as num_outputs
    from .graph import split_every as split_every
    from .pipeline import FailurePolicy as FailurePolicy
    from .pipeline import Pipeline as Pipeline
    from .pipeline import PipelineConfig as PipelineConfig
    from .pipeline import PipelineTimeoutError as PipelineTimeoutError
    from .pipeline import Task as Task
    from .pipeline import TaskState as TaskState
    from .pipeline import TaskTimeoutError as TaskTimeoutError
    from .pipeline import available_memory as available_memory
    from .pipeline import compute_channel_capacity as compute_channel_capacity
    from .pipeline import compute_file_batch_size as compute_file_batch_size
    from .pipeline import compute_memory_budget as compute_memory_budget
    from .pipeline import estimate_per_file_bytes as estimate_per_file_bytes
    from .pipeline import make_task as make_task


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"

__all__ = [
    "AsyncGenerator",
    "Cancelled",
    "Channel",
    "ChannelClosedError",
    "ChannelProducer",
    "ChannelStatistics",
    "CoroScope",
    "CoroTask",
    "DeadlockError",
    "Executor",
    "ExecutorShutdownError",
    "FailurePolicy",
    "GreenpipeError",
    "IOFuture",
    "JoinHandle",
    "Pipeline",
    "PipelineConfig",
    "PipelineTimeoutError",
    "SpawnFuture",
    "Task",
    "TaskGraph",
    "TaskGroup",
    "TaskState",
    "TaskTimeoutError",
    "WhenAnyResult",
    "available_memory",
    "compute_channel_capacity",
    "compute_file_batch_size",
    "compute_memory_budget",
    "coroutine",
    "current_scope",
    "estimate_per_file_bytes",
    "fail_after",
    "make_channel",
    "make_task",
    "move_on_after",
    "num_outputs",
    "run",
    "shield",
    "sleep",
    "split_every",
    "timeout",
    "when_all",
    "when_any",
]
