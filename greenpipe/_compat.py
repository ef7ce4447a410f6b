"""Unpatched threading primitives.

``gevent.monkey.patch_all()`` replaces ``_thread`` and ``threading`` with
greenlet-based versions. The executor needs real OS threads and locks that
really block the thread, so it takes the originals that gevent saved.
"""

from __future__ import annotations

import _thread
import sys
import time
from typing import Any, Callable

# Patching goes through gevent.monkey, so while it is not imported nothing
# is patched, and the modules hold the originals. Importing gevent only
# when the program did spares every start of the command about 10 ms.
_monkey: Any = sys.modules.get("gevent.monkey")
if _monkey is not None:
    allocate_lock: Callable[[], object] = _monkey.get_original("_thread", "allocate_lock")
    start_new_thread = _monkey.get_original("_thread", "start_new_thread")
    get_ident: Callable[[], int] = _monkey.get_original("_thread", "get_ident")
    thread_local = _monkey.get_original("_thread", "_local")
    real_sleep: Callable[[float], None] = _monkey.get_original("time", "sleep")
else:
    allocate_lock = _thread.allocate_lock
    start_new_thread = _thread.start_new_thread
    get_ident = _thread.get_ident
    thread_local = _thread._local
    real_sleep = time.sleep
monotonic: Callable[[], float] = time.monotonic
perf_counter: Callable[[], float] = time.perf_counter


def threading_patched() -> bool:
    """Return whether gevent's monkey patching has replaced ``threading``.

    Checked at each call, because a program may patch after importing
    greenpipe. Patched, ``threading.Thread`` starts a greenlet, which runs
    only while its hub runs.
    """
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


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
