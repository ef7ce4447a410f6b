"""Unpatched threading primitives.

``gevent.monkey.patch_all()`` replaces ``_thread`` and ``threading`` with
greenlet-based versions. The executor needs real OS threads and locks that
really block the thread, so it takes the originals that gevent saved.
"""

from __future__ import annotations

import time
from typing import Callable

from gevent import monkey

allocate_lock: Callable[[], object] = monkey.get_original("_thread", "allocate_lock")
start_new_thread = monkey.get_original("_thread", "start_new_thread")
get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
thread_local = monkey.get_original("_thread", "_local")
real_sleep: Callable[[float], None] = monkey.get_original("time", "sleep")
monotonic: Callable[[], float] = time.monotonic
perf_counter: Callable[[], float] = time.perf_counter


class RealEvent:
    """A flag that OS threads can wait on, immune to monkey patching."""

    __slots__ = ("_flag", "_mutex", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._mutex = allocate_lock()
        self._waiters: list = []

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._mutex:
            self._flag = True
            waiters = self._waiters
            self._waiters = []
        for lock in waiters:
            lock.release()

    def clear(self) -> None:
        with self._mutex:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block the calling OS thread until the flag is set or the timeout ends."""
        with self._mutex:
            if self._flag:
                return True
            lock = allocate_lock()
            lock.acquire()
            self._waiters.append(lock)
        acquired = lock.acquire(True, -1 if timeout is None else max(timeout, 0.0))
        if not acquired:
            with self._mutex:
                try:
                    self._waiters.remove(lock)
                except ValueError:
                    pass
        return self._flag


def os_thread_count() -> int:
    """Return the number of OS threads of this process (Linux), or -1."""
    try:
        import os

        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1
