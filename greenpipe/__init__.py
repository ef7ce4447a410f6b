"""greenpipe: structured concurrency on greenlets, pipelines and trace replay.

The public names are re-exported here; the modules behind them are private.
"""

from __future__ import annotations

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
from ._scope import sleep as sleep
from ._task import CoroTask as CoroTask
from ._task import coroutine as coroutine

__version__ = "0.1.0"

__all__ = [
    "Cancelled",
    "CoroScope",
    "CoroTask",
    "DeadlockError",
    "Executor",
    "ExecutorShutdownError",
    "GreenpipeError",
    "IOFuture",
    "SpawnFuture",
    "coroutine",
    "current_scope",
    "run",
    "sleep",
]
