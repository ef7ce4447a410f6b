"""greenpipe: structured concurrency on greenlets, pipelines and trace replay.

The public names are re-exported here; the modules behind them are private.
"""

from __future__ import annotations

from ._channel import Channel as Channel
from ._channel import ChannelClosedError as ChannelClosedError
from ._channel import ChannelProducer as ChannelProducer
from ._channel import ChannelStatistics as ChannelStatistics
from ._channel import make_channel as make_channel
from ._combinators import WhenAnyResult as WhenAnyResult
from ._combinators import fail_after as fail_after
from ._combinators import move_on_after as move_on_after
from ._combinators import timeout as timeout
from ._combinators import when_all as when_all
from ._combinators import when_any as when_any
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
from ._generators import AsyncGenerator as AsyncGenerator
from ._task import CoroTask as CoroTask
from ._task import coroutine as coroutine

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
    "GreenpipeError",
    "IOFuture",
    "JoinHandle",
    "SpawnFuture",
    "WhenAnyResult",
    "coroutine",
    "current_scope",
    "fail_after",
    "make_channel",
    "move_on_after",
    "run",
    "shield",
    "sleep",
    "timeout",
    "when_all",
    "when_any",
]
