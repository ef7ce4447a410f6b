from __future__ import annotations

import logging
import os
import stat
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from .._hub import current_task
from . import _decode
from ._decoder import DEFAULT_MEMORY_BUDGET as DEFAULT_MEMORY_BUDGET
from ._decoder import MIN_MEMORY_BUDGET as MIN_MEMORY_BUDGET
from ._decoder import effective_budget
from ._event import Event, FileMetadata, HashTable
from ._inflate import iter_line_chunks
from ._prefetch import iter_prefetched_chunks
from ._stats import FileRecord, TraceStatistics

logger = logging.getLogger(__name__)

#: Largest chunk, whatever the budget: bigger chunks stop helping once the
#: per-call overhead of inflating and splitting is amortised.
MAX_CHUNK_BYTES = 1024 * 1024
#: Files at least this large on disk are inflated in a reader thread when
#: ``prefetch`` is ``None`` and the caller is a greenpipe task. Below it,
#: starting and joining the thread costs more than the overlap saves.
PREFETCH_MIN_FILE_BYTES = 256 * 1024

#: Name endings of files read when a folder is scanned.
TRACE_SUFFIXES = (".pfw", ".pfw.gz")
_IGNORED = (b"", b"[", b"]")
#: Name endings of side-car indexes, skipped even after a trace suffix.
INDEX_SUFFIXES = (".zindex", ".idx")


class TraceReader:
    """Read DFTracer trace files (``.pfw``, ``.pfw.gz``) line by line.

    ``path`` is one file or a folder. A folder is scanned recursively,
    hidden files and folders included, for names ending in ``.pfw`` or
    ``.pfw.gz``; index side-cars (``.zindex``, ``.idx``) and other files
    are skipped and listed in :meth:`statistics`. Files are read one after
    the other, sorted by their path relative to the folder. A single file
    is read whatever its name; gzip is recognised by its magic bytes. A
    device or socket is never read: it is listed as skipped.

    Every iterator starts a new pass over the files. Lines that cannot be
    used never stop a pass: they are counted per file with their line
    numbers and reasons, available from :meth:`statistics` during and after
    the pass. Leaving an iterator early (``break``, ``close()``, or
    dropping it) closes the open file.

    ``memory_budget`` bounds the bytes in flight between the disk and the
    consumer. It sets the chunk size (a sixteenth of the budget, at most
    1 MiB) and the longest line accepted (a quarter of the budget; longer
    lines are reported as bad). Inside a greenpipe task, files of
    ``PREFETCH_MIN_FILE_BYTES`` or more on disk are inflated in a reader
    thread that runs up to two chunks ahead of decoding, through a bounded
    channel, so that the task's hub runs other tasks during reads. Elsewhere
    files are inflated in the calling thread unless ``prefetch`` is
    ``True``: with the file in the page cache, or read from a local disk
    with the kernel's readahead, the thread made decoding slower. The reader then
    holds about ten chunks (queued, being built, being decoded and its
    split lines), well under the budget. Not counted: the inflater's own
    state (about 40 KB for zlib, 90 KB for isal), the hash tables kept
    for :meth:`metadata`, and what the consumer keeps.

    Blocking: iteration waits for file reads and inflating, parking the
    calling task inside greenpipe (its hub runs other tasks meanwhile)
    and blocking the calling thread elsewhere.

    Cancellation: inside a task, waiting for the next chunk is a
    cancellation point; the reader thread is stopped before the
    cancellation propagates.

    Threads: a reader may be used from one thread at a time. With
    prefetching, each file being read has one reader thread: from the
    executor's I/O pool when the caller is a task, a plain thread
    otherwise. Leaving an iterator early stops it before returning.

    Args:
        path: a trace file or a folder of traces.
        memory_budget: bytes; 0 means 64 MiB. Positive values below
            64 KiB are raised to 64 KiB.
        prefetch: ``True`` to inflate every file in a reader thread,
            ``False`` to inflate in the calling thread, ``None`` to use
            the thread inside a greenpipe task for files of
            ``PREFETCH_MIN_FILE_BYTES`` or more, and not elsewhere.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``memory_budget`` is negative.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        memory_budget: int = 0,
        *,
        prefetch: Optional[bool] = None,
    ) -> None:
        budget = effective_budget(memory_budget)
        self._path = os.fspath(path)
        if not os.path.exists(self._path):
            raise FileNotFoundError(f"trace path not found: {self._path!r}")

        self.memory_budget = budget
        self.chunk_bytes = min(budget // 16, MAX_CHUNK_BYTES)
        self.max_line_bytes = budget // 4
        self.prefetch = prefetch
        self._inflater: Any = None
        self._files, self._skipped = self._find_files()
        self._records: Dict[str, FileRecord] = {}
        self._tables: Dict[str, HashTable] = {}

    @property
    def files(self) -> Tuple[str, ...]:
        """The trace files to read, in reading order."""
        return self._files

    def _find_files(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        if not os.path.isdir(self._path):
            mode = os.stat(self._path).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
                # A device such as /dev/zero never ends, so reading it would
                # never finish. Pipes stay readable for process substitution.
                # NOTE: only the first pass reads a pipe; a second one finds
                # it empty, or waits for a writer to open a named pipe.
                logger.warning(
                    "%s is a device or socket, not a trace file; skipped", self._path
                )
                return (), (self._path,)
            return (self._path,), ()

        found: List[Tuple[str, str]] = []
        skipped: List[str] = []
        for folder, subfolders, names in os.walk(self._path):
            subfolders.sort()
            for name in names:
                full = os.path.join(folder, name)
                if name.endswith(TRACE_SUFFIXES) and os.path.isfile(full):
                    found.append((os.path.relpath(full, self._path), full))
                else:
                    skipped.append(full)
        found.sort()
        skipped.sort()
        if not found:
            logger.warning("no trace files (.pfw, .pfw.gz) in %s", self._path)
        return tuple(full for _, full in found), tuple(skipped)

    # -- the seam between reading and decoding ---------------------------

    def _chunks(self, path: str, record: FileRecord) -> Iterator[bytes]:
        if self._use_prefetch(path):
            return iter_prefetched_chunks(
                path, self.chunk_bytes, self.max_line_bytes, record, self._inflater
            )
        return iter_line_chunks(
            path, self.chunk_bytes, self.max_line_bytes, record, self._inflater
        )

    def _use_prefetch(self, path: str) -> bool:
        if self.prefetch is not None:
            return self.prefetch
        if current_task() is None:
            return False
        try:
            size = os.path.getsize(path)
        except OSError:
            return False  # iter_line_chunks raises the error in this thread
        return size >= PREFETCH_MIN_FILE_BYTES

    def _passes(
        self, decode: Callable[[Iterator[bytes], FileRecord, str], Iterator[Any]]
    ) -> Iterator[Any]:
        """Run ``decode`` over each file in turn, keeping the counters."""
        for path in self._files:
            record = FileRecord(path)
            self._records[path] = record
            chunks = self._chunks(path, record)
            try:
                yield from decode(chunks, record, path)
            except OSError as exc:
                record.damage = f"read failed: {exc}"
                logger.warning("reading %s failed: %s", path, exc)
                continue
            finally:
                chunks.close()
            record.complete = True
            if record.bad_count or record.damage:
                logger.debug(
                    "%s: %d bad lines, damage: %s",
                    path,
                    record.bad_count,
                    record.damage,
                )

    # -- public iterators ---------------------------------------------------

    def iter_raw(self) -> Iterator[bytes]:
        """Yield the inflated bytes of each file in line-aligned chunks.

        Each chunk holds whole lines and ends with ``b"\\n"``, except the
        last chunk of a file without a final newline. Chunks never span two
        files. Nothing is parsed, so only byte, line and damage counters
        are filled.
        """

        def decode(
            chunks: Iterator[bytes], record: FileRecord, path: str
        ) -> Iterator[bytes]:
            return chunks

        return self._passes(decode)

    def iter_lines(self) -> Iterator[bytes]:
        """Yield each event line as ``bytes``, without surrounding spaces.

        Blank lines and lone ``[`` or ``]`` lines are skipped and counted
        as ignored; nothing is parsed, so bad JSON is not detected here.
        """

        def decode(
            chunks: Iterator[bytes], record: FileRecord, path: str
        ) -> Iterator[bytes]:
            for chunk in chunks:
                lines = chunk.split(b"\n")
                if not lines[-1]:
                    lines.pop()
                for line in lines:
                    line = line.strip()
                    if line in _IGNORED:
                        record.ignored_lines += 1
                        continue
                    yield line

        return self._passes(decode)

    def iter_lines_json(self) -> Iterator[Dict[str, Any]]:
        """Yield each event as the ``dict`` that ``orjson`` decodes.

        Quirks are repaired as for :meth:`iter_events`, but numbers keep
        their JSON types and hashes are not resolved.
        """

        def decode(
            chunks: Iterator[bytes], record: FileRecord, path: str
        ) -> Iterator[Dict[str, Any]]:
            return _decode.iter_dicts(chunks, record, self.max_line_bytes)

        return self._passes(decode)

    def iter_events(self, *, include_metadata: bool = False) -> Iterator[Event]:
        """Yield each event as an :class:`Event`, hashes resolved.

        ``fhash`` and ``hhash`` are resolved through the ``FH`` and ``HH``
        metadata seen earlier in the same file (the latest definition
        wins). Metadata events update the tables kept by :meth:`metadata`
        and are yielded too when ``include_metadata`` is true.

        Args:
            include_metadata: also yield ``ph: "M"`` events.
        """

        def decode(
            chunks: Iterator[bytes], record: FileRecord, path: str
        ) -> Iterator[List[Event]]:
            table = HashTable()
            self._tables[path] = table
            return _decode.iter_event_batches(
                chunks, record, self.max_line_bytes, table, include_metadata
            )

        # The files' batches of events, flattened without a Python frame
        # per event.
        return _decode.flatten(self._passes(decode))

    def _iter_events_with_file(self) -> Iterator[Tuple[Event, str]]:
        """Yield ``(event, file path)`` pairs, metadata events left out."""

        def decode(
            chunks: Iterator[bytes], record: FileRecord, path: str
        ) -> Iterator[Tuple[Event, str]]:
            table = HashTable()
            self._tables[path] = table
            for event in _decode.iter_events(
                chunks, record, self.max_line_bytes, table, False
            ):
                yield event, path

        return self._passes(decode)

    def iter_arrow(self, batch_size: int = 65536) -> Iterator[Any]:
        """Yield events as ``pyarrow.RecordBatch`` objects.

        Columns: ``name``, ``category``, ``phase``, ``path``, ``hostname``
        (string), ``pid``, ``tid``, ``ts``, ``dur`` (int64) and ``args`` (the arguments as a JSON string, because their keys differ
        from event to event and hash values can exceed int64). A ``pid``,
        ``tid``, ``ts`` or ``dur`` outside the int64 range is null. Metadata
        events are not included. A batch never mixes two files.

        Args:
            batch_size: maximum number of rows per batch.

        Raises:
            ImportError: pyarrow is not installed.
            ValueError: ``batch_size`` is not positive.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, not {batch_size!r}")
        try:
            from ._arrow import iter_record_batches
        except ImportError as exc:
            raise ImportError(
                "iter_arrow needs pyarrow, install it with "
                "pip install 'greenpipe[arrow]'"
            ) from exc
        return iter_record_batches(self, batch_size)

    # -- results ------------------------------------------------------------

    def statistics(self) -> TraceStatistics:
        """Return the counters of the latest pass over each file."""
        files = tuple(
            self._records[path].freeze()
            for path in self._files
            if path in self._records
        )
        return TraceStatistics(
            files=files,
            skipped_files=self._skipped,
            events=sum(f.events for f in files),
            metadata_events=sum(f.metadata_events for f in files),
            bad_lines=sum(f.bad_lines for f in files),
            damaged_files=sum(1 for f in files if f.damage is not None),
        )

    def metadata(self) -> Mapping[str, FileMetadata]:
        """Return the metadata read by :meth:`iter_events`, per file path.

        Covers the files whose events were decoded so far; each entry
        reflects the latest pass and, for a hash defined twice, the last
        definition in the file.
        """
        return {path: table.freeze(path) for path, table in self._tables.items()}
