"""Tools for deterministic tests of code built on greenpipe.

* :class:`VirtualClock`: time that jumps ahead when every task is parked,
  so timeouts are tested without waiting.
* :func:`wait_all_blocked`: wait until every other task is parked.
* :class:`Sequencer`: force an explicit order between tasks.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Iterator

from ._clock import VirtualClock
from ._compat import allocate_lock
from ._executor import wait_blocked_lot
from ._hub import ParkingLot, current_task, make_waiter

__all__ = ["Sequencer", "VirtualClock", "wait_all_blocked"]


def wait_all_blocked() -> None:
    """Park the calling task until every task of its executor is parked.

    Blocking: returns once all tasks, this one included, wait at greenpipe
    blocking calls with nothing in flight. Before a virtual clock moves,
    these callers are woken first, so a test can look at a settled state at
    the current instant.

    Raises:
        RuntimeError: The caller is not a task.
    """
    task = current_task()
    if task is None:
        raise RuntimeError("wait_all_blocked() must be called from a task")
    waiter = wait_blocked_lot(task._worker.executor)
    waiter.park()


class Sequencer:
    """Force tasks through numbered checkpoints in order.

    ``with seq(n):`` blocks until every checkpoint below ``n`` has been
    entered and left, so the body of checkpoint ``n`` runs strictly after
    the body of ``n - 1``. Each number may be used once.

    Example:
        >>> seq = Sequencer()
        >>> def first(scope):
        ...     with seq(0):
        ...         ...
    """

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._next = 0
        self._claimed: set[int] = set()
        self._lots: defaultdict[int, ParkingLot] = defaultdict(ParkingLot)

    def _describe_wait(self) -> str:
        return f"a Sequencer at position {self._next}"

    @contextlib.contextmanager
    def __call__(self, position: int) -> Iterator[None]:
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError(f"sequencer position must be an int >= 0, not {position!r}")
        with self._lock:
            if position in self._claimed:
                raise RuntimeError(f"sequencer position {position} was already used")
            self._claimed.add(position)
            waiter = None
            if self._next != position:
                waiter = make_waiter(self)
                self._lots[position].add(waiter)
        if waiter is not None:
            waiter.park()
        try:
            yield
        finally:
            with self._lock:
                self._next = position + 1
                lot = self._lots.pop(position + 1, None)
                waiters = lot.take_all() if lot is not None else []
            for next_waiter in waiters:
                next_waiter.wake(None)
