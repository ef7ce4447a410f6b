"""The reader stage: inflate a file in another thread, ahead of decoding.

The stage runs :func:`~greenpipe.trace._inflate.iter_line_chunks` in a
second OS thread and hands its line-aligned chunks to the decoding thread
through a bounded :class:`~greenpipe.Channel`::

    reader thread                           caller
    read, inflate, align lines --chunks-->  split, orjson, events
                           (at most ``capacity`` queued)

Back-pressure. ``Channel.send`` parks the reader thread while the channel
is full. So the bytes in flight are the queued chunks, the chunk the
reader is building (its compressed block, inflated block and carried
partial line), and the chunk the caller is decoding with its split lines.
With chunks of a sixteenth of the budget and two queued, tracemalloc
measured about eleven chunks at the peak (``tests/trace/test_memory.py``).

NOTE: a chunk holding one long line can be up to a quarter of the budget
plus one chunk, so a run of long lines can exceed the budget; the bound
above holds while lines are shorter than a chunk.

Which thread. Inside a greenpipe task the reader runs in the executor's
I/O pool (``scope.spawn_io``), so the scope joins it and the task parks
on the channel while its hub runs other tasks. Elsewhere it is a plain
daemon thread. zlib and isal release the GIL while they inflate, so the
inflating overlaps decoding, but the line alignment (``rfind``, slicing,
counting newlines) still takes the GIL.

Counters. The reader thread fills a private :class:`FileRecord`, and the
caller copies its byte and line counters after every chunk and merges its
bad lines when the file ends. So the caller's record is only ever written
by the caller's thread, and its bad lines stay in file order.

Ending. Leaving the iterator early closes the channel, which makes the
reader's next ``send`` return ``False``; the reader then closes the file
and ends, and the caller waits for that before it returns, so no thread
and no open file outlive the iterator. A reader waiting for a pipe whose
writer stalls is stopped through a second pipe that the caller writes to.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from typing import Any, Iterator, List, Optional, Tuple

from .._channel import Channel, ChannelProducer, make_channel
from .._hub import current_task
from .._scope import current_scope, shield
from ._inflate import ReadStopped, iter_line_chunks
from ._stats import MAX_BAD_LINES_KEPT, FileRecord

logger = logging.getLogger(__name__)

#: Chunks queued between the reader thread and the decoder.
PREFETCH_CHUNKS = 2


def _produce(
    path: str,
    chunk_bytes: int,
    max_line_bytes: int,
    side: FileRecord,
    inflater: Any,
    producer: ChannelProducer[bytes],
    failure: List[BaseException],
    stop_fd: Optional[int],
) -> None:
    """Send the chunks of ``path`` until the file ends or the channel does."""
    with producer.guard():
        chunks = iter_line_chunks(
            path, chunk_bytes, max_line_bytes, side, inflater, stop_fd=stop_fd
        )
        try:
            for chunk in chunks:
                if not producer.send(chunk):
                    break
        except ReadStopped:
            pass  # the caller left the iterator while a pipe was read
        except BaseException as exc:  # handed to the decoding thread
            failure.append(exc)
        finally:
            chunks.close()


def _copy_progress(side: FileRecord, record: FileRecord) -> None:
    record.compressed = side.compressed
    record.gzip_members = side.gzip_members
    record.bytes_read = side.bytes_read
    record.bytes_inflated = side.bytes_inflated
    record.lines = side.lines


def _merge_bad_lines(side: FileRecord, record: FileRecord) -> None:
    """Add the reader's bad lines to ``record``, keeping file order."""
    if not side.bad_count:
        return
    record.bad_count += side.bad_count
    for reason, count in side.bad_reasons.items():
        record.bad_reasons[reason] = record.bad_reasons.get(reason, 0) + count
    # Each list contains the first bad lines of its own kind, so the first
    # MAX_BAD_LINES_KEPT of the merged list are the first of the file.
    merged = sorted(record.bad_kept + side.bad_kept)
    record.bad_kept[:] = merged[:MAX_BAD_LINES_KEPT]


def _is_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # opening it raises the error in the reader thread


def _close_pipe(fds: Optional[Tuple[int, int]]) -> None:
    if fds is not None:
        os.close(fds[0])
        os.close(fds[1])


def iter_prefetched_chunks(
    path: str,
    chunk_bytes: int,
    max_line_bytes: int,
    record: FileRecord,
    inflater: Any = None,
    capacity: int = PREFETCH_CHUNKS,
) -> Iterator[bytes]:
    """Yield what ``iter_line_chunks`` yields, inflated in another thread.

    Blocking: waits for the next chunk, parking the calling task inside
    greenpipe (its hub keeps running other tasks) and blocking the
    thread elsewhere. Closing the generator waits for the reader thread
    to finish its current block.

    Cancellation: a cancellation point while it waits for a chunk; the
    reader is stopped and waited for under a shield.

    Threads: starts one reader thread per file, from the executor's I/O
    pool when called from a task and a plain thread otherwise.

    Raises:
        OSError: reading the file failed (raised after the chunks read
            before the failure).
    """
    side = FileRecord(path)
    channel: Channel[bytes] = make_channel(capacity)
    producer = channel.producer()
    failure: List[BaseException] = []
    # Closing the channel stops a reader blocked in send, and a write to
    # this pipe stops one blocked reading a pipe whose writer stalls.
    stop_fds = None if _is_regular_file(path) else os.pipe()
    stop_read = None if stop_fds is None else stop_fds[0]
    arguments = (
        path, chunk_bytes, max_line_bytes, side, inflater, producer, failure, stop_read
    )

    scope = current_scope() if current_task() is not None else None
    future: Optional[Any] = None
    thread: Optional[threading.Thread] = None
    try:
        if scope is not None:
            future = scope.spawn_io(_produce, *arguments, name=f"inflate {path}")
        else:
            thread = threading.Thread(
                target=_produce,
                args=arguments,
                name=f"greenpipe inflate {path}",
                daemon=True,
            )
            thread.start()
    except BaseException:
        producer.release()
        _close_pipe(stop_fds)
        raise

    try:
        while True:
            chunk = channel.receive()
            _copy_progress(side, record)
            if chunk is None:
                break
            yield chunk
    finally:
        channel.close()
        if stop_fds is not None:
            os.write(stop_fds[1], b"\0")
        with shield():
            try:
                if future is not None:
                    future.result()
                elif thread is not None:
                    thread.join()
            finally:
                _close_pipe(stop_fds)
        _copy_progress(side, record)
        record.damage = side.damage
        _merge_bad_lines(side, record)

    if failure:
        raise failure[0]
