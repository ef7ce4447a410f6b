"""Replay shards: a pass over some trace files, as a picklable unit of work.

A :class:`ReplayShard` names some trace files (each with its position
among all the files of the replay), the :class:`ReplayOptions` and the
pass to run: ``"plan"``, ``"dry-run"`` or ``"replay"``. :func:`run_shard`
runs it on a private executor in the calling process and returns a
:class:`ShardResult`, which holds only counters and the plan: no
executor, channel, sandbox or descriptor. Shard and result pickle, and
the function keeps no state between calls, so the same call can run in
a worker process of this machine or as a task of a cluster engine.

Why sharding by file is safe. Everything the replay keeps across events
is keyed by trace file first: descriptor tables by ``(file, pid)``,
streams by ``(file, pid, tid)``, the plan's descriptor positions inside
one :class:`FilePlan`, and the sampling generator by the file's
position. Two files that contain the same pid therefore share nothing
in a single-process run either, and may go to different shards. What
files do share is the root folder: the plan is merged from all shards
before the one preparation step, and the replay passes of all shards
write into the same root, as the files of a single-process run do.

Caps across files. ``max_events`` and ``max_bytes`` are counted across
all the files of a replay, which needs one counter. A shard counts them
over its own files only, so a multi-process run with either cap keeps
all the files in one shard (see :func:`partition_files`).

Idempotence. Plan and dry-run shards only read, so running one twice
gives the same result. A replay shard writes into the shared root, so a
second run of it finds the files of the first (an ``O_EXCL`` open or a
``mkdir`` then fails, an appending write doubles). Within one machine a
shard never runs twice. A cluster engine retries a task whose worker was
lost, so :func:`run_shard_in_subroot` replays a shard into a sub-root of
its own, ``ROOT/.shards/<lowest file index>``, which it clears and
prepares from the shard's own plan each time it starts. A retried shard
then does the same I/O as its first run, never twice as much. The price
is the cross-file effects described above. Files of different shards no
longer meet, so ranks in different shards that use the same file each
replay on a copy of their own. The counts of such a replay may then
differ from a run that shares one root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import threading
import time
from typing import Callable, Dict, Hashable, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from .._compat import allocate_lock

from ._options import ReplayOptions, select_ranks
from ._pipeline import (
    check_free_space,
    ReplayError,
    ReplayProgress,
    Replayer,
    open_copies,
    peak_rss_bytes,
    prepare_copies,
    problem_counters,
    timing_setup,
)
from ._execute import Timeline
from ._plan import Plan
from ._series import ReplaySeries, SeriesOrigin
from ._split import FilePart, merge_parts
from ._sandbox import ROOT_MARKER, PathSandbox, SandboxError, mount_points_under, prepare_root
from ._summary import FileCounters, Preparation, ReplaySummary, StreamStats, build_summary

#: The passes a shard can run.
PHASES = ("plan", "dry-run", "replay")
#: Folder under the replay root that contains the sub-root of each shard
#: replayed by :func:`run_shard_in_subroot`.
SUBROOT_FOLDER = ".shards"


@dataclasses.dataclass(frozen=True)
class ReplayShard:
    """A pass over some trace files of a replay.

    Attributes:
        phase: ``"plan"`` (follow the files to find what to prepare),
            ``"dry-run"`` (parse, decode and filter only) or ``"replay"``
            (execute the calls under ``options.root``, which must already
            be prepared from the merged plan).
        files: ``(index, path)`` pairs; ``index`` is the file's position
            among all the files of the replay, which seeds its sampling.
        options: the options of the whole replay.
        anchors: ``(path, first start time)`` of each file from the
            merged plan; ``original`` timing measures gaps from it.
        groups: for ``--order resource``, the indexes of the files that
            keep their order against each other (from the merged plan);
            empty to merge all the shard's files in one timeline.
        origin: the zero of the replay clock of the time series
            (``options.series``), the same for every shard of a replay;
            ``None`` takes the moment the shard starts.
        timeline: the traced span of the whole replay, from the merged
            plan of all shards. Timed replays measure traced times from
            its first start, so every shard shares one origin.
        start_epoch: the wall-clock time (:func:`time.time`) at which the
            first traced call of the whole replay is due, shared by every
            shard; ``None`` starts the shard's own timeline when it starts.
        parts: for a dry-run shard, the part of each entry of ``files``
            to read, ``None`` for the whole file; empty reads every file
            whole. The same file may appear once per part.
    """

    phase: str
    files: Tuple[Tuple[int, str], ...]
    options: ReplayOptions
    anchors: Tuple[Tuple[str, int], ...] = ()
    groups: Tuple[Tuple[int, ...], ...] = ()
    origin: Optional[SeriesOrigin] = None
    timeline: Optional[Timeline] = None
    start_epoch: Optional[float] = None
    parts: Tuple[Optional[FilePart], ...] = ()

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, not {self.phase!r}")
        if self.phase == "replay" and self.options.dry_run:
            raise ValueError("a replay shard needs options with dry_run false")
        if self.phase == "dry-run" and not self.options.dry_run:
            raise ValueError("a dry-run shard needs options with dry_run true")
        if self.parts:
            if len(self.parts) != len(self.files):
                raise ValueError(
                    f"parts must have one entry per file ({len(self.files)}), "
                    f"not {len(self.parts)}"
                )
            if self.phase != "dry-run" and any(part is not None for part in self.parts):
                raise ValueError(f"only a dry-run shard reads parts of files, not a {self.phase} shard")

    @property
    def paths(self) -> Tuple[str, ...]:
        """The trace files of the shard, in order."""
        return tuple(path for _, path in self.files)


@dataclasses.dataclass
class ShardResult:
    """The mergeable outcome of one shard.

    Attributes:
        phase: the pass that ran.
        files: ``(index, counters)`` of each file read; empty for a plan.
        streams: counters of every replayed stream; empty unless the
            phase is ``"replay"``.
        plan: the merged plan of the shard's files, for a plan shard.
        interrupted: whether the shard was cancelled before its end.
        wall_seconds: time the pass took.
        peak_rss_bytes: peak resident set size of the process that ran
            the shard, measured when it ended.
        preparation: what the shard prepared in its own sub-root, for a
            shard run by :func:`run_shard_in_subroot`; ``None`` otherwise.
        series: the time series of a replay shard with
            ``options.series``, and their origin; ``None`` otherwise.
        parts: ``(index, part, counters)`` of each part of a file read;
            their lines are numbered from the start of the part.
    """

    phase: str
    files: Tuple[Tuple[int, FileCounters], ...] = ()
    streams: Tuple[StreamStats, ...] = ()
    plan: Optional[Plan] = None
    interrupted: bool = False
    wall_seconds: float = 0.0
    peak_rss_bytes: int = 0
    preparation: Optional[Preparation] = None
    series: Optional[ReplaySeries] = None
    series_origin: Optional[SeriesOrigin] = None
    parts: Tuple[Tuple[int, FilePart, FileCounters], ...] = ()


class ShardRegistry:
    """The shard runs started in threads that joined this registry.

    A cluster engine runs :func:`run_shard` as an opaque task. To stop the
    shards of one replay, the task's thread joins a registry with
    :func:`joined_registry`; every :class:`ShardRun` started there is
    added, and :meth:`cancel` cancels them all, including runs that start
    afterwards.

    Threads: safe from any thread.
    """

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._runs: Set["ShardRun"] = set()
        self.cancelled = False

    def add(self, run: "ShardRun") -> None:
        with self._lock:
            self._runs.add(run)
            cancelled = self.cancelled
        if cancelled:
            run.cancel()

    def discard(self, run: "ShardRun") -> None:
        with self._lock:
            self._runs.discard(run)

    def cancel(self) -> int:
        """Cancel every run, now and later; return how many were running."""
        with self._lock:
            self.cancelled = True
            runs = list(self._runs)
        for run in runs:
            run.cancel()
        return len(runs)


_thread_registry = threading.local()


@contextlib.contextmanager
def joined_registry(registry: ShardRegistry) -> Iterator[ShardRegistry]:
    """Add the shard runs that the calling thread starts to ``registry``."""
    previous = getattr(_thread_registry, "registry", None)
    _thread_registry.registry = registry
    try:
        yield registry
    finally:
        _thread_registry.registry = previous


class ShardRun:
    """One run of a shard, with cancelling and progress for its caller.

    :func:`run_shard` is this class without the controls. :meth:`cancel`
    and :meth:`progress` may be called from any thread while :meth:`run`
    blocks in another.
    """

    def __init__(self, shard: ReplayShard) -> None:
        self.shard = shard
        self._replayer = Replayer(list(shard.paths), shard.options)

    def cancel(self) -> None:
        """Stop the pass soon; :meth:`run` returns a partial result.

        Never blocks; safe from any thread and from a signal handler.
        """
        self._replayer.cancel()

    def progress(self) -> ReplayProgress:
        """Return a snapshot of the pass's progress; never blocks."""
        return self._replayer.progress()

    def run(self) -> ShardResult:
        """Run the pass and return its result.

        Blocking: runs a private executor until the pass ends or, after
        :meth:`cancel`, until every stream has stopped.

        Raises:
            SandboxError: the root of a replay shard cannot be opened.
        """
        registry: Optional[ShardRegistry] = getattr(_thread_registry, "registry", None)
        if registry is not None:
            registry.add(self)
        try:
            return self._run()
        finally:
            if registry is not None:
                registry.discard(self)

    def _run(self) -> ShardResult:
        shard = self.shard
        replayer = self._replayer
        started = time.monotonic()
        streams: List[StreamStats] = []
        plan = None
        series: Optional[ReplaySeries] = None
        origin: Optional[SeriesOrigin] = None
        if shard.phase == "plan":
            plan = replayer.plan_pass(shard.files)
            counters: List[FileCounters] = []
        elif shard.phase == "dry-run":
            bounds = [None if part is None else part.bounds() for part in shard.parts]
            counters = replayer.dry_pass(shard.files, bounds)
        else:
            assert shard.options.root is not None
            start = None
            if shard.start_epoch is not None:
                # Each process converts the shared wall-clock instant to its
                # own monotonic clock once; pacing then uses only the latter.
                start = time.monotonic() + (shard.start_epoch - time.time())
            with open_copies(shard.options.root, shard.options.copies) as sandboxes:
                counters, streams = replayer.replay_pass(
                    shard.files,
                    sandboxes,
                    dict(shard.anchors),
                    shard.groups or None,
                    shard.origin,
                    timeline=shard.timeline,
                    start=start,
                )
            series, origin = replayer.series()
        parts = shard.parts or (None,) * len(shard.files)
        whole = tuple(
            (index, counter)
            for (index, _), part, counter in zip(shard.files, parts, counters)
            if part is None
        )
        pieces = tuple(
            (index, part, counter)
            for (index, _), part, counter in zip(shard.files, parts, counters)
            if part is not None
        )
        return ShardResult(
            phase=shard.phase,
            files=whole,
            parts=pieces,
            streams=tuple(streams),
            plan=plan,
            interrupted=replayer.cancelled,
            wall_seconds=time.monotonic() - started,
            peak_rss_bytes=peak_rss_bytes(),
            series=series,
            series_origin=origin,
        )


def run_shard(shard: ReplayShard) -> ShardResult:
    """Run ``shard`` in the calling process and return its result.

    A plain function of picklable values: it reads the shard's files,
    writes only under ``shard.options.root`` (replay shards), and keeps
    nothing once it returns, so it can run unchanged as a task of a
    cluster engine.

    Blocking: starts and stops its own executor; call it from any thread
    that is not a task.

    Raises:
        SandboxError: the root of a replay shard cannot be opened.
    """
    return ShardRun(shard).run()


def subroot_of(root: str, files: Sequence[Tuple[int, str]]) -> str:
    """Return the sub-root of the shard of ``files`` under the replay ``root``.

    The name is the lowest file index of the shard, which no other shard
    of the same partition holds.
    """
    lowest = min(index for index, _ in files)
    return os.path.join(os.path.realpath(root), SUBROOT_FOLDER, str(lowest))


def run_shard_in_subroot(shard: ReplayShard, plan: Plan) -> ShardResult:
    """Replay ``shard`` into a sub-root of its own, cleared and prepared first.

    The sub-root is :func:`subroot_of` ``shard.options.root`` and the
    shard's files. Each call marks the root (as a local replay does),
    removes the sub-root left by an earlier run of the same shard, marks
    a new one, prepares it from ``plan``, and replays the shard into it.
    Running the same shard twice, as a cluster engine does after losing
    a worker, therefore leaves the same files as running it once.

    Args:
        shard: a replay shard whose ``options.root`` is the replay root.
        plan: the plan of the shard's own files, from their plan shard.

    Blocking: makes its system calls and runs its executor in the calling
    thread.

    Raises:
        ReplayError: the root or the sub-root cannot be used.
        InsufficientSpaceError: the shard's bytes to write exceed the free
            space under the sub-root and ``options.force`` is false.
        SandboxError: a sub-root left by an earlier run is not a folder
            that a replay made.
    """
    if shard.phase != "replay":
        raise ValueError(f"run_shard_in_subroot() takes a replay shard, not a {shard.phase} shard")
    root = shard.options.root
    assert root is not None
    message = prepare_root(root)
    if message is not None:
        raise ReplayError(message)
    subroot = _clear_subroot(root, shard.files)
    message = prepare_root(subroot)
    if message is not None:
        raise ReplayError(message)
    check_free_space(plan.write_bytes, shard.options, subroot)
    with open_copies(subroot, shard.options.copies, prepare=True) as sandboxes:
        preparation = prepare_copies(plan, sandboxes)
    inner = dataclasses.replace(shard, options=dataclasses.replace(shard.options, root=subroot))
    result = run_shard(inner)
    result.preparation = preparation
    return result


def _clear_subroot(root: str, files: Sequence[Tuple[int, str]]) -> str:
    """Make the folder of the sub-roots and remove the shard's old sub-root.

    Only a real folder on the root's device, with no mount point inside,
    that is empty or contains the root marker is removed. Anything else
    raises :class:`SandboxError`, so that no file a replay did not make
    is deleted.
    """
    subroot = subroot_of(root, files)
    folder = os.path.dirname(subroot)
    device = os.stat(os.path.dirname(folder)).st_dev
    try:
        os.mkdir(folder)
    except FileExistsError:
        pass
    _check_own_folder(folder, device)
    try:
        _check_own_folder(subroot, device)
    except FileNotFoundError:
        return subroot
    if mount_points_under(subroot):
        raise SandboxError(f"the shard sub-root {subroot!r} contains a mount point; remove it by hand")
    entries = os.listdir(subroot)
    if entries and ROOT_MARKER not in entries:
        raise SandboxError(
            f"the shard sub-root {subroot!r} is not empty and was not made by a replay; "
            "remove it by hand or choose a new root"
        )
    # shutil.rmtree removes through directory descriptors on Linux and never
    # follows a symlink inside the tree.
    shutil.rmtree(subroot)
    return subroot


def _check_own_folder(path: str, device: int) -> None:
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise SandboxError(f"{path!r} is not a folder; remove it or choose a new root")
    if info.st_dev != device:
        raise SandboxError(f"{path!r} is on another device than the replay root; remove it by hand")


def partition_files(
    files: Sequence[str], parts: int, options: ReplayOptions
) -> List[Tuple[Tuple[int, str], ...]]:
    """Split ``files`` into at most ``parts`` groups of about equal size.

    Files go, largest first by bytes on disk, to the group with the
    fewest bytes so far (then the fewest files, then the lowest number),
    so the split is the same on every run. Each group lists its files in their original
    order. With ``max_events`` or ``max_bytes`` set, every file goes in
    one group, because those caps count across all the files.

    Returns:
        Groups of ``(index, path)`` pairs, none empty.

    Raises:
        ValueError: ``parts`` is below 1.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, not {parts!r}")
    indexed = select_ranks(files, options.ranks)
    if options.max_events is not None or options.max_bytes is not None:
        parts = 1
    parts = min(parts, len(indexed))
    if parts <= 1:
        return [tuple(indexed)] if indexed else []

    sizes = {index: _size(path) for index, path in indexed}
    loads = [0] * parts
    groups: List[List[Tuple[int, str]]] = [[] for _ in range(parts)]
    for index, path in sorted(indexed, key=lambda item: (-sizes[item[0]], item[0])):
        target = min(range(parts), key=lambda number: (loads[number], len(groups[number]), number))
        groups[target].append((index, path))
        loads[target] += sizes[index]
    return [tuple(sorted(group)) for group in groups if group]


def partition_by_paths(
    files: Sequence[str],
    parts: int,
    plan: Plan,
    key: Callable[[str], Hashable] = lambda path: path,
) -> List[Tuple[Tuple[int, str], ...]]:
    """Split ``files`` into at most ``parts`` groups that share no path.

    ``--order resource`` keeps the order of calls on one path across
    trace files, which one process can do and several cannot. The files
    that use a common path (see :meth:`Plan.file_groups`, with ``key``
    mapping a traced path to the mapped one) stay together. These sets
    go, largest first by bytes on disk, to the group with the fewest
    bytes so far, as in :func:`partition_files`.

    Returns:
        Groups of ``(index, path)`` pairs, none empty, each in file order.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, not {parts!r}")
    index_of = {path: index for index, path in enumerate(files)}
    linked: List[List[Tuple[int, str]]] = []
    seen: Set[str] = set()
    for group in plan.file_groups(key):
        members = [(index_of[path], path) for path in group if path in index_of]
        if members:
            linked.append(members)
            seen.update(path for _, path in members)
    linked.extend([(index, path)] for index, path in enumerate(files) if path not in seen)

    parts = min(parts, len(linked))
    sizes = [sum(_size(path) for _, path in members) for members in linked]
    loads = [0] * parts
    groups: List[List[Tuple[int, str]]] = [[] for _ in range(parts)]
    order = sorted(range(len(linked)), key=lambda number: (-sizes[number], min(linked[number])))
    for number in order:
        target = min(range(parts), key=lambda part: (loads[part], len(groups[part]), part))
        groups[target].extend(linked[number])
        loads[target] += sizes[number]
    return sorted((tuple(sorted(group)) for group in groups if group), key=lambda g: g[0])


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def merge_plans(results: Sequence[ShardResult]) -> Plan:
    """Merge the plans of plan shards into the plan of the whole replay."""
    plan = Plan()
    for result in results:
        if result.plan is not None:
            plan.update(result.plan)
    return plan


def merge_results(
    files: Sequence[str],
    options: ReplayOptions,
    results: Iterable[ShardResult],
    *,
    wall_seconds: float = 0.0,
    preparation: Preparation = Preparation(),
    problems: Iterable[str] = (),
    failed_files: Iterable[Tuple[int, str]] = (),
    worker_failures: Iterable[str] = (),
    interrupted: bool = False,
    timeline: Optional[Timeline] = None,
) -> ReplaySummary:
    """Merge the results of dry-run or replay shards into one summary.

    The summary equals that of a single-process replay of ``files``
    (apart from times, latencies and the per-process rows), whatever the
    shards and the order of ``results``.

    Args:
        files: every trace file of the replay, in order.
        options: the options of the replay.
        results: the results of the shards that ran.
        wall_seconds: wall time of the replay round.
        preparation: what the preparation step created.
        problems: messages about inputs that were not read.
        failed_files: ``(index, path)`` of files whose shard failed; each
            is listed with a problem stating that it was not counted.
        worker_failures: one message per failed worker.
        interrupted: whether the replay was cancelled; a result that was
            interrupted also marks the summary.
        timeline: the traced span of the replayed events, for the
            expected time of a timed replay.
    """
    counters: Dict[int, FileCounters] = {}
    streams: List[StreamStats] = []
    series: Optional[ReplaySeries] = None
    origin: Optional[SeriesOrigin] = None
    result_list = list(results)
    for result in result_list:
        counters.update(result.files)
        streams.extend(result.streams)
        interrupted = interrupted or result.interrupted
        if result.series is not None:
            if series is None:
                series = ReplaySeries()
                origin = result.series_origin
            series.merge(result.series)
    for index, merged in merge_file_parts(files, result_list)[0].items():
        counters.setdefault(index, merged)
    for index, path in failed_files:
        counters.setdefault(
            index,
            FileCounters(path=path, problem=f"{path}: not counted because its worker process failed"),
        )
    root = None if options.dry_run or options.root is None else os.path.realpath(options.root)
    return build_summary(
        inputs=files,
        root=root,
        dry_run=options.dry_run,
        interrupted=interrupted,
        file_counters=[counters[index] for index in sorted(counters)] + problem_counters(problems),
        streams=streams,
        wall_seconds=wall_seconds,
        preparation=preparation,
        worker_failures=worker_failures,
        order_mode=options.order,
        copies=1 if options.dry_run else options.copies,
        verify=options.verify and not options.dry_run,
        series=series,
        series_origin=origin,
        timing=timing_setup(options, timeline),
    )


def merge_file_parts(
    files: Sequence[str], results: Iterable[ShardResult]
) -> Tuple[Dict[int, FileCounters], List[int]]:
    """Merge the parts of each split file found in ``results``.

    Returns:
        The merged counters by file index, for files whose parts all
        arrived, and the indexes of files with an unsafe boundary, which
        must be read again whole. A file with a part missing (its worker
        failed) is in neither.
    """
    pieces: Dict[int, List[Tuple[FilePart, FileCounters]]] = {}
    for result in results:
        for index, part, counter in result.parts:
            pieces.setdefault(index, []).append((part, counter))
    merged: Dict[int, FileCounters] = {}
    unsafe: List[int] = []
    for index in sorted(pieces):
        found = pieces[index]
        if len({part.number for part, _ in found}) != found[0][0].count:
            continue
        counter = merge_parts(files[index], found)
        if counter is None:
            unsafe.append(index)
        else:
            merged[index] = counter
    return merged, unsafe


def anchors_of(plan: Plan, files: Sequence[Tuple[int, str]]) -> Tuple[Tuple[str, int], ...]:
    """Return the anchors of ``files`` from the merged ``plan``."""
    return tuple((path, plan.first_ts[path]) for _, path in files if path in plan.first_ts)
