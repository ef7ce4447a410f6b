"""Shared fixtures: leak checks around every test and small helpers."""

from __future__ import annotations

import gc
import time

import pytest
from gevent.hub import Hub
from greenlet import getcurrent, greenlet

from greenpipe._compat import os_thread_count

try:
    # numpy starts its BLAS threads on import and keeps them. Several code
    # paths import it on first use (Dask, matplotlib, pyarrow), so import
    # it before any test counts threads.
    import numpy  # noqa: F401
except ImportError:  # pragma: no cover - numpy comes with the test extra
    pass


def _live_greenlets() -> int:
    # The main greenlet is created on first use, so create it before counting.
    # gevent's hub greenlets are per-thread singletons that gevent manages;
    # a worker hub that outlived its executor shows up as a thread instead.
    getcurrent()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, greenlet) and obj and not obj.dead and not isinstance(obj, Hub)
    )


@pytest.fixture(autouse=True)
def no_leaked_threads_or_greenlets(request: pytest.FixtureRequest):
    """Check that a test leaves no OS thread and no live greenlet behind."""
    if request.node.get_closest_marker("no_leak_check"):
        yield
        return
    threads_before = os_thread_count()
    greenlets_before = _live_greenlets()
    yield
    deadline = time.monotonic() + 5.0
    while os_thread_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.01)
    # Fewer threads than before is fine: one that an earlier test had already
    # released may exit only now.
    assert os_thread_count() <= threads_before, "a test left OS threads running"
    gc.collect()
    assert _live_greenlets() <= greenlets_before, "a test left greenlets suspended"


@pytest.fixture(autouse=True)
def destroy_main_gevent_hub():
    """Drop a gevent hub that a test created in the main thread, with its loop."""
    from gevent._hub_local import get_hub_if_exists

    existed = get_hub_if_exists() is not None
    yield
    hub = get_hub_if_exists()
    if hub is not None and not existed:
        # The loop goes too. gevent would otherwise give the same default
        # loop to the next test's hub, with the time it cached when this
        # test last ran it. libev measures a new timer from that cached
        # time, so a later gevent.joinall(timeout=30) returned at once when
        # other tests had taken 30 s in between.
        hub.destroy(destroy_loop=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "no_leak_check: skip the thread and greenlet leak check"
    )
