"""The bytes that replayed writes put on disk, and the check of reads.

Traces record sizes, never data, so the replayer chooses what a write
writes (``--data``):

* ``zero``: zero bytes, the cheapest;
* ``random:SEED``: bytes that do not compress, the same for the same seed;
* ``pattern``: bytes that depend on the traced path and the offset only,
  so a file's content does not depend on the order in which the replay
  ran its writes.

Cost. Every non-zero kind is a slice of one precomputed block of
:data:`PERIOD` bytes, stored twice in a row so that any run of up to
``PERIOD`` bytes starting inside the first copy is one contiguous
slice. The byte at file offset ``o`` is ``block[(o + key) % PERIOD]``,
where ``key`` is a hash of the path (and, with ``--verify``, of the
traced write). A write of ``n`` bytes is therefore ``n / PERIOD + 1``
memoryview slices passed to one ``pwritev``, with no byte generated per
call. ``PERIOD`` is a prime, so the content of a file does not repeat at
any power-of-two stride.

Verification (``--verify``). Each write's key also hashes the traced
write (trace file, process, thread and position in its stream), so the
bytes on disk name the write that put them there. :class:`WriteMap`
records, per mapped file, which traced writes covered each byte range,
ordered by trace order (start time, then trace file, process, thread and
position). A read at trace position ``R`` must find, in each range, the
bytes of the latest write before ``R`` in trace order. When the replay
runs calls in another order than the trace (concurrent streams, a
reorder window that is too small), reads find other bytes, and
:class:`Verifier` reports the range with what it expected and what it
found.
"""

from __future__ import annotations

import bisect
import functools
import logging
import random
import zlib
from typing import Any, Dict, List, Optional, Tuple

from .._compat import allocate_lock
from . import _calls as calls

logger = logging.getLogger(__name__)

#: Length of the repeating block of the ``random`` and ``pattern`` data,
#: a prime just below 1 MiB.
PERIOD = 1_048_573
#: Seed of the block of the ``pattern`` data.
_PATTERN_SEED = 0x5EED_DA7A
#: Traced writes kept per byte range of a :class:`WriteMap`, latest first.
HISTORY = 4
#: Byte ranges a :class:`WriteMap` keeps for one file before it drops them all.
MAX_RANGES = 100_000
#: Mismatches listed by name in a summary.
MAX_VERIFY_EXAMPLES = 10


def parse_data(text: str) -> Tuple[str, int]:
    """Parse a ``--data`` value into ``(kind, seed)``.

    Raises:
        ValueError: ``text`` is not ``zero``, ``pattern`` or
            ``random:SEED`` with an integer seed.
    """
    if text in ("zero", "pattern"):
        return text, 0
    if text.startswith("random:"):
        try:
            return "random", int(text[len("random:"):])
        except ValueError:
            pass
    raise ValueError(
        f"data must be 'zero', 'pattern' or 'random:SEED' with an integer SEED, not {text!r}"
    )


@functools.lru_cache(maxsize=4)
def _block(seed: int) -> bytes:
    data = random.Random(seed).randbytes(PERIOD)
    return data + data


def path_key(path: str) -> int:
    """Return the offset shift of ``path`` in the block."""
    return zlib.crc32(path.encode("utf-8", "surrogateescape")) % PERIOD


def write_key(path: str, trace_file: str, pid: int, tid: int, sequence: int) -> int:
    """Return the offset shift of one traced write to ``path``."""
    text = f"{path}\0{trace_file}\0{pid}\0{tid}\0{sequence}"
    return zlib.crc32(text.encode("utf-8", "surrogateescape")) % PERIOD


class DataSource:
    """The bytes of replayed writes, as memoryview slices of one block.

    Threads: safe from any thread; it never changes after construction.
    """

    def __init__(self, kind: str = "zero", seed: int = 0) -> None:
        if kind not in ("zero", "random", "pattern"):
            raise ValueError(f"kind must be 'zero', 'random' or 'pattern', not {kind!r}")
        self.kind = kind
        self.zero = kind == "zero"
        block = b""
        if kind == "pattern":
            block = _block(_PATTERN_SEED)
        elif kind == "random":
            block = _block(seed)
        self._block = memoryview(block)

    def views(self, key: int, offset: int, size: int) -> List[memoryview]:
        """Return slices holding the ``size`` bytes at file ``offset`` for ``key``."""
        block = self._block
        position = (offset + key) % PERIOD
        views = []
        while size > 0:
            length = size if size < PERIOD else PERIOD
            views.append(block[position : position + length])
            size -= length
            position = (position + length) % PERIOD
        return views

    def matches(self, key: int, offset: int, found: memoryview) -> bool:
        """Return whether ``found``, read at file ``offset``, is the data of ``key``."""
        start = 0
        for view in self.views(key, offset, len(found)):
            end = start + len(view)
            if found[start:end] != view:
                return False
            start = end
        return True


# -- the record of writes -------------------------------------------------------

#: A traced write: ``(trace order, data key, call name)``, where the trace
#: order is ``(ts, trace file, pid, tid, position in the stream)``.
Write = Tuple[Tuple[Any, ...], int, str]
#: The writes that covered a byte range, latest in trace order first, and
#: whether older ones were dropped to keep at most :data:`HISTORY`.
History = Tuple[Tuple[Write, ...], bool]


def _push(history: History, write: Write) -> History:
    writes, dropped = history
    order = write[0]
    position = 0
    while position < len(writes) and writes[position][0] > order:
        position += 1
    merged = writes[:position] + (write,) + writes[position:]
    if len(merged) > HISTORY:
        return merged[:HISTORY], True
    return merged, dropped


class WriteMap:
    """The traced writes that covered each byte range of one file.

    The ranges are sorted, do not overlap, and adjacent ranges with the
    same history are merged. Past :data:`MAX_RANGES` ranges the map drops
    every range, so memory stays bounded. Later reads of the dropped bytes
    are not checked.

    Threads: not safe; :class:`Verifier` holds the file's lock around it.
    """

    __slots__ = ("starts", "ends", "histories", "forgotten")

    def __init__(self) -> None:
        self.starts: List[int] = []
        self.ends: List[int] = []
        self.histories: List[History] = []
        self.forgotten = False

    def add(self, start: int, end: int, write: Write) -> None:
        """Record that ``write`` covered the bytes ``[start, end)``."""
        if end <= start:
            return
        starts, ends, histories = self.starts, self.ends, self.histories
        low = bisect.bisect_right(ends, start)
        high = bisect.bisect_left(starts, end)
        pieces: List[Tuple[int, int, History]] = []
        position = start
        for index in range(low, high):
            first, last, history = starts[index], ends[index], histories[index]
            if first < start:
                pieces.append((first, start, history))
                first = start
            if first > position:
                pieces.append((position, first, ((write,), False)))
            covered = min(last, end)
            pieces.append((first, covered, _push(history, write)))
            if last > end:
                pieces.append((end, last, history))
            position = covered
        if position < end:
            pieces.append((position, end, ((write,), False)))

        merged: List[Tuple[int, int, History]] = []
        if low > 0 and ends[low - 1] == pieces[0][0] and histories[low - 1] == pieces[0][2]:
            low -= 1
            pieces[0] = (starts[low], pieces[0][1], pieces[0][2])
        for piece in pieces:
            if merged and merged[-1][1] == piece[0] and merged[-1][2] == piece[2]:
                merged[-1] = (merged[-1][0], piece[1], piece[2])
            else:
                merged.append(piece)
        starts[low:high] = [piece[0] for piece in merged]
        ends[low:high] = [piece[1] for piece in merged]
        histories[low:high] = [piece[2] for piece in merged]
        if len(starts) > MAX_RANGES:
            self.clear()
            self.forgotten = True

    def truncate(self, length: int) -> None:
        """Forget the bytes at and after ``length``."""
        index = bisect.bisect_left(self.ends, length + 1)
        del self.starts[index + 1 :]
        del self.ends[index + 1 :]
        del self.histories[index + 1 :]
        if index < len(self.starts):
            if self.starts[index] >= length:
                del self.starts[index], self.ends[index], self.histories[index]
            else:
                self.ends[index] = length

    def clear(self) -> None:
        """Forget every range."""
        self.starts.clear()
        self.ends.clear()
        self.histories.clear()

    def overlapping(self, start: int, end: int) -> List[Tuple[int, int, History]]:
        """Return the recorded ranges inside ``[start, end)``, cut to it."""
        low = bisect.bisect_right(self.ends, start)
        high = bisect.bisect_left(self.starts, end)
        return [
            (max(self.starts[i], start), min(self.ends[i], end), self.histories[i])
            for i in range(low, high)
        ]

    def __len__(self) -> int:
        return len(self.starts)


def describe_write(write: Optional[Write]) -> str:
    """Return a short description of a traced write for a mismatch report."""
    if write is None:
        return "no write before the read in trace order"
    (ts, trace_file, pid, tid, _), _, name = write
    return f"{name} at ts {ts} (pid {pid}, tid {tid})"


class VerifyCounts:
    """Counters of ``--verify`` for one stream; mergeable with :meth:`merge`."""

    __slots__ = ("reads_checked", "bytes_checked", "mismatches", "examples")

    def __init__(self) -> None:
        self.reads_checked = 0
        self.bytes_checked = 0
        self.mismatches = 0
        #: ``(sort key, row)`` of the first mismatches, at most
        #: :data:`MAX_VERIFY_EXAMPLES`.
        self.examples: List[Tuple[Tuple[Any, ...], Dict[str, Any]]] = []

    def add_example(self, order: Tuple[Any, ...], row: Dict[str, Any]) -> None:
        self.examples.append((order, row))
        if len(self.examples) > MAX_VERIFY_EXAMPLES:
            self.examples.sort(key=lambda item: item[0])
            del self.examples[MAX_VERIFY_EXAMPLES:]

    def merge(self, other: VerifyCounts) -> None:
        """Add the counts of ``other``."""
        self.reads_checked += other.reads_checked
        self.bytes_checked += other.bytes_checked
        self.mismatches += other.mismatches
        for order, row in other.examples:
            self.add_example(order, row)

    def to_dict(self) -> Dict[str, Any]:
        """Return the ``verify`` entry of a summary."""
        examples = sorted(self.examples, key=lambda item: item[0])[:MAX_VERIFY_EXAMPLES]
        return {
            "reads_checked": self.reads_checked,
            "bytes_checked": self.bytes_checked,
            "mismatches": self.mismatches,
            "examples": [row for _, row in examples],
        }


class Verifier:
    """The write maps of the files of one replay, each with its lock.

    A write records itself and a read checks itself while holding the
    lock of its file, across the system call, so that no other stream
    writes the range in between.

    Threads: safe from any thread. The critical sections never switch
    greenlets, so a lock is never awaited by a task of its own thread.
    """

    def __init__(self, data: DataSource) -> None:
        self.data = data
        self._maps: Dict[str, Tuple[Any, WriteMap]] = {}
        self._lock = allocate_lock()

    def entry(self, mapped: str) -> Tuple[Any, WriteMap]:
        """Return the lock and the write map of the mapped file ``mapped``."""
        found = self._maps.get(mapped)
        if found is None:
            with self._lock:
                found = self._maps.setdefault(mapped, (allocate_lock(), WriteMap()))
        return found

    def truncate(self, mapped: str, length: int) -> None:
        """Forget what was written at and after ``length`` in ``mapped``."""
        lock, write_map = self.entry(mapped)
        with lock:
            write_map.truncate(length)

    def remove(self, mapped: str) -> None:
        """Forget the file ``mapped`` (unlinked)."""
        with self._lock:
            self._maps.pop(mapped, None)

    def rename(self, old: str, new: str) -> None:
        """Move the record of ``old`` to ``new``."""
        with self._lock:
            found = self._maps.pop(old, None)
            if found is None:
                self._maps.pop(new, None)
            else:
                self._maps[new] = found

    def check(
        self,
        write_map: WriteMap,
        order: Tuple[Any, ...],
        offset: int,
        found: memoryview,
        counts: VerifyCounts,
        describe: Any,
    ) -> None:
        """Check ``found``, read at ``offset`` by the read at trace ``order``.

        Must be called with the file's lock held. ``describe()`` returns
        ``(traced path, mapped path)`` for a mismatch report.
        """
        ranges = write_map.overlapping(offset, offset + len(found))
        if not ranges:
            return
        checked = False
        for start, end, (writes, dropped) in ranges:
            expected: Optional[Write] = None
            for write in writes:
                if write[0] < order:
                    expected = write
                    break
            if expected is None and dropped:
                continue  # the write it should see was forgotten
            checked = True
            counts.bytes_checked += end - start
            piece = found[start - offset : end - offset]
            if expected is not None and self.data.matches(expected[1], start, piece):
                continue
            counts.mismatches += 1
            seen = "other bytes"
            for write in writes:
                if self.data.matches(write[1], start, piece):
                    seen = describe_write(write)
                    break
            traced, mapped = describe()
            counts.add_example(
                (order, mapped, start),
                {
                    "file": traced,
                    "path": mapped,
                    "offset": start,
                    "length": end - start,
                    "expected": describe_write(expected),
                    "found": seen,
                },
            )
        if checked:
            counts.reads_checked += 1


# -- size scaling ---------------------------------------------------------------


class SizeScaler:
    """Multiplies the sizes and offsets of data calls (``--size-scale``).

    Every size becomes ``round(size * factor)`` rounded to a multiple of
    ``align``, and at least ``align`` when it was not 0. Offsets (of
    ``pread``/``pwrite``, ``lseek``/``fseek``, truncations) scale and
    round the same way, without the minimum, so the file layout scales
    with the sizes.
    """

    def __init__(self, factor: float, align: int) -> None:
        self.factor = factor
        self.align = align

    def size(self, value: int) -> int:
        """Return the scaled size of ``value`` bytes."""
        if value <= 0:
            return value
        align = self.align
        return max(align, int(value * self.factor / align + 0.5) * align)

    def offset(self, value: int) -> int:
        """Return the scaled file offset ``value``."""
        if value <= 0:
            return value
        align = self.align
        return int(value * self.factor / align + 0.5) * align

    def apply(self, op: Optional[str], args: Dict[str, Any]) -> None:
        """Scale the arguments of a call of kind ``op`` in place."""
        if op in calls.READ_OPS or op in calls.WRITE_OPS:
            if op in ("fread", "fwrite"):
                self._scale(args, "size", self.size)
                return
            self._scale(args, "count", self.size)
            self._scale(args, "ret", self.size)
            if op in ("pread", "pwrite"):
                self._scale(args, "offset", self.offset)
        elif op in ("lseek", "fseek"):
            self._scale(args, "offset", self.offset_signed)
            if op == "lseek":
                self._scale(args, "ret", self.offset)
        elif op in ("ftruncate", "truncate"):
            self._scale(args, "length", self.offset)

    def offset_signed(self, value: int) -> int:
        """Return the scaled relative offset ``value``, which may be negative."""
        return -self.offset(-value) if value < 0 else self.offset(value)

    @staticmethod
    def _scale(args: Dict[str, Any], key: str, scale: Any) -> None:
        value = calls.arg_int(args, key)
        if value is not None:
            args[key] = scale(value)
