from __future__ import annotations

import dataclasses
import types
from typing import Dict, List, Mapping, Optional, Tuple

#: How many bad line numbers are kept per file. Past this limit only the
#: counters grow, so a file of garbage cannot exhaust memory.
MAX_BAD_LINES_KEPT = 1000

# Reasons attached to bad lines. They are module constants so that every
# record of the same reason shares one string object.
REASON_INVALID_JSON = "invalid JSON"
REASON_NOT_OBJECT = "not a JSON object"
REASON_INVALID_FIELD = "invalid value in a numeric field"
REASON_NOT_TEXT = "name or cat is not a string"
REASON_TOO_LONG = "line longer than the maximum line length"
REASON_CUT_BY_DAMAGE = "line cut off by damaged gzip data"
REASON_UNFINISHED_JOIN = "split event not completed before end of file"


@dataclasses.dataclass(frozen=True)
class BadLine:
    """One line of a trace file that could not be used.

    Attributes:
        line: 1-based physical line number in the (inflated) file.
        reason: why the line was rejected, one of a few fixed phrases.
    """

    line: int
    reason: str


@dataclasses.dataclass(frozen=True)
class FileStatistics:
    """Counters for one trace file, from the latest pass over it.

    Attributes:
        path: the file as passed to or found by the reader.
        complete: ``True`` when the pass read the file to its end, ``False``
            when the consumer stopped early.
        compressed: ``True`` for gzip input.
        gzip_members: number of gzip members seen (0 for plain files).
        bytes_read: bytes read from disk.
        bytes_inflated: bytes after decompression (equal to ``bytes_read``
            for plain files).
        lines: physical lines, counting a last line without a final newline.
        events: decoded events other than metadata (``ph`` not ``"M"``).
            Counted by ``iter_lines_json``, ``iter_events`` and
            ``iter_arrow``; 0 after ``iter_lines`` and ``iter_raw``.
        metadata_events: decoded ``ph: "M"`` events.
        ignored_lines: blank lines and lone ``[`` or ``]`` lines.
        repaired_lines: lines that parsed only after a repair (trailing
            comma, invalid UTF-8, control characters, ``[`` prefix or ``,``
            suffix).
        joined_lines: lines merged into the line before them because a raw
            newline inside a string had split one event.
        unresolved_hashes: ``fhash`` or ``hhash`` values with no earlier
            definition in the same file.
        bad_lines: total number of lines that could not be used.
        bad_line_reasons: number of bad lines per reason.
        first_bad_lines: the first bad lines, at most ``MAX_BAD_LINES_KEPT``
            of them, in file order.
        damage: description of damaged compressed data (truncated or
            corrupt gzip member, bytes after the last member), or ``None``.
            Lines before the damage are still delivered.
    """

    path: str
    complete: bool
    compressed: bool
    gzip_members: int
    bytes_read: int
    bytes_inflated: int
    lines: int
    events: int
    metadata_events: int
    ignored_lines: int
    repaired_lines: int
    joined_lines: int
    unresolved_hashes: int
    bad_lines: int
    bad_line_reasons: Mapping[str, int]
    first_bad_lines: Tuple[BadLine, ...]
    damage: Optional[str]


@dataclasses.dataclass(frozen=True)
class TraceStatistics:
    """Counters of a :class:`~greenpipe.trace.TraceReader` over all files.

    Attributes:
        files: per-file counters, in reading order, for every file read so
            far (the latest pass over each).
        skipped_files: files found in a folder and not read because they
            are index side-cars (``.zindex``, ``.idx``) or not traces.
        events: sum of ``FileStatistics.events``.
        metadata_events: sum of ``FileStatistics.metadata_events``.
        bad_lines: sum of ``FileStatistics.bad_lines``.
        damaged_files: number of files with damaged compressed data.
    """

    files: Tuple[FileStatistics, ...]
    skipped_files: Tuple[str, ...]
    events: int
    metadata_events: int
    bad_lines: int
    damaged_files: int


def _line_number(bad_line: Tuple[int, str]) -> int:
    return bad_line[0]


class FileRecord:
    """Mutable counters filled while one file is read; frozen on demand."""

    __slots__ = (
        "path",
        "complete",
        "compressed",
        "gzip_members",
        "bytes_read",
        "bytes_inflated",
        "lines",
        "events",
        "metadata_events",
        "ignored_lines",
        "repaired_lines",
        "joined_lines",
        "unresolved_hashes",
        "bad_count",
        "bad_reasons",
        "bad_kept",
        "damage",
        "unsafe_end",
        "tail",
    )

    def __init__(self, path: str) -> None:
        self.path = path
        self.complete = False
        self.compressed = False
        self.gzip_members = 0
        self.bytes_read = 0
        self.bytes_inflated = 0
        self.lines = 0
        self.events = 0
        self.metadata_events = 0
        self.ignored_lines = 0
        self.repaired_lines = 0
        self.joined_lines = 0
        self.unresolved_hashes = 0
        self.bad_count = 0
        self.bad_reasons: Dict[str, int] = {}
        self.bad_kept: List[Tuple[int, str]] = []
        self.damage: Optional[str] = None
        #: A byte range ended inside a gzip member or inside a line too
        #: long to keep, so its end is no safe boundary (see
        #: ``iter_line_chunks``).
        self.unsafe_end = False
        #: The text after the last newline of a byte range that ends
        #: before the end of the file; it begins the next range's first line.
        self.tail = b""

    def add_bad(self, line: int, reason: str) -> None:
        """Count one bad line, keeping its number while under the limit."""
        self.bad_count += 1
        self.bad_reasons[reason] = self.bad_reasons.get(reason, 0) + 1
        if len(self.bad_kept) < MAX_BAD_LINES_KEPT:
            self.bad_kept.append((line, reason))

    def freeze(self) -> FileStatistics:
        """Return an immutable snapshot of the counters."""
        return FileStatistics(
            path=self.path,
            complete=self.complete,
            compressed=self.compressed,
            gzip_members=self.gzip_members,
            bytes_read=self.bytes_read,
            bytes_inflated=self.bytes_inflated,
            lines=self.lines,
            events=self.events,
            metadata_events=self.metadata_events,
            ignored_lines=self.ignored_lines,
            repaired_lines=self.repaired_lines,
            joined_lines=self.joined_lines,
            unresolved_hashes=self.unresolved_hashes,
            bad_lines=self.bad_count,
            bad_line_reasons=types.MappingProxyType(dict(self.bad_reasons)),
            # The reader counts a line cut by damage at the end of the file,
            # which can come before the decoder's last bad lines.
            first_bad_lines=tuple(
                BadLine(n, r) for n, r in sorted(self.bad_kept, key=_line_number)
            ),
            damage=self.damage,
        )
