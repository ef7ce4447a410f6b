"""Read DFTracer traces (``.pfw``, ``.pfw.gz``) of every writer generation.

:class:`TraceReader` reads a file or a folder and yields raw chunks, lines,
JSON dicts, decoded :class:`Event` objects or Arrow record batches. Lines it
cannot use are counted in :meth:`TraceReader.statistics` and never stop a
read. :class:`Decoder` decodes text that the caller reads and inflates
itself.
"""

from __future__ import annotations

from ._decoder import Decoder as Decoder
from ._event import Event as Event
from ._event import FileMetadata as FileMetadata
from ._reader import TraceReader as TraceReader
from ._stats import MAX_BAD_LINES_KEPT as MAX_BAD_LINES_KEPT
from ._stats import BadLine as BadLine
from ._stats import FileStatistics as FileStatistics
from ._stats import TraceStatistics as TraceStatistics

__all__ = [
    "MAX_BAD_LINES_KEPT",
    "BadLine",
    "Decoder",
    "Event",
    "FileMetadata",
    "FileStatistics",
    "TraceReader",
    "TraceStatistics",
]
