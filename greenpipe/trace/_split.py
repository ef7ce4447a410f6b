"""Split one trace file into parts that can be decoded apart.

A part is a byte range of the file on disk. It starts right after a
newline and, in a gzip file, at the start of a gzip member. It can
therefore be read without the bytes before it (see ``byte_range`` in
``iter_line_chunks``).

Finding member starts. DFTracer appends one gzip member each time its
16 MiB buffer fills, so a large ``.pfw.gz`` contains many members, but the
file keeps no list of them. The side-car indexes do not help either:
a ``.zindex`` or ``.idx`` file stores access points inside a deflate
stream, which need an inflater primed at a bit offset (``inflatePrime``
in zlib), and Python's ``zlib`` does not expose that. So
:func:`find_member_start` reads forward from a byte offset for the gzip
header bytes ``1f 8b 08`` and confirms a candidate by inflating up to
:data:`CONFIRM_BYTES` of it into text that starts like a trace line. A
candidate can still be wrong (header bytes inside deflate data that
happen to inflate), so the caller must check that the part before it
ended exactly at the end of a member.

Hash tables. ``fhash`` and ``hhash`` refer to ``FH`` and ``HH`` events
earlier in the same file, possibly in an earlier part.
:func:`scan_metadata` rebuilds the table in force at the start of a
part by reading the bytes before it and decoding only the lines that
contain ``"M"``, which every metadata line does. That costs an inflate
and a substring search of everything before the part, far less than
decoding it.
"""

from __future__ import annotations

import logging
import os
import zlib
from typing import Any, Iterator, List, Optional, Tuple

import orjson

from ._decode import MAX_JOINED_LINES, NeedMoreLines, _recover
from ._event import HashTable
from ._inflate import _GZIP_WBITS, DEFAULT_INFLATER, GZIP_MAGIC, iter_line_chunks
from ._stats import FileRecord

logger = logging.getLogger(__name__)

#: Compressed bytes inflated to confirm a gzip member start.
CONFIRM_BYTES = 64 * 1024
#: Bytes searched after an offset for a member start or a line boundary
#: before giving up on splitting there.
SEARCH_BYTES = 64 * 1024 * 1024
_READ_BYTES = 1024 * 1024
# The header of a gzip member: magic bytes, then the deflate method.
_MEMBER_HEADER = GZIP_MAGIC + b"\x08"
# The first non-blank byte of a trace line: an event or a bracket line.
_LINE_STARTS = (b"{", b"[", b"]")


def is_gzip(path: str) -> bool:
    """Return whether ``path`` starts with the gzip magic bytes."""
    with open(path, "rb") as stream:
        return stream.read(2) == GZIP_MAGIC


def find_member_start(path: str, offset: int, inflater: Any = None) -> Optional[int]:
    """Return the first offset at or after ``offset`` that starts a gzip member.

    Returns ``None`` when no member starts within :data:`SEARCH_BYTES`.
    """
    inflater = inflater or DEFAULT_INFLATER
    with open(path, "rb") as stream:
        position = offset
        while position < offset + SEARCH_BYTES:
            stream.seek(position)
            # Overlap the reads so that a header cut by a read is found.
            data = stream.read(_READ_BYTES + len(_MEMBER_HEADER) - 1)
            if len(data) < len(_MEMBER_HEADER):
                return None
            found = data.find(_MEMBER_HEADER)
            while found >= 0:
                if _confirm_member(stream, position + found, inflater):
                    return position + found
                found = data.find(_MEMBER_HEADER, found + 1)
            position += _READ_BYTES
    return None


def _confirm_member(stream: Any, offset: int, inflater: Any) -> bool:
    stream.seek(offset)
    data = stream.read(CONFIRM_BYTES)
    # Reserved flag bits are zero in every valid header.
    if len(data) < 10 or data[3] & 0xE0:
        return False
    decompressor = inflater.decompressobj(_GZIP_WBITS)
    try:
        text = decompressor.decompress(data, 4096)
    except (inflater.error, zlib.error):
        return False
    return text.lstrip()[:1] in _LINE_STARTS


def find_line_start(path: str, offset: int) -> Optional[int]:
    """Return the start of a line at or after ``offset`` in a plain file.

    The line before it must be a JSON value or a bracket line on its own,
    so that no event split by a raw newline is cut in two. Returns
    ``None`` when no such line starts within :data:`SEARCH_BYTES`.
    """
    with open(path, "rb") as stream:
        stream.seek(max(offset - 1, 0))
        position = max(offset - 1, 0)
        carry = b""
        skip_first = offset > 0
        while position < offset + SEARCH_BYTES:
            data = stream.read(_READ_BYTES)
            if not data:
                return None
            lines = (carry + data).split(b"\n")
            start = position - len(carry)
            carry = lines.pop()
            for line in lines:
                start += len(line) + 1
                if skip_first:
                    # The text up to the first newline may be the end of
                    # a line that began before ``offset``.
                    skip_first = False
                    continue
                if _stands_alone(line):
                    return start
            position += len(data)
    return None


def _stands_alone(line: bytes) -> bool:
    stripped = line.strip()
    if stripped in (b"[", b"]"):
        return True
    if stripped[-1:] != b"}":
        return False
    try:
        orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return False
    return True


def scan_metadata(
    path: str,
    stop: int,
    chunk_bytes: int,
    max_line_bytes: int,
    inflater: Any = None,
) -> Tuple[HashTable, int, bytes]:
    """Read the metadata events of ``path`` before byte ``stop``.

    Returns:
        A tuple of three. First, the hash table in force at ``stop``, as
        the decoder of a pass over the whole file has it there. Second,
        the number of gzip members that end before ``stop`` (0 for a plain
        file). Third, the text after the last newline before ``stop``,
        which begins the first line after it.
    """
    table = HashTable()
    record = FileRecord(path)
    scratch = FileRecord(path)
    chunks = iter_line_chunks(
        path, chunk_bytes, max_line_bytes, record, inflater, (0, stop, 1)
    )
    try:
        for chunk in chunks:
            _scan_chunk(chunk, table, scratch, max_line_bytes)
    finally:
        chunks.close()
    members = record.gzip_members if record.compressed else 0
    return table, members, record.tail


def _scan_chunk(
    chunk: bytes, table: HashTable, scratch: FileRecord, max_line_bytes: int
) -> None:
    position = chunk.find(b'"M"')
    while position >= 0:
        begin = chunk.rfind(b"\n", 0, position) + 1
        end = chunk.find(b"\n", position)
        if end < 0:
            end = len(chunk)
        value = _parse_line(chunk, begin, end, scratch, max_line_bytes)
        if value.__class__ is dict and value.get("ph") == "M":
            table.add_metadata(value.get("name"), value.get("args"))
        position = chunk.find(b'"M"', end)


def _parse_line(
    chunk: bytes, begin: int, end: int, scratch: FileRecord, max_line_bytes: int
) -> Any:
    """Decode the line ``chunk[begin:end]`` as the decoder's slow path does."""
    line = chunk[begin:end]
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    # A raw newline may have split the event: offer the lines after it.
    following: Iterator[Tuple[int, bytes]] = enumerate(_next_lines(chunk, end), 2)
    try:
        return _recover(1, line, following, scratch, max_line_bytes)
    except NeedMoreLines:
        # NOTE: a metadata event split across two chunks is not recovered
        # here, so a part after it may leave that one hash unresolved.
        return None


def _next_lines(chunk: bytes, end: int) -> List[bytes]:
    return chunk[end + 1 :].split(b"\n", MAX_JOINED_LINES)[:MAX_JOINED_LINES]


def file_size(path: str) -> int:
    """Return the size of ``path`` on disk, 0 when it cannot be read."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
