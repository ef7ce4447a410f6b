"""JoinHandle: a counting join barrier usable across workers and threads."""

from __future__ import annotations

from ._compat import allocate_lock
from ._hub import TIMED_OUT, ParkingLot, make_waiter
from ._util import Duration, to_seconds

__all__ = ["JoinHandle"]


class JoinHandle:
    """A counter of outstanding work that callers can wait to reach zero.

    ``add(n)`` before starting ``n`` pieces of work, ``done()`` as each one
    ends, ``wait()`` to block until all have ended. Every method is safe
    from any task, greenlet or thread.
    """

    def __init__(self, count: int = 0) -> None:
        if count < 0:
            raise ValueError(f"count must be >= 0, not {count!r}")
        self._count = count
        self._lock = allocate_lock()
        self._lot = ParkingLot()

    def __repr__(self) -> str:
        return f"<JoinHandle count={self._count}>"

    def _describe_wait(self) -> str:
        return f"a JoinHandle with {self._count} outstanding"

    @property
    def count(self) -> int:
        """Work added and not yet marked done."""
        return self._count

    def add(self, n: int = 1) -> None:
        """Add ``n`` outstanding pieces of work; never blocks.

        Raises:
            ValueError: ``n`` is negative.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n!r}; use done() to decrease")
        with self._lock:
            self._count += n

    def done(self) -> None:
        """Mark one piece of work done; wakes the waiters at zero. Never blocks.

        Raises:
            ValueError: More ``done()`` calls than added work.
        """
        with self._lock:
            if self._count == 0:
                raise ValueError("done() called more often than add(); the count is already 0")
            self._count -= 1
            waiters = self._lot.take_all() if self._count == 0 else []
        for waiter in waiters:
            waiter.wake(None)

    def wait(self, timeout: Duration | None = None) -> None:
        """Block until the count is zero.

        Blocking: parks until the last ``done()``. Cancellation: a
        cancellation point of a waiting task.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        seconds = to_seconds(timeout, "timeout")
        with self._lock:
            if self._count == 0:
                return
            waiter = make_waiter(self)
            self._lot.add(waiter)
        if waiter.park(seconds) is TIMED_OUT:
            raise TimeoutError(f"{self!r} did not reach zero within {seconds} s")
