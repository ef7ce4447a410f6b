from __future__ import annotations

import io
import logging
import os
import select
import zlib
from typing import Any, BinaryIO, Iterator, List, Optional, Tuple

from ._stats import REASON_CUT_BY_DAMAGE, REASON_TOO_LONG, FileRecord

logger = logging.getLogger(__name__)

try:
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - depends on the environment
    _isal_zlib = None

#: The module used to inflate gzip data. ``isal.isal_zlib`` (isal 1.9.1)
#: inflated the test traces 1.5 times faster than ``zlib`` on CPython 3.11
#: (``bench/bench_trace_read.py``) and has the same ``decompressobj``
#: interface, so it is used whenever it can be imported.
DEFAULT_INFLATER: Any = _isal_zlib if _isal_zlib is not None else zlib

try:
    from ._speedups import count_newlines as _count_newlines
except ImportError:  # built without a C compiler

    def _count_newlines(data: bytes) -> int:
        return data.count(b"\n")


GZIP_MAGIC = b"\x1f\x8b"
#: ``(start, stop, first gzip member)`` of a part of a file; ``stop`` is
#: ``None`` for the end of the file. ``None`` reads the whole file.
ByteRange = Optional[Tuple[int, Optional[int], int]]
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def _inflate_blocks(
    stream: BinaryIO,
    block_bytes: int,
    inflater: Any,
    record: FileRecord,
    byte_range: ByteRange = None,
) -> Iterator[bytes]:
    """Yield inflated blocks of at most ``block_bytes`` from a gzip stream.

    Decodes every gzip member in turn, because some writers append one
    member per buffer flush and a single ``decompressobj`` stops after the
    first. Damaged data ends the file: what was inflated before it is
    yielded, and ``record.damage`` describes the rest.

    With ``byte_range``, the stream is positioned at its start, which must
    be the start of a gzip member, and reading stops at its end. Member
    numbers and byte offsets in ``record.damage`` still count from the
    start of the file, so that a part reports damage as a pass over the
    whole file does.
    """
    error = inflater.error
    decompressor = inflater.decompressobj(_GZIP_WBITS)
    record.gzip_members = 1
    member_started = False
    offset, stop = _start_range(stream, byte_range, record)

    while True:
        size = _read_size(offset, stop, block_bytes)
        data = stream.read(size) if size > 0 else b""
        if not data:
            break

        record.bytes_read += len(data)
        offset += len(data)
        while data:
            member_started = True
            try:
                out = decompressor.decompress(data, block_bytes)
            except error as exc:
                before = offset
                if stop is not None:
                    # A pass over the whole file would have read on to the
                    # end of this block of the grid.
                    size = os.fstat(stream.fileno()).st_size
                    before = min(-(-offset // block_bytes) * block_bytes, size)
                record.damage = (
                    f"invalid gzip data in member {record.gzip_members} "
                    f"before byte {before}: {exc}"
                )
                return

            if out:
                record.bytes_inflated += len(out)
                yield out

            if decompressor.eof:
                data = decompressor.unused_data
                decompressor = inflater.decompressobj(_GZIP_WBITS)
                member_started = False
                if data:
                    record.gzip_members += 1
            else:
                data = decompressor.unconsumed_tail

    if member_started and not decompressor.eof:
        if stop is not None and offset >= stop:
            # The range ends inside a member: its end was not a member
            # boundary. The caller finds this out and reads the whole file.
            record.unsafe_end = True
            return
        record.damage = (
            f"gzip member {record.gzip_members} is truncated "
            f"(file ends after {offset} bytes)"
        )


def _start_range(
    stream: BinaryIO, byte_range: ByteRange, record: FileRecord
) -> Tuple[int, Optional[int]]:
    """Seek to the start of ``byte_range``; return the offset and the end."""
    if byte_range is None:
        return 0, None
    start, stop, first_member = byte_range
    stream.seek(start)
    record.gzip_members = first_member
    return start, stop


def _read_size(offset: int, stop: Optional[int], block_bytes: int) -> int:
    """Return the bytes to read next: up to the next multiple of ``block_bytes``.

    Reads stay on the same grid of offsets as a pass from the start of the
    file, so damage is reported before the same byte offset.
    """
    size = block_bytes - offset % block_bytes
    if stop is not None:
        size = min(size, stop - offset)
    return size


def _read_blocks(
    stream: BinaryIO,
    block_bytes: int,
    record: FileRecord,
    byte_range: ByteRange = None,
) -> Iterator[bytes]:
    """Yield blocks of an uncompressed file, or of ``byte_range`` of it."""
    offset, stop = _start_range(stream, byte_range, record)
    record.gzip_members = 0
    while True:
        size = _read_size(offset, stop, block_bytes)
        data = stream.read(size) if size > 0 else b""
        if not data:
            return
        offset += len(data)

        record.bytes_read += len(data)
        record.bytes_inflated += len(data)
        yield data


def iter_line_chunks(
    path: str,
    chunk_bytes: int,
    max_line_bytes: int,
    record: FileRecord,
    inflater: Any = None,
    byte_range: ByteRange = None,
    first_text: bytes = b"",
    stop_fd: Optional[int] = None,
) -> Iterator[bytes]:
    """Yield a trace file as chunks that end on line boundaries.

    Every chunk but the last ends with ``b"\\n"``; the last one may lack it
    when the file has no final newline. Chunks are at most ``chunk_bytes``
    long unless a single line is longer. A line longer than
    ``max_line_bytes`` is replaced by an empty line (so later line numbers
    stay right) and counted as bad. After damaged gzip data, the
    incomplete line before the damage is counted as bad, not yielded.

    Args:
        path: file to read; gzip is detected by its magic bytes, not by
            its name.
        chunk_bytes: size of disk reads and of inflated blocks.
        max_line_bytes: maximum accepted line length in bytes.
        record: counters to update (bytes, lines, members, damage).
        inflater: ``zlib``-compatible module, ``DEFAULT_INFLATER`` if
            ``None``.
        byte_range: ``(start, stop, first member)`` to read only the
            bytes from ``start`` to ``stop`` (``None``: the end of the
            file). ``start`` must follow a newline and, in a gzip file,
            begin a member, whose number in the file is ``first member``.
            Line numbers then count from ``start``. When ``stop`` is not
            ``None``, the text after the last newline before ``stop`` is
            not yielded but kept in ``record.tail``: its line goes on in
            the next range.
        first_text: the ``record.tail`` of the range before, which begins
            the first line of this one.
        stop_fd: a file descriptor that becomes readable when the
            consumer stops. Reads from a pipe wait for it too and raise
            :class:`ReadStopped` once it is readable, so that a writer
            that stalls cannot keep the reader waiting.

    Yields:
        Line-aligned ``bytes`` chunks.

    Raises:
        ReadStopped: ``stop_fd`` became readable while a pipe was read.
    """
    with open(path, "rb") as opened:
        stream: BinaryIO = opened
        if opened.seekable():
            head = opened.read(2)
            opened.seek(0)
        else:
            # Nothing was read through the buffer yet, so the raw file
            # gives every byte. A pipe cannot go back, so the two bytes
            # read come first.
            pipe = _PipeStream(opened.raw, stop_fd)
            head = pipe.read(2)
            stream = _PrefixedStream(head, pipe)
        compressed = head == GZIP_MAGIC
        record.compressed = compressed
        if compressed:
            blocks = _inflate_blocks(
                stream, chunk_bytes, inflater or DEFAULT_INFLATER, record, byte_range
            )
        else:
            blocks = _read_blocks(stream, chunk_bytes, record, byte_range)

        try:
            keep_tail = byte_range is None or byte_range[1] is None
            yield from _align_lines(blocks, max_line_bytes, record, first_text, keep_tail)
        finally:
            blocks.close()


class ReadStopped(Exception):
    """Raised when the consumer stopped while a pipe was being read."""


class _PipeStream(io.RawIOBase):
    """A pipe whose reads end early when ``stop_fd`` becomes readable.

    ``read(size)`` returns ``size`` bytes unless the pipe ends first, as a
    buffered read does, so chunks have the sizes they have in a file.
    """

    def __init__(self, raw: Any, stop_fd: Optional[int]) -> None:
        super().__init__()
        self._fd = raw.fileno()
        self._poll: Optional[Any] = None
        if stop_fd is not None:
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)
            self._poll.register(stop_fd, select.POLLIN)
        self._stop_fd = stop_fd

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def read(self, size: int = -1) -> bytes:
        parts: List[bytes] = []
        remaining = size
        while size is None or size < 0 or remaining > 0:
            if self._poll is not None:
                ready = [fd for fd, _ in self._poll.poll()]
                if self._stop_fd in ready:
                    raise ReadStopped("the consumer stopped reading the pipe")
            part = os.read(self._fd, remaining if remaining > 0 else 1024 * 1024)
            if not part:
                break
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts)


class _PrefixedStream(io.RawIOBase):
    """``stream`` read after ``prefix``, for a pipe whose start was read."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        super().__init__()
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._stream.fileno()

    def read(self, size: int = -1) -> bytes:
        if not self._prefix:
            return self._stream.read(size)
        if size is None or size < 0:
            data = self._prefix + self._stream.read()
            self._prefix = b""
            return data
        data = self._prefix[:size]
        self._prefix = self._prefix[size:]
        if len(data) < size:
            data += self._stream.read(size - len(data))
        return data


def _align_lines(
    blocks: Iterator[bytes],
    max_line_bytes: int,
    record: FileRecord,
    first_text: bytes = b"",
    keep_tail: bool = True,
) -> Iterator[bytes]:
    """Regroup raw blocks into line-aligned chunks and count lines.

    ``first_text`` begins the first line. Without ``keep_tail``, the text
    after the last newline is kept in ``record.tail`` instead of being
    yielded and counted.
    """
    carry = first_text
    skipping = False  # inside a line already reported as too long

    for block in blocks:
        if skipping:
            cut = block.find(b"\n")
            if cut < 0:
                continue
            skipping = False
            block = block[cut + 1 :]
            record.lines += 1
            # NOTE: decoders count this stand-in as an ignored line, so the
            # too-long line is counted as bad and as ignored.
            yield b"\n"

        # The carried text contains no newline, so the last line ends at the
        # block's last newline. Joining through a memoryview copies once.
        cut = block.rfind(b"\n")
        if cut < 0:
            carry += block
        else:
            if carry:
                chunk = b"".join((carry, memoryview(block)[: cut + 1]))
            elif cut + 1 == len(block):
                chunk = block
            else:
                chunk = block[: cut + 1]
            carry = block[cut + 1 :]
            record.lines += _count_newlines(chunk)
            yield chunk

        if len(carry) > max_line_bytes:
            record.add_bad(record.lines + 1, REASON_TOO_LONG)
            logger.debug(
                "%s: line %d is longer than %d bytes, skipped",
                record.path,
                record.lines + 1,
                max_line_bytes,
            )
            carry = b""
            skipping = True

    if not keep_tail and record.damage is None:
        if skipping:
            # The skipped line goes on in the next range, which cannot
            # tell that it is too long.
            record.unsafe_end = True
        record.tail = carry
        return
    if skipping:
        record.lines += 1
    elif carry:
        record.lines += 1
        if record.damage is None:
            yield carry
        else:
            record.add_bad(record.lines, REASON_CUT_BY_DAMAGE)
