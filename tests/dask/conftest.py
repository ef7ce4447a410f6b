"""Dask clusters for the backend tests, bound to 127.0.0.1 only.

``dask_client`` is a client of a cluster whose workers run as threads of
the test process, shared by the tests of one module. ``process_client``
is a client of a two-process ``LocalCluster`` shared by one test module;
``fresh_process_cluster`` starts one for a single test that may kill its
workers. Dask starts its own threads (event loops, thread pools), so the
tests here replace the thread leak check with one for the executors that
the backend starts inside the workers.
"""

from __future__ import annotations

import contextlib
import gc
import time
from typing import Any, Iterator

import pytest
from gevent.hub import Hub
from greenlet import getcurrent, greenlet

from greenpipe.dask import _worker

LOOPBACK = "127.0.0.1"


def _addresses(client: Any) -> list[str]:
    info = client.scheduler_info()
    return [info["address"], *info["workers"]]


@contextlib.contextmanager
def local_cluster(*, processes: bool, **config: Any) -> Iterator[Any]:
    """Start a LocalCluster on 127.0.0.1 and yield a client of it."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set(config), LocalCluster(
        n_workers=2,
        threads_per_worker=2 if not processes else 1,
        processes=processes,
        host=LOOPBACK,
        protocol="tcp://",
        # The scheduler serves HTTP even without a dashboard; a free port on
        # the loopback interface keeps clusters from competing for 8787.
        dashboard_address=f"{LOOPBACK}:0",
        worker_dashboard_address=None,
    ) as cluster, Client(cluster, set_as_default=False, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
        for address in _addresses(client):
            assert address.startswith(f"tcp://{LOOPBACK}:"), address
        yield client


# NOTE: module scope, because this folder is no package (a tests/dask
# package would shadow Dask itself), and a package-scoped fixture would
# keep the cluster running, busy with heartbeats, through later test files.
@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    with local_cluster(processes=False) as client:
        yield client


@pytest.fixture(scope="module")
def process_client() -> Iterator[Any]:
    with local_cluster(processes=True) as client:
        yield client


@pytest.fixture
def fresh_process_cluster() -> Any:
    """Return a factory of two-process clusters that live for one test."""
    with contextlib.ExitStack() as stack:
        yield lambda **config: stack.enter_context(local_cluster(processes=True, **config))


def wait_for_executors_to_end(timeout: float = 10.0) -> int:
    """Wait until no body executor runs in this process; return how many do."""
    deadline = time.monotonic() + timeout
    while _worker.live_executors() and time.monotonic() < deadline:
        time.sleep(0.01)
    return _worker.live_executors()


def _live_greenlets() -> int:
    # Each Dask worker thread that waited on a body keeps its main greenlet
    # (the one without a parent) for as long as the thread lives.
    getcurrent()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, greenlet)
        and obj
        and not obj.dead
        and obj.parent is not None
        and not isinstance(obj, Hub)
    )


@pytest.fixture
def executors_ended() -> Any:
    """Return a function that waits for the body executors to end."""
    return wait_for_executors_to_end


@pytest.fixture(autouse=True)
def no_leaked_threads_or_greenlets() -> Iterator[None]:
    """Check that no body executor or greenlet of the workers outlives a test."""
    greenlets_before = _live_greenlets()
    yield
    assert wait_for_executors_to_end() == 0, "a task body's executor is still running"
    gc.collect()
    assert _live_greenlets() <= greenlets_before, "a test left greenlets suspended"
