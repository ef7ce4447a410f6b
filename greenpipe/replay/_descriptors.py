"""Descriptors of a replay: per-process tables and a process-wide limit.

A trace can hold more files open at once than the replaying process may
(``RLIMIT_NOFILE``): the traced application ran with another limit, or
many traced processes share one replay. :class:`DescriptorCache` keeps
the real descriptors of a replay under a limit by recycling them, least
recently used first. Recycling closes the real descriptor of an idle
handle and keeps the handle with its path and open flags. The next call
on the handle reopens the path with the access mode only, so ``O_CREAT``,
``O_EXCL`` and ``O_TRUNC`` act once, as traced. File positions need no
saving, because the replayer tracks them per handle and passes them to
every ``pread``/``pwrite``.

A recycled descriptor is reopened by path, so its file must still be
reachable under that path. Before the replay unlinks or renames a path,
the handles on that path or below it are reopened if needed and pinned:
they keep their real descriptor until they are closed, as the traced
process kept an unlinked file open.

Locking. The tables of a replay share the cache's lock, so the count of
streams using a handle, which decides whether it may be recycled, and
the recycling itself never race. No method blocks on anything but
system calls while holding it.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import resource
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

from .._compat import allocate_lock
from ._sandbox import Components, PathSandbox, SandboxError
from ._summary import StreamStats

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Descriptors left free for what the replay opens besides traced files:
#: the trace files being read, the folders a path walk keeps open (up to four
#: for a rename), and the worker threads' event loops (about three each).
#: An estimate. When it is too small, a call that fails with ``EMFILE``
#: recycles one more descriptor and is retried.
DESCRIPTOR_RESERVE = 32
#: Fewest traced files kept open at once, whatever the limit.
MIN_OPEN_FILES = 4
#: Largest number of retries of one call that failed with ``EMFILE``.
MAX_RETRIES = 64

_TOO_MANY = (errno.EMFILE, errno.ENFILE)
_REOPEN_FLAGS = os.O_ACCMODE | getattr(os, "O_DIRECTORY", 0)


class Handle:
    """An open descriptor of the replay and its emulated file position.

    ``users`` counts the streams in the middle of a call on the descriptor
    and ``closed`` records a replayed ``close``. The real descriptor is
    closed only when it is closed in the trace and no stream uses it. A
    stream of another thread that found the handle just before the close
    therefore never has its descriptor closed, or reused for another file,
    during its call.

    ``fd`` is -1 while the handle is recycled. ``flags`` reopen it,
    ``pinned`` forbids recycling it, and ``last_use`` orders handles from
    least to most recently used.
    """

    __slots__ = (
        "fd",
        "path",
        "position",
        "append",
        "stdio",
        "traced_fd",
        "tid",
        "users",
        "closed",
        "flags",
        "pinned",
        "last_use",
    )

    def __init__(
        self,
        fd: int,
        path: str,
        append: bool,
        stdio: bool,
        traced_fd: Optional[int],
        tid: int,
        flags: int = os.O_RDONLY,
    ) -> None:
        self.fd = fd
        self.path = path
        self.position = 0
        self.append = append
        self.stdio = stdio
        self.traced_fd = traced_fd
        self.tid = tid
        self.users = 0
        self.closed = False
        self.flags = flags & _REOPEN_FLAGS
        self.pinned = False
        self.last_use = 0


class ProcessTable:
    """Open handles of one traced process, shared by its threads' streams.

    Threads: every method takes the table's lock, so streams on different
    workers may use it; no method blocks while holding it.

    Args:
        lock: the lock to take, shared with a :class:`DescriptorCache`;
            a new one when ``None``.
    """

    def __init__(self, lock: Optional[object] = None) -> None:
        self._lock = lock if lock is not None else allocate_lock()
        self._by_fd: Dict[int, Handle] = {}
        self._by_thread_path: Dict[Tuple[bool, int, str], List[Handle]] = {}
        self._by_path: Dict[Tuple[bool, str], List[Handle]] = {}

    def add(self, handle: Handle) -> Optional[Handle]:
        """Register ``handle``; return a displaced handle to close now, if any.

        A displaced handle that a stream is still using is closed by that
        stream's :meth:`release` instead.
        """
        with self._lock:  # type: ignore[attr-defined]
            stale = None
            if handle.traced_fd is not None:
                stale = self._by_fd.pop(handle.traced_fd, None)
                if stale is not None:
                    self._unindex(stale)
                    stale.closed = True
                    if stale.users:
                        stale = None
                self._by_fd[handle.traced_fd] = handle
            self._by_thread_path.setdefault(
                (handle.stdio, handle.tid, handle.path), []
            ).append(handle)
            self._by_path.setdefault((handle.stdio, handle.path), []).append(handle)
            return stale

    def _unindex(self, handle: Handle) -> None:
        for table, key in (
            (self._by_thread_path, (handle.stdio, handle.tid, handle.path)),
            (self._by_path, (handle.stdio, handle.path)),
        ):
            found = table.get(key)  # type: ignore[attr-defined]
            if found is not None:
                try:
                    found.remove(handle)
                except ValueError:
                    pass
                if not found:
                    del table[key]  # type: ignore[attr-defined]

    def find(
        self, stdio: bool, tid: int, fd: Optional[int], path: Optional[str]
    ) -> Optional[Handle]:
        """Return the handle an event refers to, held for the caller, or ``None``.

        By traced descriptor first (when the path, if any, agrees), then
        the newest handle of this thread on the path, then the newest of
        any thread of the process on the path. The caller must pass a
        returned handle to :meth:`release` when its call is done.
        """
        with self._lock:  # type: ignore[attr-defined]
            handle = self._find_locked(stdio, tid, fd, path)
            if handle is not None:
                handle.users += 1
            return handle

    def _find_locked(
        self, stdio: bool, tid: int, fd: Optional[int], path: Optional[str]
    ) -> Optional[Handle]:
        if fd is not None and not stdio:
            handle = self._by_fd.get(fd)
            if handle is not None and (path is None or handle.path == path):
                return handle
        if path is None:
            return None
        found = self._by_thread_path.get((stdio, tid, path))
        if found:
            return found[-1]
        found = self._by_path.get((stdio, path))
        if found:
            return found[-1]
        return None

    def release(self, handle: Handle) -> bool:
        """Drop one hold on ``handle``; return whether its fd must be closed now."""
        with self._lock:  # type: ignore[attr-defined]
            handle.users -= 1
            return handle.closed and handle.users == 0

    def remove(self, handle: Handle) -> None:
        """Forget ``handle`` after its replayed ``close``; the last release closes it."""
        with self._lock:  # type: ignore[attr-defined]
            if handle.traced_fd is not None and self._by_fd.get(handle.traced_fd) is handle:
                del self._by_fd[handle.traced_fd]
            self._unindex(handle)
            handle.closed = True

    def drain(self) -> List[Handle]:
        """Forget and return every handle still open."""
        with self._lock:  # type: ignore[attr-defined]
            handles = {id(h): h for hs in self._by_path.values() for h in hs}
            handles.update({id(h): h for h in self._by_fd.values()})
            self._by_fd.clear()
            self._by_thread_path.clear()
            self._by_path.clear()
        return list(handles.values())


def _last_use(handle: Handle) -> int:
    return handle.last_use


def default_open_limit() -> Optional[int]:
    """Return how many traced files a replay may keep open at once.

    The soft ``RLIMIT_NOFILE`` less the descriptors open now and
    :data:`DESCRIPTOR_RESERVE`, at least :data:`MIN_OPEN_FILES`; ``None``
    when the limit is infinite.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 0
    return max(soft - in_use - DESCRIPTOR_RESERVE, MIN_OPEN_FILES)


class DescriptorCache:
    """The real descriptors of one replay, recycled past a limit.

    Threads: safe from any thread. Blocking: methods make system calls
    (``open``, ``close``) in the calling thread.

    Args:
        sandbox: reopens recycled handles inside the root.
        limit: most real descriptors of traced files open at once;
            ``None`` for no limit but the kernel's (``EMFILE`` still
            recycles).
    """

    def __init__(self, sandbox: PathSandbox, limit: Optional[int]) -> None:
        self.sandbox = sandbox
        self.limit = limit
        self.lock = allocate_lock()
        #: Handles with a real descriptor.
        self._open: Dict[Handle, None] = {}
        #: Handles whose descriptor was recycled.
        self._parked: Dict[Handle, None] = {}
        #: Descriptors closed to make room, and handles reopened since.
        self.recycled = 0
        self.reopened = 0
        self._warned = False
        # use() stamps handles without the lock: next() of itertools.count
        # is atomic in CPython, and a late stamp only blurs the LRU order.
        self._clock = itertools.count(1)

    # -- descriptors entering and leaving -------------------------------------

    def open(self, traced: str, flags: int, mode: int = 0o644) -> int:
        """Open ``traced`` through the sandbox, making room first.

        Raises:
            OSError: as :meth:`PathSandbox.open`; ``EMFILE`` only when no
                idle descriptor is left to recycle.
        """
        with self.lock:  # type: ignore[attr-defined]
            self._make_room()
        return self.retry(lambda: self.sandbox.open(traced, flags, mode))

    def track(self, handle: Handle) -> None:
        """Start tracking the real descriptor of a new ``handle``."""
        handle.last_use = next(self._clock)
        with self.lock:  # type: ignore[attr-defined]
            self._open[handle] = None

    def close(self, handle: Handle) -> None:
        """Close the real descriptor of ``handle``, if any, and forget it."""
        with self.lock:  # type: ignore[attr-defined]
            fd = handle.fd
            handle.fd = -1
            self._open.pop(handle, None)
            self._parked.pop(handle, None)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- using a handle -----------------------------------------------------------

    def use(self, handle: Handle, stats: Optional[StreamStats] = None) -> int:
        """Return the real descriptor of a held ``handle``, reopening it if recycled.

        The caller must hold ``handle`` (:meth:`ProcessTable.find`), so it
        cannot be recycled until released. A reopen is counted in
        ``stats.descriptors_reopened``.

        Raises:
            OSError: reopening failed, for example because another program
                removed the file.
        """
        handle.last_use = next(self._clock)
        fd = handle.fd
        if fd >= 0:
            # A held handle is never recycled, so its descriptor stays valid
            # without the lock until the caller releases it.
            return fd
        with self.lock:  # type: ignore[attr-defined]
            if handle.fd >= 0:
                return handle.fd
            fd = self._reopen(handle)
            if stats is not None:
                stats.descriptors_reopened += 1
            return fd

    def pin_below(self, traced: str) -> None:
        """Keep the files at or below ``traced`` open until they are closed.

        Called before the replay unlinks or renames ``traced``: a handle on
        it could not be reopened by path afterwards.
        """
        try:
            prefix = self.sandbox.components(traced)
        except SandboxError:
            return
        with self.lock:  # type: ignore[attr-defined]
            for handle in [*self._open, *self._parked]:
                if self._is_below(handle, prefix):
                    if handle.fd < 0:
                        try:
                            self._reopen(handle)
                        except OSError:
                            continue
                    handle.pinned = True

    def _is_below(self, handle: Handle, prefix: Components) -> bool:
        try:
            parts = self.sandbox.components(handle.path)
        except SandboxError:
            return False
        return parts[: len(prefix)] == prefix

    def retry(self, call: Callable[[], T]) -> T:
        """Run ``call``, recycling an idle descriptor and retrying on ``EMFILE``."""
        for _ in range(MAX_RETRIES):
            try:
                return call()
            except OSError as exc:
                if exc.errno not in _TOO_MANY:
                    raise
                with self.lock:  # type: ignore[attr-defined]
                    if not self._recycle_one():
                        raise
        return call()

    # -- internals, called with the lock held --------------------------------------

    def _make_room(self) -> None:
        if self.limit is None:
            return
        while len(self._open) >= self.limit and self._recycle_one():
            pass

    def _recycle_one(self) -> bool:
        # A scan for the least recently used idle handle costs O(open
        # files). It runs only past the limit, so the common path of use()
        # stays free of locks and list updates.
        idle = [handle for handle in self._open if handle.users == 0 and not handle.pinned]
        if not idle:
            return False
        handle = min(idle, key=_last_use)
        del self._open[handle]
        self._parked[handle] = None
        fd = handle.fd
        handle.fd = -1
        try:
            os.close(fd)
        except OSError:
            pass
        self.recycled += 1
        if not self._warned:
            self._warned = True
            logger.warning(
                "descriptor limit reached with %d files open (limit %s, RLIMIT_NOFILE %d): "
                "closing the least recently used and reopening them on use",
                len(self._open) + 1,
                self.limit,
                resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )
        return True

    def _reopen(self, handle: Handle) -> int:
        self._make_room()
        for _ in range(MAX_RETRIES):
            try:
                fd = self.sandbox.open(handle.path, handle.flags)
                break
            except OSError as exc:
                if exc.errno not in _TOO_MANY or not self._recycle_one():
                    raise
        else:
            fd = self.sandbox.open(handle.path, handle.flags)
        handle.fd = fd
        self._parked.pop(handle, None)
        self._open[handle] = None
        self.reopened += 1
        return fd

    def drain(self) -> int:
        """Close every descriptor still tracked; return how many were open."""
        with self.lock:  # type: ignore[attr-defined]
            handles = list(self._open)
            self._open.clear()
            self._parked.clear()
            fds = [handle.fd for handle in handles]
            for handle in handles:
                handle.fd = -1
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        return len(fds)
