"""The replay's own trace, written in the newest DFTracer format.

With ``--emit-trace FILE`` every executed call becomes one ``ph: "X"``
event. It has the replay's timestamps (epoch microseconds when the
system call started) and durations, and the traced ``pid``, ``tid``, call
name and category. It keeps the traced call arguments that describe the
request (``count``, ``offset``, ``whence``, ``flags``, ``mode``,
``size``, ``length``) and the ``ret`` of the replayed call. Paths are the mapped paths under the
root, named as the newest DFTracer writer names them: a 16-hex-digit hash
in ``args.fhash`` (``newpath_hash`` for a rename target), defined by an
``FH`` metadata event before its first use. The host is an ``HH`` hash in
``args.hhash``. The file starts with ``[`` and ends with ``]``, and a name
ending in ``.gz`` is gzip-compressed, so the replay of a trace can be read,
compared and replayed by the same tools as the trace.

Threads. The streams of one process share one :class:`TraceEmitter`.
Each stream buffers its lines in a :class:`StreamEmitter` and writes them
under the emitter's lock, in blocks. Each stream defines the hashes it
uses in its own lines before using them, so a definition precedes its
use in the file whatever order the blocks land in. A path used by two
streams is defined twice, with the same value.

Processes. A worker process writes a part without the brackets, and the
parent writes ``[``, the parts in worker order and ``]`` into the file
(:func:`join_parts`). Gzip members can be concatenated, so the parts are
copied byte for byte.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import socket
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence

import orjson

from .._compat import allocate_lock
from ..trace import Event

logger = logging.getLogger(__name__)

#: Traced arguments copied into the replay's events, which describe the
#: request. Descriptor numbers and hashes of the trace are left out.
CALL_ARGS = ("count", "offset", "whence", "flags", "mode", "size", "length")
#: Lines a stream buffers before writing them.
BLOCK_LINES = 256
#: zlib level of a ``.gz`` output: zlib's default, below the 9 that the
#: gzip module uses by default, because the output is written during the replay.
COMPRESS_LEVEL = 6


def path_hash(path: str) -> str:
    """Return the 16-hex-digit hash that names ``path`` in the emitted trace."""
    import hashlib  # here: loading OpenSSL would slow every start of the command

    return hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _open_output(path: str) -> IO[bytes]:
    raw = open(path, "wb")
    if not path.endswith(".gz"):
        return raw
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=COMPRESS_LEVEL, mtime=0)


class TraceEmitter:
    """Writes the events of the executed calls of one process to a file.

    Args:
        path: the output file, overwritten; gzip-compressed when the name
            ends in ``.gz``.
        framed: write the opening ``[`` and the closing ``]``. A part
            written by a worker process has neither; :func:`join_parts`
            adds them.

    A failed write (a full disk, say) is logged once at ERROR, and later
    events are dropped, so the replay itself goes on.

    Threads: :meth:`write` and :meth:`close` are safe from any thread.

    Attributes:
        error: the message of the first failed write, or ``None``.
    """

    def __init__(self, path: str, *, framed: bool = True) -> None:
        self.path = path
        self.framed = framed
        self._lock = allocate_lock()
        self._out = _open_output(path)
        self._raw = getattr(self._out, "fileobj", None)
        self._closed = False
        self.error: Optional[str] = None
        host = socket.gethostname()
        self.host_hash = path_hash(host)
        #: Added to ``time.perf_counter_ns()`` to get epoch nanoseconds.
        self.epoch_offset_ns = time.time_ns() - time.perf_counter_ns()
        pid = os.getpid()
        head = b"[\n" if framed else b""
        host_line = orjson.dumps(
            {
                "name": "HH", "cat": "dftracer", "pid": pid, "tid": pid, "ph": "M",
                "args": {"hhash": self.host_hash, "name": host, "value": self.host_hash},
            }
        )
        self._out.write(head + host_line + b"\n")

    def stream(self, pid: int, tid: int, display: Callable[[str], str]) -> StreamEmitter:
        """Return the emitter of one stream; ``display`` maps traced paths."""
        return StreamEmitter(self, pid, tid, display)

    def write(self, lines: List[bytes]) -> None:
        """Write whole lines, each ending in a newline."""
        data = b"".join(lines)
        with self._lock:
            if self._closed or self.error is not None:
                return
            try:
                self._out.write(data)
            except OSError as exc:
                self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.error = f"{self.path}: {exc.strerror or exc}"
        logger.error("cannot write the replay's trace, later events are dropped: %s", self.error)

    def close(self) -> None:
        """Write the closing bracket if framed, and close the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                try:
                    if self.framed and self.error is None:
                        self._out.write(b"]")
                finally:
                    self._out.close()
                    if self._raw is not None:
                        self._raw.close()
            except OSError as exc:
                if self.error is None:
                    self._fail(exc)


class StreamEmitter:
    """The emitted events of one stream; only its task uses it."""

    __slots__ = ("_emitter", "_pid", "_tid", "_display", "_hashes", "_lines", "_id", "_host", "_offset")

    def __init__(self, emitter: TraceEmitter, pid: int, tid: int, display: Callable[[str], str]) -> None:
        self._emitter = emitter
        self._pid = pid
        self._tid = tid
        self._display = display
        self._hashes: Dict[str, str] = {}
        self._lines: List[bytes] = []
        self._id = 0
        self._host = emitter.host_hash
        self._offset = emitter.epoch_offset_ns

    def _hash(self, traced: str) -> str:
        value = self._hashes.get(traced)
        if value is None:
            mapped = self._display(traced)
            value = self._hashes[traced] = path_hash(mapped)
            self._lines.append(
                orjson.dumps(
                    {
                        "name": "FH", "cat": "dftracer", "pid": self._pid, "tid": self._tid,
                        "ph": "M", "args": {"hhash": self._host, "name": mapped, "value": value},
                    }
                )
                + b"\n"
            )
        return value

    def emit(
        self,
        event: Event,
        path: Optional[str],
        second: Optional[str],
        start_ns: int,
        duration_ns: int,
        ret: Optional[int],
    ) -> None:
        """Add the event of one executed call.

        Args:
            event: the traced event.
            path: the traced path the call acted on, if known.
            second: the traced target of a rename.
            start_ns: ``perf_counter_ns()`` when the replayed call started.
            duration_ns: how long it took.
            ret: the replayed call's result; ``None`` to record none.
        """
        args: Dict[str, Any] = {"hhash": self._host}
        if path is not None:
            args["fhash"] = self._hash(path)
        if second is not None:
            args["newpath_hash"] = self._hash(second)
        traced = event.args
        for key in CALL_ARGS:
            value = traced.get(key)
            if value is not None:
                args[key] = value
        if ret is not None:
            args["ret"] = ret
        self._lines.append(
            orjson.dumps(
                {
                    "id": self._id,
                    "name": event.name,
                    "cat": event.category,
                    "pid": self._pid,
                    "tid": self._tid,
                    "ts": (start_ns + self._offset) // 1000,
                    "dur": duration_ns // 1000,
                    "ph": "X",
                    "args": args,
                }
            )
            + b"\n"
        )
        self._id += 1
        if len(self._lines) >= BLOCK_LINES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines."""
        if self._lines:
            lines, self._lines = self._lines, []
            self._emitter.write(lines)


def part_path(target: str, number: int) -> str:
    """Return the file that worker ``number`` writes its part of ``target`` to.

    It ends in ``.gz`` when ``target`` does, so the part is compressed too.
    """
    if target.endswith(".gz"):
        return f"{target[:-3]}.part-{number}.gz"
    return f"{target}.part-{number}"


def join_parts(target: str, parts: Sequence[str]) -> None:
    """Write ``[``, the parts that exist, in order, and ``]`` to ``target``.

    The parts are removed. A ``.gz`` target gets the brackets as gzip
    members of their own, and the parts, already gzip members, are
    copied as they are.
    """
    compress = target.endswith(".gz")

    def framing(text: bytes) -> bytes:
        return gzip.compress(text, compresslevel=COMPRESS_LEVEL, mtime=0) if compress else text

    with open(target, "wb") as out:
        out.write(framing(b"[\n"))
        for part in parts:
            try:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
            except FileNotFoundError:
                continue
        out.write(framing(b"]"))
    remove_parts(parts)


def remove_parts(parts: Sequence[str]) -> None:
    """Remove the part files that exist."""
    for part in parts:
        try:
            os.unlink(part)
        except FileNotFoundError:
            pass
