"""Run pipelines and task graphs on a Dask distributed cluster.

Select this backend with ``PipelineConfig().with_backend("dask", ...)``, or
call :func:`execute` to run a pipeline or a task graph on a given client
whatever backend its config names. Each pipeline task becomes one Dask task, whose
body runs on a greenpipe executor of its own inside a Dask worker.
``docs/dask.md`` covers setup and semantics.

Importing this module does not import Dask; running a pipeline does.
Dask's ``distributed`` package comes with the ``dask`` extra:
``pip install 'greenpipe[dask]'``. The workers need greenpipe installed
too; the task bodies themselves travel by value.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from ..pipeline._config import DEFAULT_CANCEL_GRACE, Duration
from ._errors import GeventPatchedError as GeventPatchedError
from ._errors import RemoteTaskError as RemoteTaskError
from ._patching import check_unpatched as check_unpatched

__all__ = ["GeventPatchedError", "RemoteTaskError", "check_unpatched", "execute"]


def execute(
    target: Any,
    *,
    address: str | None = None,
    scheduler_file: str | os.PathLike[str] | None = None,
    client: Any = None,
    task_threads: int = 1,
    cancel_grace: Duration = DEFAULT_CANCEL_GRACE,
    destination: Any = None,
) -> Any:
    """Run a pipeline or a task graph on a Dask cluster and wait for the end.

    The run uses ``target``'s settings (name, timeouts, failure policy) with
    the Dask backend in place of whatever backend it chose, so this is the
    same as ``with_backend("dask", ...)`` followed by ``execute()``.

    Blocking: blocks the calling thread until every task has ended, or the
    global timeout passed and the running bodies were cancelled.

    Args:
        target: A :class:`~greenpipe.pipeline.Pipeline`, or a
            :class:`~greenpipe.graph.TaskGraph` run as one pipeline.
        address: The Dask scheduler's address.
        scheduler_file: The scheduler file the Dask scheduler wrote.
        client: A connected ``distributed.Client``, borrowed for the run.
        task_threads: Worker threads of each task body's executor.
        cancel_grace: Seconds to wait for cancelled bodies to end.
        destination: For a task graph, the task whose value to return.

    Returns:
        The destination's value, or ``None`` without a destination.

    Raises:
        TypeError: ``target`` is neither a pipeline nor a task graph, or a
            task cannot be pickled.
        GeventPatchedError: This process is patched by ``gevent.monkey``.
        BaseException: Whatever :meth:`Pipeline.execute` raises.
    """
    from ..graph import TaskGraph
    from ..pipeline import Pipeline, PipelineConfig

    options = {
        "address": address,
        "scheduler_file": scheduler_file,
        "client": client,
        "task_threads": task_threads,
        "cancel_grace": cancel_grace,
    }
    if isinstance(target, TaskGraph):
        config = PipelineConfig().with_name(target.name).with_backend("dask", **options)
        return target.execute(config, destination=destination)
    if not isinstance(target, Pipeline):
        raise TypeError(f"execute() takes a Pipeline or a TaskGraph, not {target!r}")
    if destination is not None:
        raise ValueError(
            "destination applies to task graphs; call set_destination() on the pipeline"
        )
    config = copy.copy(target.config).with_backend("dask", **options)
    config.validate()
    target._config = config
    return target.execute()

