from __future__ import annotations

import pytest

import greenpipe
from greenpipe import JoinHandle
from greenpipe.testing import VirtualClock


def test_wait_returns_after_every_done_across_workers():
    def worker(scope, handle, log, index):
        greenpipe.sleep(index)
        log.append(index)
        handle.done()

    def body(scope):
        handle = JoinHandle()
        log = []
        handle.add(6)
        for index in range(6):
            scope.spawn(worker, handle, log, index)
        handle.wait()
        return sorted(log), handle.count

    assert greenpipe.run(body, threads=3, clock=VirtualClock()) == ([0, 1, 2, 3, 4, 5], 0)


def test_wait_at_zero_returns_at_once():
    JoinHandle().wait()


def test_done_below_zero_raises():
    handle = JoinHandle(1)
    handle.done()

    with pytest.raises(ValueError, match="more often than add"):
        handle.done()


def test_negative_add_raises():
    with pytest.raises(ValueError, match=r"^n must be >= 0, not -1; use done\(\) to decrease$"):
        JoinHandle().add(-1)


def test_wait_timeout():
    clock = VirtualClock()

    def body(scope):
        handle = JoinHandle(1)
        with pytest.raises(TimeoutError, match="did not reach zero within 2.0 s"):
            handle.wait(timeout=2)
        return clock.now()

    assert greenpipe.run(body, threads=1, clock=clock) == 2.0
