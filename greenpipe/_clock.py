"""The virtual clock used by deterministic tests."""

from __future__ import annotations

from typing import Any

from ._compat import allocate_lock


class VirtualClock:
    """A clock that jumps to the next timer whenever every task is parked.

    Pass it to :func:`greenpipe.run` or :class:`greenpipe.Executor` as
    ``clock=``. Time starts at ``start`` and only moves when the executor is
    quiescent (every task parked at a greenpipe blocking call, no offloaded
    call running), so a test of a 60 s timeout finishes at once and in the
    same order every time. Tasks parked in gevent's own primitives count as
    running, so such code sees real time instead.

    One clock serves one executor at a time.
    """

    is_virtual = True

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = allocate_lock()
        self._executor: Any = None

    def __repr__(self) -> str:
        return f"<VirtualClock now={self._now:g}>"

    def now(self) -> float:
        """Return the current virtual time in seconds."""
        return self._now

    def _set(self, value: float) -> None:
        with self._lock:
            if value > self._now:
                self._now = value

    def _attach(self, executor: Any) -> None:
        with self._lock:
            if self._executor is not None:
                raise RuntimeError(
                    "this VirtualClock already drives another executor; "
                    "create one clock per executor"
                )
            self._executor = executor

    def _detach(self, executor: Any) -> None:
        with self._lock:
            if self._executor is executor:
                self._executor = None
