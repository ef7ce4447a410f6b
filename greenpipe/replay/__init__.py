"""Replay the I/O recorded in DFTracer traces under a sandboxed root.

:func:`replay` (or :class:`Replayer`, for cancelling and progress) reads
traces through a parse -> decode -> execute pipeline and re-executes their
POSIX and STDIO calls, with the traced sizes and offsets, on files mapped
under a root folder by :class:`PathSandbox`. The result is a
:class:`ReplaySummary`. :class:`ReplayContext`, :class:`StreamRunner` and
:class:`StreamStats` are the building blocks of the execute stage, for
programs that build their own pipeline (``examples/replay_trace.py``).

:class:`ShardedReplayer` (or ``replay(..., processes=N)``) spreads the
trace files over worker processes. Each worker runs
:func:`run_shard` on a :class:`ReplayShard` and returns a
:class:`ShardResult`; both pickle, so a cluster engine can run the same
function. :func:`run_shard_in_subroot` replays a shard into a sub-root
of its own, so that an engine may run it again after losing a worker.
"""

from __future__ import annotations

from ._execute import ReplayContext as ReplayContext
from ._execute import StreamRunner as StreamRunner
from ._options import ReplayOptions as ReplayOptions
from ._pipeline import InsufficientSpaceError as InsufficientSpaceError
from ._pipeline import ReplayError as ReplayError
from ._pipeline import ReplayProgress as ReplayProgress
from ._pipeline import Replayer as Replayer
from ._pipeline import find_trace_files as find_trace_files
from ._pipeline import replay as replay
from ._processes import ShardedReplayer as ShardedReplayer
from ._sandbox import PathSandbox as PathSandbox
from ._sandbox import SandboxError as SandboxError
from ._sandbox import map_components as map_components
from ._sandbox import prepare_root as prepare_root
from ._shards import ReplayShard as ReplayShard
from ._split import FilePart as FilePart
from ._shards import ShardResult as ShardResult
from ._shards import merge_results as merge_results
from ._shards import partition_files as partition_files
from ._shards import run_shard as run_shard
from ._shards import run_shard_in_subroot as run_shard_in_subroot
from ._summary import Preparation as Preparation
from ._summary import ReplaySummary as ReplaySummary
from ._summary import StreamStats as StreamStats

__all__ = [
    "FilePart",
    "InsufficientSpaceError",
    "PathSandbox",
    "Preparation",
    "ReplayContext",
    "ReplayError",
    "ReplayOptions",
    "ReplayProgress",
    "ReplaySummary",
    "ReplayShard",
    "Replayer",
    "SandboxError",
    "ShardResult",
    "ShardedReplayer",
    "StreamRunner",
    "StreamStats",
    "find_trace_files",
    "map_components",
    "merge_results",
    "partition_files",
    "prepare_root",
    "replay",
    "run_shard",
    "run_shard_in_subroot",
]
