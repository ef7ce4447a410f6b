"""Replay the I/O recorded in DFTracer traces under a sandboxed root.

:func:`replay` (or :class:`Replayer`, for cancelling and progress) reads
traces through a parse -> decode -> execute pipeline and re-executes their
POSIX and STDIO calls, with the traced sizes and offsets, on files mapped
under a root folder by :class:`PathSandbox`. The result is a
:class:`ReplaySummary`.
"""

from __future__ import annotations

from ._options import ReplayOptions as ReplayOptions
from ._pipeline import InsufficientSpaceError as InsufficientSpaceError
from ._pipeline import ReplayError as ReplayError
from ._pipeline import ReplayProgress as ReplayProgress
from ._pipeline import Replayer as Replayer
from ._pipeline import find_trace_files as find_trace_files
from ._pipeline import replay as replay
from ._sandbox import PathSandbox as PathSandbox
from ._sandbox import SandboxError as SandboxError
from ._sandbox import map_components as map_components
from ._summary import Preparation as Preparation
from ._summary import ReplaySummary as ReplaySummary

__all__ = [
    "InsufficientSpaceError",
    "PathSandbox",
    "Preparation",
    "ReplayError",
    "ReplayOptions",
    "ReplayProgress",
    "ReplaySummary",
    "Replayer",
    "SandboxError",
    "find_trace_files",
    "map_components",
    "replay",
]
