"""Options of a replay and the event filters built from them."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import AbstractSet, Optional, Union

from .._compat import allocate_lock
from ..trace import Event
from . import _calls as calls
from ._execute import DEFAULT_REORDER_WINDOW, TIMING_MODES

Timing = Union[str, float]


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
        sample: keep each event with this probability; opens and closes
            are always kept so descriptors stay matched.
        seed: seed of the sampling, so a sampled replay repeats exactly.
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

    def __post_init__(self) -> None:
        if not self.dry_run and not self.root:
            raise ValueError("root is required unless dry_run is set")
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
        if self.window < 1:
            raise ValueError(f"window must be >= 1, not {self.window!r}")

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


class EventLimit:
    """The ``max_events`` cap shared by the files of a replay.

    Threads: safe from any thread.
    """

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
        self._rng = random.Random(f"{options.seed}:{file_index}")
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
        if o.sample is not None and op not in calls.LIFETIME_OPS:
            return self._rng.random() < o.sample
        return True
