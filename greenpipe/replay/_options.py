"""Options of a replay and the event filters built from them."""

from __future__ import annotations

import dataclasses
import math
import os
import random
from typing import AbstractSet, Dict, List, Optional, Sequence, Tuple, Union

from .._compat import allocate_lock
from ..trace import Event
from . import _calls as calls
from ._data import DataSource, SizeScaler, parse_data
from ._execute import DEFAULT_REORDER_WINDOW, TIMING_MODES
from ._order import DEFAULT_ORDER, ORDER_MODES

Timing = Union[str, float]

#: Units that ``sample_by`` can keep or drop whole.
SAMPLE_UNITS = ("event", "file", "stream", "process")


@dataclasses.dataclass(frozen=True)
class ReplayOptions:
    """How to replay: where, how fast, and which events.

    Attributes:
        root: folder that every traced path is mapped under; required
            unless ``dry_run``.
        dry_run: parse and decode only, touch no file.
        threads: worker threads of the executor; ``None`` for the number
            of CPUs.
        timing: ``"asap"`` runs each stream's calls back to back;
            ``"original"`` issues every call at its traced start time,
            measured from the earliest start of the replay and divided by
            ``speed`` (open loop); ``"think"`` issues each call when the
            previous call of its stream has ended plus the traced think
            time between them, divided by ``speed`` (closed loop). A
            positive number is ``"original"`` at that speed (2.0 replays
            twice as fast as traced) and excludes ``speed``.
        speed: the factor dividing traced times for ``"original"`` and
            ``"think"``; ``None`` for 1.0. Not allowed with ``"asap"``.
        pids, tids, categories, functions: keep only events whose value
            is in the set (an empty set keeps all).
        exclude_pids, exclude_tids, exclude_categories,
        exclude_functions: drop events whose value is in the set.
        start, end: keep events with ``start <= ts < end``, in trace
            microseconds as written in the trace.
        min_size, max_size: keep data calls moving at least / at most
            that many bytes; calls without a size are kept.
        sample: keep each unit (see ``sample_by``) with this probability.
        sample_by: the unit that ``sample`` keeps or drops whole:
            ``"event"`` (each event alone; opens and closes are always
            kept so descriptors stay matched), ``"file"`` (every call on
            one traced path), ``"stream"`` (one thread of one process of
            one trace file) or ``"process"``.
        seed: seed of the sampling, so a sampled replay repeats exactly.
        ranks: keep only the trace files at these positions among the
            inputs (see :func:`select_ranks`); empty keeps all.
        data: bytes that writes write: ``"zero"``, ``"pattern"`` or
            ``"random:SEED"``.
        verify: write pattern data that names each traced write, and
            check every read of bytes that the replay wrote earlier.
        size_scale: factor applied to the sizes and offsets of data
            calls, rounded to a multiple of ``align``.
        align: bytes that scaled sizes and offsets are a multiple of.
        copies: independent copies of the replay run at once, each in
            its own sub-root ``copy-<n>`` of ``root``.
        max_events: stop reading after this many POSIX and STDIO events
            passed the filters.
        max_bytes: stop moving data once the replayed reads and writes
            reach this many bytes; later data calls are skipped.
        force: replay even when the estimated bytes to write exceed the
            free space under the root.
        window: events each stream holds back to run them in start-time
            order.
        memory_budget: bytes the trace reader may hold per file, 0 for
            its default.
        order: how calls of different streams are ordered: ``"stream"``
            runs each traced (process, thread) stream in its own order and
            the streams independently; ``"resource"`` also keeps the
            trace's order between calls on the same path, across threads,
            processes and trace files; ``"global"`` runs every call in
            traced start order, one after the other.
        series: keep the time series and distributions of the replay
            for a report (``ReplaySummary.series``); a dry run has none.
        emit_trace: file that the replay writes its own trace to, in the
            newest DFTracer format (gzip when the name ends in ``.gz``);
            ``None`` writes none. Not allowed with ``dry_run`` nor
            inside ``root``.
    """

    root: Optional[str] = None
    dry_run: bool = False
    threads: Optional[int] = None
    timing: Timing = "asap"
    speed: Optional[float] = None
    pids: AbstractSet[int] = frozenset()
    tids: AbstractSet[int] = frozenset()
    categories: AbstractSet[str] = frozenset()
    functions: AbstractSet[str] = frozenset()
    exclude_pids: AbstractSet[int] = frozenset()
    exclude_tids: AbstractSet[int] = frozenset()
    exclude_categories: AbstractSet[str] = frozenset()
    exclude_functions: AbstractSet[str] = frozenset()
    start: Optional[int] = None
    end: Optional[int] = None
    min_size: Optional[int] = None
    max_size: Optional[int] = None
    sample: Optional[float] = None
    seed: int = 0
    max_events: Optional[int] = None
    max_bytes: Optional[int] = None
    force: bool = False
    window: int = DEFAULT_REORDER_WINDOW
    memory_budget: int = 0
    order: str = DEFAULT_ORDER
    sample_by: str = "event"
    ranks: AbstractSet[int] = frozenset()
    data: str = "zero"
    verify: bool = False
    size_scale: float = 1.0
    align: int = 1
    copies: int = 1
    series: bool = False
    emit_trace: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.dry_run and not self.root:
            raise ValueError("root is required unless dry_run is set")
        if self.emit_trace is not None and self.dry_run:
            raise ValueError("emit_trace needs a replay; a dry run executes no call")
        if self.emit_trace == "":
            raise ValueError("emit_trace must name a file, not ''")
        if self.emit_trace is not None and self.root and is_inside(self.emit_trace, self.root):
            raise ValueError(
                f"emit_trace must be outside root, where the replay may overwrite it, "
                f"not {self.emit_trace!r}"
            )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, not {self.threads!r}")
        if isinstance(self.timing, str):
            if self.timing not in TIMING_MODES:
                raise ValueError(
                    "timing must be 'asap', 'original', 'think' or a positive number, "
                    f"not {self.timing!r}"
                )
        elif not self.timing > 0 or not math.isfinite(self.timing):
            raise ValueError(f"timing factor must be a finite number > 0, not {self.timing!r}")
        if self.speed is not None:
            if not isinstance(self.timing, str):
                raise ValueError(
                    f"speed ({self.speed!r}) and a numeric timing ({self.timing!r}) both set "
                    "the speed; give timing 'original' with speed instead"
                )
            if self.timing == "asap":
                raise ValueError(
                    f"speed ({self.speed!r}) applies to timing 'original' or 'think', not 'asap'"
                )
            if not self.speed > 0 or not math.isfinite(self.speed):
                raise ValueError(f"speed must be a finite number > 0, not {self.speed!r}")
        if self.sample is not None and not 0.0 <= self.sample <= 1.0:
            raise ValueError(f"sample must be between 0 and 1, not {self.sample!r}")
        for name in ("max_events", "max_bytes", "min_size", "max_size"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, not {value!r}")
        if self.order not in ORDER_MODES:
            raise ValueError(
                f"order must be 'stream', 'resource' or 'global', not {self.order!r}"
            )
        if self.window < 1:
            raise ValueError(f"window must be >= 1, not {self.window!r}")
        if self.sample_by not in SAMPLE_UNITS:
            raise ValueError(
                f"sample_by must be one of {', '.join(SAMPLE_UNITS)}, not {self.sample_by!r}"
            )
        if self.sample_by != "event" and self.sample is None:
            raise ValueError(f"sample_by={self.sample_by!r} needs a sample rate; set sample too")
        for rank in self.ranks:
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
                raise ValueError(f"ranks must be integers >= 0, not {rank!r}")
        kind, _ = parse_data(self.data)
        if self.verify and kind != "pattern" and self.data != "zero":
            raise ValueError(
                f"verify writes pattern data, so data must be 'pattern' or left out, not {self.data!r}"
            )
        if not (math.isfinite(self.size_scale) and self.size_scale > 0):
            raise ValueError(f"size_scale must be a positive number, not {self.size_scale!r}")
        if isinstance(self.align, bool) or not isinstance(self.align, int) or self.align < 1:
            raise ValueError(f"align must be an integer >= 1, not {self.align!r}")
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or self.copies < 1:
            raise ValueError(f"copies must be an integer >= 1, not {self.copies!r}")

    def timing_mode(self) -> str:
        """Return ``"asap"``, ``"original"`` or ``"think"``; a factor is ``"original"``."""
        return self.timing if isinstance(self.timing, str) else "original"

    def speed_factor(self) -> Optional[float]:
        """Return the factor dividing traced times, ``None`` for ``asap``."""
        if self.timing == "asap":
            return None
        if not isinstance(self.timing, str):
            return float(self.timing)
        return 1.0 if self.speed is None else float(self.speed)

    def data_source(self) -> DataSource:
        """Return the source of the bytes that writes write."""
        kind, seed = parse_data(self.data)
        if self.verify:
            kind = "pattern"
        return DataSource(kind, seed)

    def scaler(self) -> Optional[SizeScaler]:
        """Return the size scaler, ``None`` when sizes stay as traced."""
        if self.size_scale == 1.0 and self.align == 1:
            return None
        return SizeScaler(self.size_scale, self.align)


def is_inside(path: str, folder: str) -> bool:
    """Return whether ``path`` is ``folder`` or below it, after resolving symlinks."""
    path = os.path.realpath(path)
    folder = os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


class EventLimit:
    """The ``max_events`` cap shared by the files of a replay.

    Threads: safe from any thread.
    """

    # NOTE: files decode concurrently, so with several files the events the
    # cap admits depend on scheduling and can differ between runs.

    def __init__(self, limit: Optional[int]) -> None:
        self.limit = limit
        self._taken = 0
        self._lock = allocate_lock()

    def take(self) -> bool:
        """Count one admitted event; return ``False`` once the cap is reached."""
        if self.limit is None:
            return True
        with self._lock:
            if self._taken >= self.limit:
                return False
            self._taken += 1
            return True


class EventFilter:
    """The filters and the sampling of :class:`ReplayOptions` for one file.

    Each trace file gets its own filter, whose random generator is seeded
    from the options' seed and the file's position, so the same events
    are kept on every pass whatever order the files are read in.
    """

    def __init__(self, options: ReplayOptions, file_index: int) -> None:
        self.options = options
        self.file_index = file_index
        self._rng = random.Random(f"{options.seed}:{file_index}")
        # Sampling by unit: the decision of each unit seen, and the traced
        # path of each open descriptor, for calls that name no path.
        self._units: Dict[object, bool] = {}
        self._paths: Dict[Tuple[int, int], str] = {}
        #: No filter and no sampling: every event passes.
        self.plain = not any(
            (
                options.pids,
                options.tids,
                options.categories,
                options.functions,
                options.exclude_pids,
                options.exclude_tids,
                options.exclude_categories,
                options.exclude_functions,
                options.start is not None,
                options.end is not None,
                options.min_size is not None,
                options.max_size is not None,
                options.sample is not None,
            )
        )


    def accept(self, event: Event) -> bool:
        """Return whether ``event`` passes the filters and the sampling."""
        if self.plain:
            return True
        o = self.options
        if o.pids and event.pid not in o.pids or event.pid in o.exclude_pids:
            return False
        if o.tids and event.tid not in o.tids or event.tid in o.exclude_tids:
            return False
        if o.categories and event.category not in o.categories:
            return False
        if event.category in o.exclude_categories:
            return False
        if o.functions and event.name not in o.functions:
            return False
        if event.name in o.exclude_functions:
            return False
        if o.start is not None and event.ts < o.start:
            return False
        if o.end is not None and event.ts >= o.end:
            return False

        op = calls.classify(event.category, event.name)
        if o.min_size is not None or o.max_size is not None:
            if op in calls.READ_OPS or op in calls.WRITE_OPS:
                size = calls.transfer_size(op, event.args)
                if size is not None:
                    if o.min_size is not None and size < o.min_size:
                        return False
                    if o.max_size is not None and size > o.max_size:
                        return False
        if o.sample is None:
            return True
        if o.sample_by != "event":
            return self._keep_unit(event, op)
        if op not in calls.LIFETIME_OPS:
            return self._rng.random() < o.sample
        return True

    def _keep_unit(self, event: Event, op: Optional[str]) -> bool:
        """Return whether the sampling keeps the unit of ``event``.

        The decision is a hash of the seed and the unit, not a draw from a
        generator, so a unit is kept or dropped whole whatever order the
        events, files and processes come in.
        """
        unit_kind = self.options.sample_by
        unit: object
        if unit_kind == "process":
            unit = (self.file_index, event.pid)
        elif unit_kind == "stream":
            unit = (self.file_index, event.pid, event.tid)
        else:
            path = event.path
            fd = calls.arg_int(event.args, "fd") if op is not None else None
            if path is None and fd is not None:
                path = self._paths.get((event.pid, fd))
            if op in ("open", "openat", "creat") and path is not None:
                opened = calls.arg_int(event.args, "ret")
                if opened is not None and opened >= 0:
                    self._paths[(event.pid, opened)] = path
            elif op == "close" and fd is not None:
                self._paths.pop((event.pid, fd), None)
            if path is None:
                return True  # no file to decide on; such a call is never replayed
            unit = path
        keep = self._units.get(unit)
        if keep is None:
            # Imported here: loading OpenSSL costs every start of the
            # command about 3 ms, and most runs do not sample.
            import hashlib

            digest = hashlib.blake2b(
                repr((self.options.seed, unit)).encode(), digest_size=8
            ).digest()
            keep = int.from_bytes(digest, "big") < self.options.sample * 2.0**64
            self._units[unit] = keep
        return keep


def select_ranks(files: Sequence[str], ranks: AbstractSet[int]) -> List[Tuple[int, str]]:
    """Return ``(index, path)`` of the trace files whose index is in ``ranks``.

    A rank is the position of a trace file among the inputs, as
    :func:`~greenpipe.replay.find_trace_files` lists them: inputs in the
    order given, the files of a folder sorted by path. An empty set
    selects every file.

    Raises:
        ValueError: a rank is not the position of any file.
    """
    indexed = list(enumerate(files))
    if not ranks:
        return indexed
    missing = sorted(rank for rank in ranks if rank >= len(files))
    if missing:
        raise ValueError(
            f"rank {missing[0]} does not exist: the inputs hold {len(files)} trace "
            f"files, ranks 0 to {len(files) - 1}"
        )
    return [(index, path) for index, path in indexed if index in ranks]
