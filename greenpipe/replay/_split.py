"""Parts of large trace files for a multi-process dry run.

When the trace files are fewer than the processes, or too unequal to
share out evenly, :func:`partition_work` cuts the largest ones into
parts: byte ranges that start on a line boundary and, in a gzip file, at
a gzip member (see ``greenpipe.trace._split``). Each part is decoded on
its own, and :func:`merge_parts` adds up the counters of the parts of a
file into the counters that one pass over the whole file gives.

Only a dry run is split. The plan pass follows descriptor positions
through each file, so a read in one part depends on every read, write
and seek before it on the same descriptor, which may sit in an earlier
part. The replay pass runs each (pid, tid) stream in trace order against
descriptor state that earlier events build. Neither can start in the
middle of a file without running everything before it, so a real replay
reads every file whole. Sampling and the ``max_events``/``max_bytes``
caps count across events in file order, so they also prevent splitting.

What a part needs from the parts before it:

* the hash tables: the part's worker rebuilds them with
  ``scan_metadata`` before decoding (an inflate and a substring search of
  the bytes before the part);
* the gzip member numbers for damage messages: counted by the same scan;
* the start of a line cut by the part's start, as where one trace was
  appended to another whose last line ``]`` has no newline. The same
  scan returns it, the part puts it before its first line, and the part
  before leaves it out;
* the line numbers: counted from the part's start, and shifted by the
  lines of the parts before it when the parts are merged;
* whether the file decoded to nothing: decided at the merge.

A boundary may still turn out wrong: a gzip header inside deflate data
that inflates by chance, an event split by a raw newline across two
members, or a line too long to keep across the boundary. The part before
such a boundary then does not end cleanly (see
``FileCounters.clean_end``), and :func:`merge_parts` returns ``None`` so
that the caller reads the file again as a whole.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..trace._split import file_size, find_line_start, find_member_start, is_gzip
from ..trace._stats import MAX_BAD_LINES_KEPT
from ._options import ReplayOptions, select_ranks
from ._pipeline import PartBounds
from ._summary import FileCounters

logger = logging.getLogger(__name__)

#: Files smaller than this on disk are never split: the parts would cost
#: more in worker time than they save.
MIN_SPLIT_BYTES = 4 * 1024 * 1024
#: Cost of scanning a byte for metadata relative to decoding it: a part
#: that starts at byte ``s`` first inflates and searches ``s`` bytes.
#: Measured on 20 copies of the newest-generation test trace in one gzip
#: file (CPython 3.11, isal, 2-core Linux machine): the scan of the first
#: 16.6 MB took 0.37 s, the dry run of all 27.6 MB 3.5 s in one process.
SCAN_COST = 0.18
#: A partition whose heaviest group is within this factor of an even
#: share is kept as it is.
BALANCED = 1.2


@dataclasses.dataclass(frozen=True)
class FilePart:
    """A byte range of one trace file, decoded as a shard of its own.

    Attributes:
        number: position of the part in the file, from 0.
        count: number of parts of the file.
        start: first byte of the part on disk.
        stop: byte after its last one, ``None`` for the end of the file.
    """

    number: int
    count: int
    start: int
    stop: Optional[int]

    def bounds(self) -> PartBounds:
        """Return the byte range for ``Replayer.dry_pass``."""
        return PartBounds(self.start, self.stop)


#: One unit of a partition: ``(file index, path, part or None)``.
WorkItem = Tuple[int, str, Optional[FilePart]]


def splitting_allowed(options: ReplayOptions) -> bool:
    """Return whether ``options`` let a file be split into parts."""
    return (
        options.dry_run
        and options.sample is None
        and options.max_events is None
        and options.max_bytes is None
    )


def partition_work(
    files: Sequence[str],
    processes: int,
    options: ReplayOptions,
    *,
    min_split_bytes: int = MIN_SPLIT_BYTES,
) -> List[List[WorkItem]]:
    """Share ``files`` out into at most ``processes`` groups, splitting where it pays.

    Files go whole to the groups as in ``partition_files``. When the
    heaviest group then carries more than :data:`BALANCED` times an even
    share, the largest file of at least ``min_split_bytes`` is cut into
    parts, and so on while that makes the partition better. Parts of one
    file never share a group. The result is the same on every run. With
    ``max_events`` or ``max_bytes`` set, every file goes whole in one
    group, in file order.

    Returns:
        Groups of work items, none empty.

    Raises:
        ValueError: ``processes`` is below 1.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, not {processes!r}")
    chosen = [index for index, _ in select_ranks(files, options.ranks)]
    sizes = [file_size(path) if index in chosen else 0 for index, path in enumerate(files)]
    whole: List[Tuple[float, WorkItem]] = [
        (float(sizes[index]), (index, files[index], None)) for index in chosen
    ]
    if options.max_events is not None or options.max_bytes is not None:
        # The caps count across all the files, so one process reads them.
        return [[item for _, item in whole]] if whole else []
    if not splitting_allowed(options) or processes == 1:
        return _assign(whole, min(processes, len(chosen)))

    groups = _assign(whole, min(processes, len(chosen)))
    even = sum(sizes) / processes
    split: Dict[int, List[Tuple[float, WorkItem]]] = {}
    for index in sorted(chosen, key=lambda i: (-sizes[i], i)):
        if _heaviest(groups, split, sizes) <= BALANCED * even or sizes[index] < min_split_bytes:
            break
        parts = _cut(files[index], index, sizes[index], min(processes, max(2, round(sizes[index] / even))))
        if len(parts) < 2:
            continue
        trial = dict(split)
        trial[index] = parts
        trial_groups = _assign(_items(files, sizes, trial, chosen), processes)
        if _heaviest(trial_groups, trial, sizes) >= _heaviest(groups, split, sizes):
            break
        split, groups = trial, trial_groups
    return groups


def _items(
    files: Sequence[str],
    sizes: Sequence[int],
    split: Dict[int, List[Tuple[float, WorkItem]]],
    chosen: Sequence[int],
) -> List[Tuple[float, WorkItem]]:
    items: List[Tuple[float, WorkItem]] = []
    for index in chosen:
        path = files[index]
        if index in split:
            items.extend(split[index])
        else:
            items.append((float(sizes[index]), (index, path, None)))
    return items


def _heaviest(
    groups: List[List[WorkItem]], split: Dict[int, List[Tuple[float, WorkItem]]], sizes: Sequence[int]
) -> float:
    weights: Dict[Tuple[int, int], float] = {}
    for parts in split.values():
        for weight, (index, _, part) in parts:
            assert part is not None
            weights[(index, part.number)] = weight
    heaviest = 0.0
    for group in groups:
        load = 0.0
        for index, _, part in group:
            load += sizes[index] if part is None else weights[(index, part.number)]
        heaviest = max(heaviest, load)
    return heaviest


def _assign(items: Sequence[Tuple[float, WorkItem]], parts: int) -> List[List[WorkItem]]:
    """Give each item, heaviest first, to the lightest group that lacks its file."""
    if parts < 1:
        return []
    loads = [0.0] * parts
    groups: List[List[WorkItem]] = [[] for _ in range(parts)]
    ordered = sorted(items, key=lambda item: (-item[0], item[1][0], _number(item[1])))
    for weight, item in ordered:
        candidates = [
            number for number in range(parts)
            if not any(other[0] == item[0] for other in groups[number])
        ] or list(range(parts))
        target = min(candidates, key=lambda number: (loads[number], len(groups[number]), number))
        groups[target].append(item)
        loads[target] += weight
    return [sorted(group, key=lambda item: (item[0], _number(item))) for group in groups if group]


def _number(item: WorkItem) -> int:
    return -1 if item[2] is None else item[2].number


def _cut(path: str, index: int, size: int, count: int) -> List[Tuple[float, WorkItem]]:
    """Cut ``path`` into about ``count`` parts of equal work; return weighted items.

    Part ``j`` first scans the bytes before it, so later parts get fewer
    bytes of their own: sizes fall by the factor ``1 - SCAN_COST``.
    """
    try:
        compressed = is_gzip(path)
    except OSError:
        return []
    ratio = 1.0 - SCAN_COST
    first = size * (1.0 - ratio) / (1.0 - ratio**count) if ratio < 1.0 else size / count
    find = find_member_start if compressed else find_line_start
    starts = [0]
    target = 0.0
    for number in range(1, count):
        target += first * ratio ** (number - 1)
        try:
            found = find(path, max(int(target), starts[-1] + 1))
            if found is None:
                # No boundary after the target: an earlier one still
                # shares out some of the work.
                found = find(path, starts[-1] + 1)
        except OSError:
            found = None
        if found is None or found >= size:
            break
        starts.append(found)
    if len(starts) < 2:
        logger.debug("%s: no part boundary found, so the file stays whole", path)
        return []
    stops: List[Optional[int]] = list(starts[1:]) + [None]
    items: List[Tuple[float, WorkItem]] = []
    for number, (start, stop) in enumerate(zip(starts, stops)):
        end = size if stop is None else stop
        weight = (end - start) + SCAN_COST * start
        items.append((weight, (index, path, FilePart(number, len(starts), start, stop))))
    return items


def merge_parts(
    path: str, parts: Sequence[Tuple[FilePart, FileCounters]]
) -> Optional[FileCounters]:
    """Add up the counters of the parts of one file.

    The result equals the counters of one pass over the whole file. Parts
    after a damaged one are left out, because such a pass stops at the
    damage.

    Returns:
        The counters, or ``None`` when a part before the last did not end
        cleanly, so its boundary was unsafe and the file must be read
        whole.

    Raises:
        ValueError: ``parts`` does not hold each part of the file once.
    """
    ordered = sorted(parts, key=lambda item: item[0].number)
    count = ordered[0][0].count if ordered else 0
    if [part.number for part, _ in ordered] != list(range(count)):
        numbers = [part.number for part, _ in ordered]
        raise ValueError(f"{path}: expected parts 0 to {count - 1} once each, not {numbers}")

    merged = FileCounters(path=path)
    offset = 0
    decoded_bad: List[Tuple[int, str]] = []
    read_bad: List[Tuple[int, str]] = []
    for part, counters in ordered:
        last = part.number == count - 1
        if not last and not counters.damaged and not counters.clean_end:
            return None
        for name in _SUMMED:
            setattr(merged, name, getattr(merged, name) + getattr(counters, name))
        merged.first_ts = _pick(min, merged.first_ts, counters.first_ts)
        merged.last_end = _pick(max, merged.last_end, counters.last_end)
        decoded_bad.extend((line + offset, reason) for line, reason in counters.first_bad_lines)
        read_bad.extend((line + offset, reason) for line, reason in counters.first_read_bad_lines)
        if merged.problem is None:
            merged.problem = counters.problem
        merged.clean_end = counters.clean_end
        offset += counters.lines
        if counters.damaged:
            merged.damaged = True
            break

    merged.first_bad_lines = tuple(decoded_bad[:MAX_BAD_LINES_KEPT])
    merged.first_read_bad_lines = tuple(read_bad[:MAX_BAD_LINES_KEPT])
    if merged.bad_lines and not merged.events and merged.problem is None:
        # The message of a pass over the whole file (see ``_decode``).
        merged.problem = (
            f"{path}: no events decoded, {merged.bad_lines} unusable lines; "
            "is it a DFTracer trace?"
        )
    return merged


_SUMMED = (
    "events",
    "filtered",
    "application",
    "bad_lines",
    "read_bad_lines",
    "lines",
    "capped",
    "sent",
    "metadata",
    "ignored_lines",
    "joined_lines",
)


def _pick(
    choose: Callable[[int, int], int], current: Optional[int], value: Optional[int]
) -> Optional[int]:
    if value is None:
        return current
    if current is None:
        return value
    return choose(current, value)
