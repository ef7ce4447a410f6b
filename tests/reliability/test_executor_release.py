"""A shut-down executor, and the pipeline that made it, can be collected.

A long-running program that runs many pipelines creates an executor for
each, so an executor that outlived its shutdown would grow the process
without bound (``bench/soak.py`` measures this over minutes).
"""

from __future__ import annotations

import gc
import time
import weakref

import greenpipe
from greenpipe._compat import os_thread_count


def _collect_after_threads_exit(threads_before: int) -> None:
    """Wait until the worker threads have returned, then collect garbage.

    ``shutdown`` returns once each worker has stopped, a moment before its
    thread function returns and drops its frame.
    """
    deadline = time.monotonic() + 10
    while os_thread_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.01)
    gc.collect()


def test_shut_down_executor_collected() -> None:
    threads_before = os_thread_count()
    references = []
    for _ in range(3):
        executor = greenpipe.Executor(2, name="released")
        executor.run(lambda scope: scope.spawn(lambda inner: 1).result())
        executor.shutdown()
        references.append(weakref.ref(executor))
        del executor

    _collect_after_threads_exit(threads_before)

    assert [reference() for reference in references] == [None, None, None]


def test_pipeline_executor_collected() -> None:
    threads_before = os_thread_count()
    created = []
    original = greenpipe.pipeline._pipeline.Executor

    def tracked(*args, **kwargs):
        executor = original(*args, **kwargs)
        created.append(weakref.ref(executor))
        return executor

    greenpipe.pipeline._pipeline.Executor = tracked
    try:
        pipeline = greenpipe.Pipeline(greenpipe.PipelineConfig().with_compute_threads(2))
        pipeline.set_source([greenpipe.make_task(lambda scope: 1, name="one")])
        pipeline.execute()
    finally:
        greenpipe.pipeline._pipeline.Executor = original
    del pipeline

    _collect_after_threads_exit(threads_before)

    assert len(created) == 1
    assert created[0]() is None
