"""Replay trace files as shards on a Dask distributed cluster.

:class:`DaskReplayer` runs the three steps of a multi-process replay
(plan, prepare, replay) with Dask tasks in place of worker processes.
Each trace file is one shard, so the cluster balances the load and a
lost worker costs one file. (``max_events`` and ``max_bytes`` count
across all files, so with either cap every file goes in one shard.)

A dry run is one round of dry-run shards. A real replay is a round of
plan shards, then a round of replay shards. Each replay shard runs
:func:`~greenpipe.replay._shards.run_shard_in_subroot` with the plan of
its own files: it clears its sub-root under the replay root, prepares it
and replays into it, so that a shard that Dask retries after losing a
worker does its I/O once. The client merges the results in file order
into the summary a local replay returns.

Nothing here imports Dask at module level; :meth:`DaskReplayer.run`
imports it after checking that ``gevent.monkey`` patched nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cloudpickle

from .._memory import compute_memory_budget
from ..pipeline._config import DaskOptions
from ..replay._options import ReplayOptions
from ..replay._pipeline import (
    ReplayError,
    ReplayProgress,
    check_free_space,
    peak_rss_bytes,
    ranked_files,
    require_trace_files,
    series_origin,
)
from ..replay._execute import Timeline
from ..replay._plan import MAX_EXAMPLES
from ..replay._sandbox import prepare_root
from ..replay._shards import (
    ReplayShard,
    ShardRegistry,
    ShardResult,
    anchors_of,
    joined_registry,
    merge_plans,
    merge_results,
    partition_files,
    run_shard,
    run_shard_in_subroot,
)
from ..replay._summary import Preparation, ReplaySummary
from ._client import connect
from ._remote import dumps_by_value

logger = logging.getLogger(__name__)

__all__ = ["DaskReplayer", "check_address"]

#: Seconds between two checks for a cancellation while shards run.
POLL_INTERVAL = 0.1


def free_bytes_near(root: str) -> Optional[int]:
    """Return the free bytes of the file system that contains ``root``.

    The root may not exist yet on this machine, because the workers create
    it, so the nearest folder above it that exists is measured. Returns
    ``None`` when nothing on the way can be measured.
    """
    path = os.path.abspath(root)
    while True:
        try:
            return shutil.disk_usage(path).free
        except OSError:
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent


def check_address(address: str) -> None:
    """Check the syntax of a Dask scheduler address without connecting.

    Raises:
        ValueError: the address is empty, has an unknown scheme, or lacks
            the host or port that its scheme needs.
    """
    if not address:
        raise ValueError("the Dask scheduler address '' is empty; give one such as tcp://host:8786")
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except ValueError as error:
        raise ValueError(
            f"the Dask scheduler address {address!r} is invalid ({error}); "
            "give one such as tcp://host:8786"
        ) from None


#: Seconds that cancelled shards get to return their partial counts.
CANCEL_GRACE = 10.0
#: Cancelled replay runs a worker remembers, for shards that start late.
MAX_CANCELLED_RUNS = 64

# The shard registries of the replay runs in this worker process, by run id.
_registries: "OrderedDict[str, ShardRegistry]" = OrderedDict()
_registries_lock = threading.Lock()


def _registry_of(run_id: str) -> ShardRegistry:
    with _registries_lock:
        registry = _registries.get(run_id)
        if registry is None:
            registry = _registries[run_id] = ShardRegistry()
            while len(_registries) > MAX_CANCELLED_RUNS:
                _registries.popitem(last=False)
        return registry


def cancel_replay_run(run_id: str) -> int:
    """Cancel the shards of replay ``run_id`` in this worker process.

    Called by the client on every worker through ``Client.run``. Shards of
    the run that start later are cancelled as they start. Never blocks.

    Returns:
        The number of shards that were running.
    """
    return _registry_of(run_id).cancel()


def _run_on_worker(function: Any, run_id: str, *args: Any) -> Tuple[ShardResult, str, int]:
    """Run a shard function on a Dask worker; add the worker's address and budget.

    ``function`` is a callable, or a callable pickled by value (bytes). The
    shard runs it starts join the registry of ``run_id``, so that
    :func:`cancel_replay_run` can stop them.
    """
    from distributed import get_worker

    if isinstance(function, bytes):
        function = cloudpickle.loads(function)
    with joined_registry(_registry_of(run_id)):
        result = function(*args)
    return result, get_worker().address, compute_memory_budget()


@dataclasses.dataclass
class _WorkerRow:
    files: int = 0
    memory_budget_bytes: int = 0
    peak_rss_bytes: int = 0


class DaskReplayer:
    """Replays traces with their files spread over the workers of a Dask cluster.

    The same interface as :class:`~greenpipe.replay.Replayer`: call
    :meth:`run` once; :meth:`cancel` and :meth:`progress` may be called
    from any thread while it runs. The counters of the summary equal
    those of a local replay of the same inputs when the files of
    different shards touch disjoint paths, which holds for a dry run
    always. See ``docs/replay.md`` for what the sub-roots change.

    Args:
        inputs: trace files and folders, read by the client to list the
            files and by the workers to replay them, so every worker must
            reach them under the same paths.
        options: what to replay and how. ``options.root`` must be a path
            that every worker reaches, on a file system they share.
        address: the scheduler's address, such as ``tcp://host:8786``.
        scheduler_file: the file that ``dask scheduler --scheduler-file``
            wrote.
        client: a connected ``distributed.Client``, borrowed for the run.
        shard_function: the function that runs a replay shard on a
            worker, :func:`run_shard_in_subroot` unless a test replaces it.
            Any other function travels by value (cloudpickle).

    Raises:
        ValueError: more than one of ``address``, ``scheduler_file`` and
            ``client`` is given, or ``options.emit_trace`` is set.
    """

    def __init__(
        self,
        inputs: Sequence[str],
        options: ReplayOptions,
        *,
        address: Optional[str] = None,
        scheduler_file: Optional[str] = None,
        client: Any = None,
        shard_function: Callable[[ReplayShard, Any], ShardResult] = run_shard_in_subroot,
    ) -> None:
        chosen = [name for name, value in (("address", address), ("scheduler_file", scheduler_file), ("client", client)) if value is not None]
        if len(chosen) > 1:
            raise ValueError(f"give at most one of address, scheduler_file and client, not {' and '.join(chosen)}")
        if options.emit_trace is not None:
            # TODO: write a part per shard on the shared file system and join them.
            raise ValueError("emit_trace is not supported on a Dask cluster; replay locally to emit a trace")
        self.inputs = list(inputs)
        self.options = options
        self._dask = DaskOptions(address=address, scheduler_file=scheduler_file, client=client)
        self._shard_function: Any = shard_function
        if shard_function is not run_shard_in_subroot:
            self._shard_function = dumps_by_value([shard_function], [shard_function])[0]
        self._cancelled = threading.Event()
        self._phase = "plan"
        self._phase_started = time.monotonic()
        self._events_done = 0
        self._events_total = 0
        self._bytes_done = 0
        self._bytes_total = 0
        self._workers: Dict[str, _WorkerRow] = {}
        self._failures: List[Tuple[Tuple[Tuple[int, str], ...], str]] = []
        self._timeline: Optional[Timeline] = None

    # -- control from other threads ---------------------------------------------

    def cancel(self) -> None:
        """Stop the replay soon; :meth:`run` returns a partial summary.

        Every worker is asked to stop the run's shards: a running shard
        stops at its next blocking call and returns its partial counts,
        which are merged, and a shard that starts later stops at once.
        Shards still running after ``CANCEL_GRACE`` seconds are left out.
        Never blocks; safe from any thread and from a signal handler.
        """
        self._cancelled.set()

    def progress(self) -> ReplayProgress:
        """Return a snapshot of the progress, which advances as shards finish; never blocks."""
        return ReplayProgress(
            self._phase,
            self._events_done,
            self._events_total,
            self._bytes_done,
            self._bytes_total,
            time.monotonic() - self._phase_started,
        )

    def _set_phase(self, phase: str, events_total: int = 0, bytes_total: int = 0) -> None:
        self._phase = phase
        self._events_done = self._bytes_done = 0
        self._events_total = events_total
        self._bytes_total = bytes_total
        self._phase_started = time.monotonic()

    # -- the run ------------------------------------------------------------------

    def run(self) -> ReplaySummary:
        """Plan and replay (or dry-run) the files on the cluster; return the summary.

        Blocking: returns when every shard has ended or, after
        :meth:`cancel`, once the unstarted shards are cancelled.

        Raises:
            ReplayError: no input contains a trace, the root cannot be
                used, or the scheduler cannot be reached.
            GeventPatchedError: this process is patched by ``gevent.monkey``.
            ImportError: Dask's ``distributed`` package is not installed.
        """
        files, problems = require_trace_files(self.inputs)
        options = self.options
        if not options.dry_run:
            assert options.root is not None
            # The workers create and mark the root; the client only rejects
            # a root that it can see is wrong.
            message = prepare_root(options.root, create=False)
            if message is not None:
                raise ReplayError(message)
        ranked_files(files, options)  # raises for a rank that names no file
        groups = partition_files(files, max(len(files), 1), options)
        with self._connect() as client:
            run_id = uuid.uuid4().hex[:12]
            logger.info(
                "replaying %d trace files as %d shards on Dask scheduler %s",
                len(files), len(groups), client.scheduler.address,
            )
            if options.dry_run:
                self._set_phase("dry-run")
                started = time.monotonic()
                shards = [ReplayShard("dry-run", group, options) for group in groups]
                results = self._round(client, run_id, [(run_shard, (shard,)) for shard in shards], groups)
                preparation = Preparation()
            else:
                results, preparation, started = self._run_real(client, run_id, groups)
        wall = time.monotonic() - started
        self._set_phase("done")
        summary = merge_results(
            files,
            options,
            [result for result in results if result is not None],
            wall_seconds=wall,
            preparation=preparation,
            problems=problems,
            failed_files=[item for group, _ in self._failures for item in group],
            worker_failures=[message for _, message in self._failures],
            interrupted=self._cancelled.is_set(),
            timeline=self._timeline,
        )
        return dataclasses.replace(summary, processes=self._process_rows())

    def _connect(self) -> Any:
        if self._dask.address is not None:
            try:
                check_address(self._dask.address)
            except ValueError as error:
                raise ReplayError(f"{str(error)[0].upper()}{str(error)[1:]}.") from None
        return _ReportingConnection(self._dask)

    def _run_real(
        self, client: Any, run_id: str, groups: List[Tuple[Tuple[int, str], ...]]
    ) -> Tuple[List[Optional[ShardResult]], Preparation, float]:
        options = self.options
        self._set_phase("plan")
        started = time.monotonic()
        plan_shards = [ReplayShard("plan", group, options) for group in groups]
        planned = self._round(client, run_id, [(run_shard, (shard,)) for shard in plan_shards], groups)
        if self._cancelled.is_set():
            return [], Preparation(), started

        calls: List[Optional[Tuple[Callable[..., ShardResult], Tuple[Any, ...]]]] = []
        events_total = bytes_total = 0
        # One origin for the series of every shard, so that they add up.
        origin = series_origin()
        # Timed shards measure traced times from the earliest start of all
        # of them. NOTE: each shard starts its timeline when its task
        # starts, because a cluster may queue the tasks for a while.
        self._timeline = merge_plans([r for r in planned if r is not None]).timeline()
        for group, result in zip(groups, planned):
            # A shard whose plan failed is not replayed; its failure is reported.
            if result is None or result.plan is None:
                calls.append(None)
                continue
            plan = result.plan
            events_total += plan.events
            bytes_total += plan.write_bytes
            shard = ReplayShard(
                "replay",
                group,
                options,
                anchors_of(plan, group),
                origin=origin,
                timeline=self._timeline,
            )
            calls.append((self._shard_function, (shard, plan)))
        # Each shard checks its own bytes on its worker; shards that share a
        # file system can only be checked together here, before any writes.
        assert options.root is not None
        free = free_bytes_near(options.root)
        if free is None:
            if options.max_bytes is not None:
                bytes_total = min(bytes_total, options.max_bytes)
            bytes_total *= options.copies
        else:
            bytes_total = check_free_space(bytes_total, options, options.root, free)
        self._set_phase("replay", events_total, bytes_total)
        started = time.monotonic()
        results = self._round(client, run_id, calls, groups)
        return results, _merge_preparations(results), started

    def _round(
        self,
        client: Any,
        run_id: str,
        calls: Sequence[Optional[Tuple[Callable[..., ShardResult], Tuple[Any, ...]]]],
        groups: List[Tuple[Tuple[int, str], ...]],
    ) -> List[Optional[ShardResult]]:
        """Run ``calls[i]`` for ``groups[i]`` as Dask tasks; ``None`` for failures."""
        results: List[Optional[ShardResult]] = [None] * len(calls)
        finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        futures: Dict[Any, int] = {}
        for number, call in enumerate(calls):
            if call is None or self._cancelled.is_set():
                continue
            function, args = call
            lowest = groups[number][0][0]
            future = client.submit(
                _run_on_worker,
                function,
                run_id,
                *args,
                key=f"greenpipe-replay/{self._phase}-{lowest}-{run_id}",
                pure=False,
            )
            futures[future] = number
            future.add_done_callback(finished.put)

        pending = set(futures)
        deadline: Optional[float] = None
        while pending:
            if deadline is None and self._cancelled.is_set():
                # Running shards stop at their next blocking call and return
                # partial counts; shards that start later stop at once.
                stopped = self._cancel_running(client, run_id)
                logger.info(
                    "replay cancelled: %d running shards asked to stop, %d unfinished",
                    stopped,
                    len(pending),
                )
                deadline = time.monotonic() + CANCEL_GRACE
            if deadline is not None and time.monotonic() > deadline:
                logger.warning(
                    "replay cancelled: %d shards did not stop within %.0f s; "
                    "their counts are left out",
                    len(pending),
                    CANCEL_GRACE,
                )
                client.cancel(list(pending))
                break
            try:
                future = finished.get(timeout=POLL_INTERVAL)
            except queue.Empty:
                continue
            pending.discard(future)
            number = futures[future]
            self._collect(future, groups[number], number, results)
        return results

    def _cancel_running(self, client: Any, run_id: str) -> int:
        """Ask every worker to cancel the run's shards; return how many ran."""
        try:
            replies = client.run(cancel_replay_run, run_id, on_error="return")
        except Exception as error:  # the cluster may be gone already
            logger.warning("could not ask the Dask workers to stop replay %s: %s", run_id, error)
            return 0
        return sum(reply for reply in replies.values() if isinstance(reply, int))

    def _collect(
        self,
        future: Any,
        group: Tuple[Tuple[int, str], ...],
        number: int,
        results: List[Optional[ShardResult]],
    ) -> None:
        if future.status == "cancelled":
            return
        files_text = ", ".join(path for _, path in group)
        error = future.exception() if future.status == "error" else None
        if error is not None:
            logger.error("shard of %s failed on Dask: %s: %s", files_text, type(error).__name__, error)
            self._failures.append((group, f"{files_text}: the Dask task raised {type(error).__name__}: {error}"))
            return
        result, address, budget = future.result()
        results[number] = result
        row = self._workers.setdefault(address, _WorkerRow())
        row.memory_budget_bytes = budget
        row.peak_rss_bytes = max(row.peak_rss_bytes, result.peak_rss_bytes)
        if result.phase != "plan":
            row.files += len(group)
        if result.plan is not None:
            self._events_done += result.plan.events
        else:
            self._events_done += sum(counters.events for _, counters in result.files)
        self._bytes_done += sum(stream.bytes_read + stream.bytes_written for stream in result.streams)

    def _process_rows(self) -> Tuple[Dict[str, Any], ...]:
        # The client reads no trace, so its budget row is 0 as in a local
        # multi-process replay; each Dask worker reports its own budget.
        rows: List[Dict[str, Any]] = [
            {"role": "main", "files": 0, "memory_budget_bytes": 0, "peak_rss_bytes": peak_rss_bytes()}
        ]
        for address in sorted(self._workers):
            row = self._workers[address]
            rows.append(
                {
                    "role": "dask-worker",
                    "address": address,
                    "files": row.files,
                    "memory_budget_bytes": row.memory_budget_bytes,
                    "peak_rss_bytes": row.peak_rss_bytes,
                }
            )
        return tuple(rows)


class _ReportingConnection:
    """:func:`connect` whose connection errors become a :class:`ReplayError`."""

    def __init__(self, options: DaskOptions) -> None:
        self._context = connect(options)
        self._options = options

    def __enter__(self) -> Any:
        try:
            return self._context.__enter__()
        except OSError as error:
            where = self._options.address or self._options.scheduler_file
            raise ReplayError(
                f"Cannot connect to the Dask scheduler of {where}: {error}. "
                "Check that the scheduler runs and that the address or scheduler file is right."
            ) from None

    def __exit__(self, *exc_info: Any) -> Any:
        return self._context.__exit__(*exc_info)


def _merge_preparations(results: Sequence[Optional[ShardResult]]) -> Preparation:
    """Add up what the shards prepared, each in its own sub-root."""
    files = folders = total = 0
    examples: List[str] = []
    failures: List[str] = []
    for result in results:
        if result is None or result.preparation is None:
            continue
        prepared = result.preparation
        files += prepared.files
        folders += prepared.folders
        total += prepared.bytes
        examples.extend(prepared.examples)
        failures.extend(prepared.failures)
    return Preparation(
        files=files,
        folders=folders,
        bytes=total,
        examples=tuple(examples[:MAX_EXAMPLES]),
        failures=tuple(failures[:MAX_EXAMPLES]),
    )


def replay_on_dask(inputs: Sequence[str], options: ReplayOptions, **connection: Any) -> ReplaySummary:
    """Replay ``inputs`` on a Dask cluster; see :class:`DaskReplayer`."""
    return DaskReplayer(inputs, options, **connection).run()

