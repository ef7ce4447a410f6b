from __future__ import annotations

import os
import re
from operator import itemgetter
from typing import AbstractSet, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import orjson

from ._event import Event, HashTable, to_int
from ._stats import (
    REASON_INVALID_FIELD,
    REASON_INVALID_JSON,
    REASON_NOT_OBJECT,
    REASON_NOT_TEXT,
    REASON_UNFINISHED_JOIN,
    FileRecord,
)

# Decoding runs a fast path on every line: orjson.loads on the raw bytes
# (JSON allows the leading spaces that writers leave) and direct field
# reads. Anything unusual raises there and goes to ``_recover``, which
# knows the quirks: blank and bracket lines, trailing commas, invalid
# UTF-8, raw control characters, and events split by a raw newline. Only
# broken lines pay for the slow path.

#: Most physical lines merged into one event when a raw newline inside a
#: string split it. Paths with more embedded newlines are reported as bad.
MAX_JOINED_LINES = 8

#: Call arguments converted to int when they arrive as strings or floats.
#: ``mode`` is left alone: it is an int for ``open`` but a string such as
#: ``"r"`` for ``fopen``.
NUMERIC_ARGS = frozenset(
    (
        "count",
        "offset",
        "ret",
        "size",
        "length",
        "fd",
        "whence",
        "flags",
        "bufsize",
        "cmd",
        "level",
        "p_idx",
        "dirfd",
        "fd1",
        "fd2",
        "ppid",
    )
)

try:
    from . import _speedups  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler
    _speedups = None

#: Set ``GREENPIPE_PURE_PYTHON=1`` to decode without the compiled fast
#: path, for example to compare the two.
PURE_PYTHON = os.environ.get("GREENPIPE_PURE_PYTHON", "") not in ("", "0")

_TRAILING_COMMA = re.compile(rb",\s*([}\]])")
_CONTROL_CHAR = re.compile(rb"[\x00-\x1f]")
_IGNORED = (b"", b"[", b"]")
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

Numbered = Tuple[int, bytes]


class NeedMoreLines(Exception):
    """Raised by ``_recover`` when a split event continues in the next chunk.

    Attributes:
        group: the numbered lines consumed so far, to be retried first
            when the next chunk arrives.
    """

    def __init__(self, group: List[Numbered]) -> None:
        super().__init__()
        self.group = group


def _escape_control(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % match.group()[0]


def _parse_lenient(text: bytes) -> Tuple[Any, bool]:
    """Parse ``text`` with repairs; return ``(value, repaired)``.

    Raises:
        orjson.JSONDecodeError: no repair made the text valid.
    """
    try:
        return _loads(text), False
    except _JSONDecodeError:
        pass

    # Chrome array style: ``[{...}`` on the first line, ``{...},`` after.
    if text[:1] == b"[" and text[1:].lstrip()[:1] == b"{":
        text = text[1:]
    if text[-1:] == b",":
        text = text[:-1].rstrip()
    text = _TRAILING_COMMA.sub(rb"\1", text)
    try:
        return _loads(text), True
    except _JSONDecodeError:
        pass

    # Invalid UTF-8 (paths are written byte for byte) and raw control
    # characters inside strings. Outside strings, JSON whitespace is
    # stripped already, so escaping every control character is safe enough.
    text = text.decode("utf-8", "replace").encode("utf-8")
    text = _CONTROL_CHAR.sub(_escape_control, text)
    return _loads(text), True


def _stands_alone(line: bytes) -> Tuple[bool, Any, bool]:
    """Check whether ``line`` is usable on its own.

    Returns:
        ``(usable, value, repaired)``; ``value`` is ``None`` for blank and
        bracket lines.
    """
    stripped = line.strip()
    if stripped in _IGNORED:
        return True, None, False
    try:
        value, repaired = _parse_lenient(stripped)
    except _JSONDecodeError:
        return False, None, False
    return True, value, repaired


def _recover(
    number: int,
    line: bytes,
    lines: Iterator[Numbered],
    record: FileRecord,
    max_line_bytes: int,
) -> Any:
    """Decode a line that failed the fast path.

    May consume following lines from ``lines`` to rebuild an event split by
    a raw newline. Updates ``record`` for ignored, repaired, joined and bad
    lines.

    Returns:
        The decoded JSON value, or ``None`` when nothing usable remains.

    Raises:
        NeedMoreLines: ``lines`` ran out in the middle of a split event.
    """
    usable, value, repaired = _stands_alone(line)
    if usable:
        if value is None:
            record.ignored_lines += 1
        elif repaired:
            record.repaired_lines += 1
        return value

    if line.rstrip().endswith(b"}"):
        record.add_bad(number, REASON_INVALID_JSON)
        return None
    return _join_split_event([(number, line)], lines, record, max_line_bytes)


def _join_split_event(
    group: List[Numbered],
    lines: Iterator[Numbered],
    record: FileRecord,
    max_line_bytes: int,
) -> Any:
    """Merge the lines of ``group`` with following ones until they parse.

    A following line that is usable on its own ends the attempt: the group
    is reported as bad and that line is returned instead, so one broken
    line never swallows a good one.
    """
    joined = b"\\n".join(line for _, line in group)
    while len(group) < MAX_JOINED_LINES and len(joined) <= max_line_bytes:
        try:
            number, line = next(lines)
        except StopIteration:
            raise NeedMoreLines(group) from None

        usable, value, repaired = _stands_alone(line)
        if usable:
            for bad_number, _ in group:
                record.add_bad(bad_number, REASON_INVALID_JSON)
            if value is None:
                record.ignored_lines += 1
            elif repaired:
                record.repaired_lines += 1
            return value

        group.append((number, line))
        # The newline was inside a JSON string, where it must be escaped.
        joined = joined + b"\\n" + line
        try:
            value, _ = _parse_lenient(joined.strip())
        except _JSONDecodeError:
            continue
        record.joined_lines += len(group) - 1
        return value

    for bad_number, _ in group:
        record.add_bad(bad_number, REASON_INVALID_JSON)
    return None


def _finish_group(group: List[Numbered], record: FileRecord) -> None:
    for number, _ in group:
        record.add_bad(number, REASON_UNFINISHED_JOIN)


def _numbered_lines(
    chunk: bytes, first_number: int, carried: List[Numbered]
) -> Tuple[Iterator[Numbered], int]:
    """Split a chunk into numbered lines, after lines carried over.

    Returns:
        The iterator and the number the line after this chunk will get.
    """
    lines = chunk.split(b"\n")
    if not lines[-1]:
        lines.pop()
    numbered: Iterator[Numbered] = enumerate(lines, first_number)
    if carried:
        numbered = iter(carried + list(numbered))
    return numbered, first_number + len(lines)


def iter_dicts(
    chunks: Iterable[bytes], record: FileRecord, max_line_bytes: int
) -> Iterator[Dict[str, Any]]:
    """Yield the JSON objects of one file's line-aligned chunks."""
    next_number = 1
    carried: List[Numbered] = []
    for chunk in chunks:
        lines, next_number = _numbered_lines(chunk, next_number, carried)
        carried = []
        for number, line in lines:
            try:
                value = _loads(line)
            except _JSONDecodeError:
                try:
                    value = _recover(number, line, lines, record, max_line_bytes)
                except NeedMoreLines as more:
                    carried = more.group
                    break
                if value is None:
                    continue

            if value.__class__ is not dict:
                record.add_bad(number, REASON_NOT_OBJECT)
                continue
            if value.get("ph") == "M":
                record.metadata_events += 1
            else:
                record.events += 1
            yield value

    _finish_group(carried, record)


def _normalise_args(args: Dict[str, Any]) -> None:
    """Convert the numeric call arguments of ``args`` to int, in place."""
    for key in NUMERIC_ARGS.intersection(args):
        value = args[key]
        if value.__class__ is not int:
            try:
                args[key] = _convert_number(value)
            except (ValueError, TypeError, OverflowError):
                pass


class _Cursor:
    """Numbered lines of a chunk from a byte offset on, for the slow path.

    ``_recover`` may take lines after the one it repairs, so the fast path
    resumes at ``pos`` afterwards. ``number`` is the number of the line
    that starts at ``pos``.
    """

    __slots__ = ("data", "pos", "number")

    def __init__(self, data: bytes, number: int) -> None:
        self.data = data
        self.pos = 0
        self.number = number

    def __iter__(self) -> "_Cursor":
        return self

    def __next__(self) -> Numbered:
        data = self.data
        pos = self.pos
        size = len(data)
        if pos >= size:
            raise StopIteration
        end = data.find(b"\n", pos)
        if end < 0:
            end = size
        self.pos = min(end + 1, size)
        number = self.number
        self.number = number + 1
        return number, data[pos:end]


class PyFastDecoder:
    """Decode the common events of a chunk's lines (the reference version).

    ``decode(data, offset, limit, out)`` takes up to ``limit`` lines of the
    bytes ``data``, from the line that starts at byte ``offset`` on, and
    appends an :class:`Event` to ``out`` for each that is a complete,
    ordinary event. Lines end at ``b"\\n"`` or at the end of ``data``. It
    stops at the first line that is anything else: metadata, a repairable
    or bad line, a missing field, a name or category that is not a
    string, a number that needs more than ``_convert_number``, or a hash
    of an unusual type. It returns
    ``(offset, count, value)``. ``offset`` is the byte offset where it
    stopped (the start of that line, or ``len(data)``) and ``count`` the
    number of lines decoded. ``value`` is the parsed value of the line at
    ``offset``, or ``None`` when that line was not parsed or did not
    parse. When ``count`` is less than
    ``limit`` and ``offset`` is before the end, the slow path handles that
    one line.

    ``forget()`` must be called whenever the ``files`` or ``hosts`` tables
    may have changed: the compiled version remembers recent resolutions.

    After ``count_events(categories)``, each event that ``decode`` would
    build is counted instead. It counts toward ``count`` but is not in
    ``out``. ``take_tally()`` returns ``(events, application, first_ts,
    last_end)`` for the events counted since its last call: application
    events are those whose category is not in ``categories``, and the
    span runs from the lowest ``ts`` to the highest ``ts + dur``. The
    compiled version builds the events whose ``ts`` or end do not fit in
    64 bits rather than counting them.

    The compiled ``_speedups.FastDecoder`` does exactly the same, faster;
    the tests compare the two on every real trace.
    """

    __slots__ = ("files", "hosts", "resolve_file", "resolve_host", "_categories", "_tally")

    def __init__(
        self,
        files: Dict[Any, str],
        hosts: Dict[Any, str],
        resolve_file: Any,
        resolve_host: Any,
    ) -> None:
        self.files = files
        self.hosts = hosts
        self.resolve_file = resolve_file
        self.resolve_host = resolve_host
        self._categories: Optional[AbstractSet[str]] = None
        self._tally: List[Any] = [0, 0, None, None]

    def count_events(self, categories: Optional[AbstractSet[str]]) -> None:
        """Count the events from now on instead of building them, or stop with ``None``.

        Raises:
            TypeError: ``categories`` is not exactly a set or frozenset. The
                compiled version tests membership with the set's own lookup,
                which would ignore the ``__contains__`` of a subclass.
        """
        if categories is not None and categories.__class__ not in (set, frozenset):
            raise TypeError(
                "count_events needs a set or frozenset of categories, "
                f"not {type(categories).__name__}"
            )
        self._categories = categories

    def take_tally(self) -> Tuple[int, int, Optional[int], Optional[int]]:
        """Return what was counted since the last call, and start again."""
        tally, self._tally = self._tally, [0, 0, None, None]
        return tally[0], tally[1], tally[2], tally[3]

    def decode(
        self, data: bytes, offset: int, limit: int, out: List[Event]
    ) -> Tuple[int, int, Any]:
        size = len(data)
        if not 0 <= offset <= size:
            raise ValueError(f"offset must be between 0 and {size}, not {offset}")
        append = out.append
        count = 0
        while count < limit and offset < size:
            end = data.find(b"\n", offset)
            if end < 0:
                end = size
            line = data[offset:end]
            if line.rstrip()[-1:] != b"}":
                return offset, count, None
            try:
                value = _loads(line)
            except _JSONDecodeError:
                return offset, count, None
            event = self._event(value)
            if event is None:
                return offset, count, value
            if self._categories is None:
                append(event)
            else:
                self._count(event)
            count += 1
            offset = min(end + 1, size)
        return offset, count, None

    def _count(self, event: Event) -> None:
        tally = self._tally
        tally[0] += 1
        assert self._categories is not None
        if event.category not in self._categories:
            tally[1] += 1
        end = event.ts + event.dur
        if tally[2] is None or event.ts < tally[2]:
            tally[2] = event.ts
        if tally[3] is None or end > tally[3]:
            tally[3] = end

    def forget(self) -> None:
        """Do nothing: this version remembers no hash resolutions."""

    def close(self) -> None:
        """Do nothing: this version keeps nothing between calls."""

    def _event(self, data: Any) -> Optional[Event]:
        if data.__class__ is not dict:
            return None
        try:
            name, category, pid, tid, ts, dur, phase = _get_fields(data)
        except KeyError:
            return None
        if phase == "M" or name.__class__ is not str or category.__class__ is not str:
            return None
        args = data.get("args")
        if args is None:
            args = {}
        elif args.__class__ is not dict:
            return None

        if (
            pid.__class__ is not int
            or tid.__class__ is not int
            or ts.__class__ is not int
            or dur.__class__ is not int
        ):
            try:
                pid = _convert_number(pid)
                tid = _convert_number(tid)
                ts = _convert_number(ts)
                dur = _convert_number(dur)
            except (ValueError, TypeError, OverflowError):
                return None
            # Writers that store these numbers as strings do the same for
            # sizes, offsets and results.
            _normalise_args(args)

        path = None
        hostname = None
        if args:
            key = args.get("fhash")
            if key is not None:
                if key.__class__ is not str and key.__class__ is not int:
                    return None
                path = self.files.get(key)
                if path is None:
                    path = self.resolve_file(key)
            else:
                path = _inline_string(args, "fname") or _inline_string(args, "path")
            key = args.get("hhash")
            if key is not None:
                if key.__class__ is not str and key.__class__ is not int:
                    return None
                hostname = self.hosts.get(key)
                if hostname is None:
                    hostname = self.resolve_host(key)
            else:
                hostname = _inline_string(args, "hostname")

        return Event(name, category, pid, tid, ts, dur, phase, args, path, hostname)


_get_fields = itemgetter("name", "cat", "pid", "tid", "ts", "dur", "ph")

#: Lines handed to the fast decoder per call. Small batches keep the
#: events in flight few, so the garbage collector's young generation
#: stays small; large ones pay the call less often.
FAST_BATCH = 64
#: Events a fast decoder counts per call into a tally: with no list to
#: build, a larger step spares Python work per event.
TALLY_BATCH = 512


def make_fast_decoder(table: HashTable, record: FileRecord) -> Any:
    """Return the compiled fast decoder, or the reference one without it."""

    def resolve_file(key: Any) -> Optional[str]:
        return _resolve_slow(table, "FH", key, record)

    def resolve_host(key: Any) -> Optional[str]:
        return _resolve_slow(table, "HH", key, record)

    if _speedups is not None and not PURE_PYTHON:
        return _speedups.FastDecoder(
            Event,
            _loads,
            _JSONDecodeError,
            table.files,
            table.hosts,
            resolve_file,
            resolve_host,
            _convert_number,
            NUMERIC_ARGS,
        )
    return PyFastDecoder(table.files, table.hosts, resolve_file, resolve_host)


def iter_events(
    chunks: Iterable[bytes],
    record: FileRecord,
    max_line_bytes: int,
    table: HashTable,
    include_metadata: bool,
) -> Iterator[Event]:
    """Return an iterator of the decoded events of one file's chunks.

    Metadata events update ``table`` before any later event is resolved,
    so each hash resolves to its most recent definition. The iterator has
    a ``close`` method, like a generator.
    """
    return flatten(
        iter_event_batches(chunks, record, max_line_bytes, table, include_metadata)
    )


def flatten(batches: Iterator[List[Any]]) -> Iterator[Any]:
    """Iterate over the items of the lists ``batches`` yields.

    The compiled version spares a generator resumption per item. Both
    versions have ``close``, which closes ``batches``.
    """
    if _speedups is not None and not PURE_PYTHON:
        return _speedups.Flatten(batches)  # type: ignore[no-any-return]
    return _flatten(batches)


def _flatten(batches: Iterator[List[Any]]) -> Iterator[Any]:
    try:
        for batch in batches:
            yield from batch
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def scan_events(
    events: List[Event],
    categories: AbstractSet[str],
    names: AbstractSet[str],
    io_out: List[Event],
    named_out: List[Event],
    span: List[Optional[int]],
) -> int:
    """Sort a batch of events as the replay's decode stage needs them.

    Widens ``span`` (``[first start, last end]``, ``None`` while unknown)
    to the events' times, appends the events whose category is in
    ``categories`` to ``io_out`` and those of them whose name is in
    ``names`` to ``named_out`` too. Returns how many events were left out.
    The compiled scanner does the same; this is its reference version and
    the path it takes for events it cannot read.
    """
    first, last = span
    application = 0
    for event in events:
        ts = event.ts
        if first is None or ts < first:
            first = ts
        end = ts + event.dur
        if last is None or end > last:
            last = end
        if event.category not in categories:
            application += 1
            continue
        io_out.append(event)
        if event.name in names:
            named_out.append(event)
    span[0] = first
    span[1] = last
    return application


def make_scanner() -> Callable[..., int]:
    """Return the compiled :func:`scan_events`, or the reference one."""
    if _speedups is None or PURE_PYTHON:
        return scan_events
    scan = _speedups.Scanner(Event).scan

    def scan_fast(*args: Any) -> int:
        result = scan(*args)
        if result is None:
            return scan_events(*args)
        return result  # type: ignore[no-any-return]

    return scan_fast


class EventTally:
    """Events that a decoder counted instead of building them.

    A dry run needs only how many events there are, how many are
    application events, and the span of their times. The fast path counts
    them without building an :class:`Event`. Events of the slow path are
    still built. The tally is brought up to date before each list is
    yielded.

    Attributes:
        categories: the categories that are not application events.
        events: events counted.
        application: those whose category is not in ``categories``.
        first_ts: the lowest ``ts`` counted, or ``None``.
        last_end: the highest ``ts + dur`` counted, or ``None``.
    """

    __slots__ = ("categories", "events", "application", "first_ts", "last_end")

    def __init__(self, categories: AbstractSet[str]) -> None:
        self.categories = frozenset(categories)
        self.events = 0
        self.application = 0
        self.first_ts: Optional[int] = None
        self.last_end: Optional[int] = None

    def add(self, counted: Tuple[int, int, Optional[int], Optional[int]]) -> None:
        """Add what ``take_tally()`` of a fast decoder returned."""
        events, application, first_ts, last_end = counted
        if not events:
            return
        self.events += events
        self.application += application
        if self.first_ts is None or (first_ts is not None and first_ts < self.first_ts):
            self.first_ts = first_ts
        if self.last_end is None or (last_end is not None and last_end > self.last_end):
            self.last_end = last_end


def iter_event_batches(
    chunks: Iterable[bytes],
    record: FileRecord,
    max_line_bytes: int,
    table: HashTable,
    include_metadata: bool,
    tally: Optional[EventTally] = None,
) -> Iterator[List[Event]]:
    """Yield the events of ``iter_events`` in lists of up to ``FAST_BATCH``.

    ``record.events`` counts the events of each list once it is yielded.
    With ``tally``, the fast path counts events there instead of putting
    them in the lists, which may then be empty, up to ``TALLY_BATCH``
    events per list.
    """
    fast = make_fast_decoder(table, record)
    if tally is not None:
        fast.count_events(tally.categories)
    try:
        yield from _decode_batches(
            fast, chunks, record, max_line_bytes, table, include_metadata, tally
        )
    finally:
        fast.close()


def _decode_batches(
    fast: Any,
    chunks: Iterable[bytes],
    record: FileRecord,
    max_line_bytes: int,
    table: HashTable,
    include_metadata: bool,
    tally: Optional[EventTally] = None,
) -> Iterator[List[Event]]:
    decode = fast.decode
    forget = fast.forget
    limit = FAST_BATCH if tally is None else TALLY_BATCH
    next_number = 1
    carried: List[Numbered] = []

    for chunk in chunks:
        if carried:
            # The lines of an event split across chunks come right
            # before this chunk, so the numbering stays contiguous.
            next_number = carried[0][0]
            chunk = b"\n".join([line for _, line in carried] + [chunk])
            carried = []
        cursor = _Cursor(chunk, next_number)
        size = len(chunk)
        pos = 0
        while pos < size:
            out: List[Event] = []
            pos, count, data = decode(chunk, pos, limit, out)
            cursor.number += count
            if count:
                record.events += count
                if tally is not None:
                    tally.add(fast.take_tally())
                # With a tally, out may be empty: the consumer still gets
                # the chance to yield to other tasks or stop.
                yield out
            if count == limit or pos >= size:
                continue
            # The slow path: one line, or a few when an event was split.
            cursor.pos = pos
            number, line = next(cursor)
            if data is None:
                try:
                    data = _loads(line)
                except _JSONDecodeError:
                    try:
                        data = _recover(
                            number, line, cursor, record, max_line_bytes
                        )
                    except NeedMoreLines as more:
                        carried = more.group
                        break
                    if data is None:
                        pos = cursor.pos
                        continue
            pos = cursor.pos
            event = _decode_general(data, number, record, table)
            # A metadata event may have redefined a hash the fast path has
            # resolved before.
            forget()
            if event is None:
                continue
            if event.phase == "M":
                if not include_metadata:
                    continue
            else:
                record.events += 1
            yield [event]
        next_number = cursor.number

    _finish_group(carried, record)


def _decode_general(
    data: Any, number: int, record: FileRecord, table: HashTable
) -> Optional[Event]:
    """Decode a value the fast path rejected; count it if it is unusable.

    Handles non-object values, metadata events, missing keys, names and
    categories that are not strings, and numbers written as strings or
    floats. Metadata events update ``table``.
    """
    if data.__class__ is not dict:
        record.add_bad(number, REASON_NOT_OBJECT)
        return None
    name = data.get("name", "")
    category = data.get("cat", "")
    if name.__class__ is not str or category.__class__ is not str:
        # Consumers look names and categories up in sets, where a list or
        # a dict raises TypeError.
        record.add_bad(number, REASON_NOT_TEXT)
        return None

    phase = data.get("ph", "")
    args = data.get("args")
    if phase == "M":
        record.metadata_events += 1
        table.add_metadata(name, args)

    numbers: List[int] = []
    converted = False
    for key in _NUMBER_KEYS:
        value = data.get(key)
        if value is None:
            numbers.append(0)
        elif value.__class__ is int:
            numbers.append(value)
        else:
            try:
                numbers.append(to_int(value))
            except (ValueError, TypeError, OverflowError):
                record.add_bad(number, REASON_INVALID_FIELD)
                return None
            converted = True

    args, path, hostname = _resolve_general(args, table, record)
    # Writers that store the event's numbers as strings do the same for
    # size, offset and result arguments; others write them as numbers.
    if converted:
        _normalise_args(args)
    return Event(
        name,
        category,
        numbers[0],
        numbers[1],
        numbers[2],
        numbers[3],
        phase,
        args,
        path,
        hostname,
    )


_NUMBER_KEYS = ("pid", "tid", "ts", "dur")


def _convert_number(value: Any) -> int:
    """Convert like ``to_int``, trying the common decimal string first."""
    if value.__class__ is str:
        try:
            return int(value)
        except ValueError:
            pass
    return to_int(value)


def _resolve_general(
    args: Any, table: HashTable, record: FileRecord
) -> Tuple[Dict[str, Any], Optional[str], Optional[str]]:
    """Return ``(args, path, hostname)`` for any ``args`` value."""
    if args is None:
        return {}, None, None
    if args.__class__ is not dict:
        return {"value": args}, None, None

    path = None
    hostname = None
    key = args.get("fhash")
    if key is not None:
        path = _resolve(table, table.files, "FH", key, record)
    else:
        path = _inline_string(args, "fname") or _inline_string(args, "path")
    key = args.get("hhash")
    if key is not None:
        hostname = _resolve(table, table.hosts, "HH", key, record)
    else:
        hostname = _inline_string(args, "hostname")
    return args, path, hostname


def _inline_string(args: Dict[str, Any], key: str) -> Optional[str]:
    value = args.get(key)
    return value if isinstance(value, str) and value else None


def _resolve(
    table: HashTable,
    exact: Dict[Any, str],
    kind: str,
    key: Any,
    record: FileRecord,
) -> Optional[str]:
    try:
        value = exact.get(key)
    except TypeError:  # unhashable, e.g. a list
        value = None
    if value is None:
        value = _resolve_slow(table, kind, key, record)
    return value


def _resolve_slow(
    table: HashTable, kind: str, key: Any, record: FileRecord
) -> Optional[str]:
    value = table.lookup(kind, key)
    if value is None:
        record.unresolved_hashes += 1
    return value
