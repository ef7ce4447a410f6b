"""The public decoder for callers that read and inflate trace files themselves."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Optional

from . import _decode
from ._decode import EventTally
from ._event import Event, FileMetadata, HashTable
from ._stats import FileRecord, FileStatistics

#: Budget used when ``memory_budget`` is 0.
DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024
#: Smallest budget honoured; smaller positive values are raised to it.
MIN_MEMORY_BUDGET = 64 * 1024


def effective_budget(memory_budget: int) -> int:
    """Return the budget in force for ``memory_budget`` (0 for the default).

    Raises:
        ValueError: ``memory_budget`` is negative.
    """
    if memory_budget < 0:
        raise ValueError(
            f"memory_budget must be >= 0 (0 selects the default), "
            f"not {memory_budget!r}"
        )
    return max(memory_budget or DEFAULT_MEMORY_BUDGET, MIN_MEMORY_BUDGET)


class Decoder:
    """Decode the inflated text of one trace file into events.

    For callers that read and inflate a file themselves, for example in a
    pipeline stage of their own, and want the decoding of
    :meth:`TraceReader.iter_events <greenpipe.trace.TraceReader.iter_events>`:
    the same quirk repairs, hash resolution and bad-line counting.

    Feed it the file's text as line-aligned chunks: each chunk but the
    last must end with ``b"\\n"``, which is what
    :meth:`TraceReader.iter_raw <greenpipe.trace.TraceReader.iter_raw>`
    yields. A decoder keeps the hash table and line numbers of one file,
    so use a new one per file and call one of its iterators once.

    Example:
        >>> decoder = Decoder("a.pfw")
        >>> chunks = [b'{"name":"FH","ph":"M","args":{"name":"/d","value":7}}\\n',
        ...           b'{"name":"read","cat":"POSIX","ts":1,"dur":2,"args":{"fhash":7}}\\n']
        >>> [(event.name, event.path) for event in decoder.iter_events(chunks)]
        [('read', '/d')]
        >>> decoder.statistics().metadata_events
        1

    Blocking: only as much as iterating ``chunks`` blocks.

    Threads: one thread at a time; the counters and tables may be read
    from another thread while the decoder runs, without locking.

    Args:
        path: the file's name, stored in :meth:`statistics` and
            :meth:`metadata`; it is never opened.
        memory_budget: bytes, as for :class:`~greenpipe.trace.TraceReader`
            (0 means 64 MiB); a line longer than a quarter of it is a bad
            line.
        hashes: the hash table in force where ``chunks`` start, for a
            decoder of a part of a file; ``None`` starts empty. The
            decoder adds to it.

    Raises:
        ValueError: ``memory_budget`` is negative.
    """

    __slots__ = ("path", "max_line_bytes", "_record", "_table", "_started")

    def __init__(
        self,
        path: str = "",
        *,
        memory_budget: int = 0,
        hashes: Optional[HashTable] = None,
    ) -> None:
        self.path = path
        self.max_line_bytes = effective_budget(memory_budget) // 4
        self._record = FileRecord(path)
        self._table = HashTable() if hashes is None else hashes
        self._started = False

    def _start(self) -> None:
        if self._started:
            raise RuntimeError(
                "a Decoder decodes one file once; create a new Decoder per file"
            )
        self._started = True

    def iter_events(
        self, chunks: Iterable[bytes], *, include_metadata: bool = False
    ) -> Iterator[Event]:
        """Yield the events of ``chunks`` as :class:`Event` objects.

        Works like :meth:`TraceReader.iter_events
        <greenpipe.trace.TraceReader.iter_events>` on one file.

        Args:
            chunks: the file's inflated text in line-aligned chunks.
            include_metadata: also yield ``ph: "M"`` events.

        Raises:
            RuntimeError: an iterator of this decoder was started before.
        """
        self._start()
        return _decode.iter_events(
            chunks, self._record, self.max_line_bytes, self._table, include_metadata
        )

    def iter_batches(
        self, chunks: Iterable[bytes], tally: Optional[EventTally] = None
    ) -> Iterator[List[Event]]:
        """Yield the events of :meth:`iter_events` in lists.

        The lists hold up to a few dozen events each; they are new lists,
        which the caller may keep or change. The hash tables are not
        changed while a list is handed out: definitions that come later
        in the file are read only when the next list is asked for.

        With ``tally``, most events are counted there instead of being
        built, so lists may be empty. The tally is up to date whenever a
        list is yielded. The events in the lists and those in the tally
        together are the events of :meth:`iter_events`.

        Raises:
            RuntimeError: an iterator of this decoder was started before.
        """
        self._start()
        return _decode.iter_event_batches(
            chunks, self._record, self.max_line_bytes, self._table, False, tally
        )

    def iter_lines_json(self, chunks: Iterable[bytes]) -> Iterator[Dict[str, Any]]:
        """Yield each event of ``chunks`` as the ``dict`` that orjson decodes.

        Works like :meth:`TraceReader.iter_lines_json
        <greenpipe.trace.TraceReader.iter_lines_json>` on one file: quirks
        are repaired, hashes are not resolved.

        Raises:
            RuntimeError: an iterator of this decoder was started before.
        """
        self._start()
        return _decode.iter_dicts(chunks, self._record, self.max_line_bytes)

    def resolve_path(self, value: Any) -> Optional[str]:
        """Return the path that an ``FH`` event seen so far gave ``value``.

        Accepts any form a hash is written in (int, decimal or hex
        string), for arguments such as ``newpath_hash`` that the decoder
        does not resolve itself. Returns ``None`` for an unknown hash.
        """
        return self._resolve(self._table.files, "FH", value)

    def resolve_hostname(self, value: Any) -> Optional[str]:
        """Return the host name that an ``HH`` event seen so far gave ``value``."""
        return self._resolve(self._table.hosts, "HH", value)

    def _resolve(self, exact: Dict[Any, str], kind: str, value: Any) -> Optional[str]:
        try:
            found = exact.get(value)
        except TypeError:  # unhashable, e.g. a list
            found = None
        if found is None:
            found = self._table.lookup(kind, value)
        return found

    @property
    def bad_lines(self) -> int:
        """Number of bad lines so far; cheaper than :meth:`statistics`."""
        return self._record.bad_count

    def statistics(self) -> FileStatistics:
        """Return the counters so far.

        Only the decoding counters are filled. ``complete``, ``compressed``,
        ``damage``, the byte counters and ``lines`` keep their initial
        values, because the code that reads the file tracks them.
        """
        return self._record.freeze()

    def metadata(self) -> FileMetadata:
        """Return the hash tables and process labels read so far."""
        return self._table.freeze(self.path)
