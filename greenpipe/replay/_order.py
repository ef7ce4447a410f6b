"""Ordering between streams: dependencies to wait for, violations to count.

Modes. ``stream`` replays each traced (process, thread) stream in its own
order and runs the streams independently. ``resource`` and ``global`` send
every event of the replay through one dispatcher, which merges the trace
files by start time (see ``_pipeline``) and gives each event a
:class:`Step`: the gates it waits for before it runs and the gates it
releases when it ends.

* ``global``: each event waits for the event dispatched before it, so
  the replay is one timeline in traced start order.
* ``resource``: :class:`ResourceOrder` gives an event the dependencies
  the trace implies on the paths it uses. A call waits for the last
  creation, rename, truncation or removal of its path dispatched before
  it, and such a call waits for every call on the path dispatched before
  it. A read waits for the writes to its path dispatched before it. The
  I/O of a traced process waits for that process's opens of the path,
  and its close waits for that process's I/O on the path.

Why no dependency can deadlock. An event only ever waits for events
dispatched before it, and each stream runs its events in dispatch order.
The earliest unfinished event therefore has nothing left to wait for, so
the replay always makes progress. A dependency on an event that is never
dispatched (filtered out, sampled out, past ``--max-events``) is never
created, and an event that is skipped or fails still releases its gates.

Memory. A gate lives only while an event refers to it. A sweep, run
each time the tables have doubled since the last one, drops every path
with nothing pending, so the tables grow with the events in flight and
not with the trace.

Violations. :class:`OrderTracker` runs in every mode. When a call ends it
compares the call with the recent calls on the same path and counts each
call whose replay order broke a trace dependency, by reason.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from .._compat import allocate_lock
from .._hub import ParkingLot, make_waiter
from ..trace import Event
from . import _calls as calls
from ._summary import MAX_ORDER_EXAMPLES, StreamStats

#: The ``--order`` modes.
ORDER_MODES = ("stream", "resource", "global")
#: The mode used when none is given.
DEFAULT_ORDER = "resource"

#: Reasons of order violations.
READ_BEFORE_WRITE = "read-before-write"
#: Kinds of calls that change what a path names. A call that ran before
#: an earlier such call ended breaks ``before-<kind>``. A call that ended
#: after a later such call had ended breaks ``after-<kind>``.
NAMESPACE_KINDS = ("create", "truncate", "rename", "remove")
#: Paths and descriptors in the dependency tables before the first sweep.
MIN_SWEEP = 4096
#: Recent calls kept per path to find the calls that ran out of order.
RECENT_CALLS = 16
#: Paths whose history the tracker keeps; the oldest are dropped past it.
MAX_TRACKED_PATHS = 65536


# -- gates and steps -----------------------------------------------------------


class Gate:
    """A count of unfinished calls that other calls wait to reach zero.

    Threads: changed only under the lock of its :class:`OrderGates`.
    """

    __slots__ = ("count", "lot", "closed")

    def __init__(self, count: int = 1) -> None:
        self.count = count
        # Made by the first call that waits, because most gates are never
        # waited for and each object kept in flight lengthens collections.
        self.lot: Optional[ParkingLot] = None
        # A closed gate takes no more calls (see ``_Pending``).
        self.closed = False

    def _describe_wait(self) -> str:
        return f"an ordering gate with {self.count} calls pending"


class Step:
    """One dispatched event with the gates it waits for and releases.

    The dispatcher sends this object in place of the event, so that each
    call in flight costs one container that the garbage collector tracks,
    not three.
    """

    __slots__ = ("event", "waits", "releases")

    def __init__(self, event: Event, waits: Sequence[Gate], releases: Sequence[Gate]) -> None:
        self.event = event
        self.waits = tuple(waits)
        self.releases = tuple(releases)


class OrderGates:
    """The lock that guards every gate of one replay, and waiting on gates.

    Threads: safe from any thread; streams on several workers release the
    gates that streams on other workers wait for.
    """

    def __init__(self) -> None:
        self.lock = allocate_lock()

    def wait(self, step: Step) -> bool:
        """Park until every gate that ``step`` waits for is at zero.

        Returns whether the caller had to wait.

        Blocking: parks the calling task (cooperatively) while a gate is
        above zero. Cancellation: a cancellation point whenever it parks;
        a cancelled wait leaves the gates unchanged.
        """
        waited = False
        for gate in step.waits:
            while True:
                with self.lock:
                    if gate.count <= 0:
                        break
                    waiter = make_waiter(gate)
                    if gate.lot is None:
                        gate.lot = ParkingLot()
                    gate.lot.add(waiter)
                waited = True
                waiter.park()
        return waited

    def release(self, step: Step) -> None:
        """Count the call of ``step`` as ended; wake who waited for it."""
        woken: Optional[List[Any]] = None
        with self.lock:
            for gate in step.releases:
                gate.count -= 1
                if gate.count <= 0 and gate.lot is not None:
                    claimed = gate.lot.take_all()
                    if claimed:
                        woken = claimed if woken is None else woken + claimed
        if woken is not None:
            for waiter in woken:
                waiter.wake(None)


class _Pending:
    """Unfinished calls of one kind on one path, by the stream that made them.

    A stream runs its calls in dispatch order, so once the newest call of
    a stream has ended, all its earlier calls have too. Each stream
    therefore needs one gate. :meth:`add` counts a call in the stream's
    open gate. :meth:`snapshot` returns the gates of the other streams
    that have calls pending and closes them, so calls added later never
    join a gate that someone already waits for. A stream never waits for
    its own calls: they ran before.
    """

    __slots__ = ("gates",)

    def __init__(self) -> None:
        self.gates: Dict[Any, Gate] = {}

    def add(self, owner: Any) -> Gate:
        gate = self.gates.get(owner)
        if gate is not None and not gate.closed and gate.count > 0:
            gate.count += 1
            return gate
        gate = self.gates[owner] = Gate()
        return gate

    def snapshot(self, owner: Any) -> Sequence[Gate]:
        gates = self.gates
        if not gates:
            return ()
        live: Optional[List[Gate]] = None
        done: Optional[List[Any]] = None
        for other, gate in gates.items():
            if gate.count <= 0:
                if done is None:
                    done = [other]
                else:
                    done.append(other)
            elif other != owner:
                gate.closed = True
                if live is None:
                    live = [gate]
                else:
                    live.append(gate)
        if done is not None:
            for other in done:
                del gates[other]
        return live if live is not None else ()

    def idle(self) -> bool:
        return all(gate.count <= 0 for gate in self.gates.values())


class _PathDeps:
    """The dependencies pending on one traced path."""

    __slots__ = ("barrier", "epoch", "writes", "opens", "io")

    def __init__(self) -> None:
        # The last namespace call dispatched on the path.
        self.barrier: Optional[Gate] = None
        # Calls dispatched since that call, itself included.
        self.epoch = Gate(0)
        self.writes = _Pending()
        # Per traced process (file position, pid).
        self.opens: Dict[Tuple[int, int], _Pending] = {}
        self.io: Dict[Tuple[int, int], _Pending] = {}

    def idle(self) -> bool:
        if self.barrier is not None and self.barrier.count > 0:
            return False
        if self.epoch.count > 0 or not self.writes.idle():
            return False
        return all(p.idle() for p in self.opens.values()) and all(
            p.idle() for p in self.io.values()
        )


# -- what a call does to a path --------------------------------------------------


#: Roles of a call on a path, for the dependencies and the violations.
OPEN, CLOSE, READ, WRITE, IO, PROBE = "open", "close", "read", "write", "io", "probe"


def namespace_kind(op: str, args: Dict[str, Any]) -> Optional[str]:
    """Return the :data:`NAMESPACE_KINDS` entry of a call, or ``None``."""
    if op in _DATA_OPS:
        return None
    if op in ("open", "openat", "creat", "fopen"):
        if op == "creat":
            return "create"
        flags = calls.open_flags(op, args)
        if flags & os.O_CREAT:
            return "create"
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
            return "truncate"
        return None
    if op == "mkdir":
        return "create"
    if op in ("truncate", "ftruncate"):
        return "truncate"
    if op == "rename":
        return "rename"
    if op in ("unlink", "remove", "rmdir"):
        return "remove"
    return None


#: Calls that never change a path's namespace, checked first because
#: they are most of a trace.
_DATA_OPS = frozenset(calls.READ_OPS) | frozenset(calls.WRITE_OPS) | {"close", "fclose", "lseek"}


#: Data calls whose dependencies :meth:`ResourceOrder._transfer_step` computes.
_TRANSFER_OPS = frozenset(calls.READ_OPS) | frozenset(calls.WRITE_OPS)


def call_role(op: str) -> str:
    """Return the role of a call that is not a namespace call."""
    role = _ROLES.get(op)
    if role is None:
        role = _ROLES[op] = _find_role(op)
    return role


#: Roles by call name, cached because the dispatcher and the order tracker
#: each look up the role of every call.
_ROLES: Dict[str, str] = {}


def _find_role(op: str) -> str:
    if op in ("open", "openat", "creat", "fopen"):
        return OPEN
    if op in ("close", "fclose"):
        return CLOSE
    if op in calls.READ_OPS:
        return READ
    if op in calls.WRITE_OPS:
        return WRITE
    if op in calls.PROBE_OPS:
        return PROBE
    return IO


def _joined_path(base: Optional[str], relative: Optional[str]) -> Optional[str]:
    if relative is None:
        return base
    if relative.startswith("/") or base is None:
        return relative
    return base.rstrip("/") + "/" + relative


# -- the dispatcher's dependencies ----------------------------------------------


class ResourceOrder:
    """Computes the :class:`Step` of each event for ``--order resource``.

    Called by the one dispatcher task, in dispatch order.

    Args:
        gates: the lock and the waiting of the replay.
        second_path: returns the resolved second path of an event
            (``rename`` target, ``openat`` relative path).
    """

    def __init__(self, gates: OrderGates, second_path: Callable[[Event], Optional[str]]) -> None:
        self._gates = gates
        self._second_path = second_path
        self._paths: Dict[str, _PathDeps] = {}
        # Traced descriptors to their path, per traced process, for older
        # traces whose data calls name only a descriptor.
        self._fds: Dict[Tuple[int, int, int], str] = {}
        # The last close of each traced descriptor, until it is reused.
        self._closes: Dict[Tuple[int, int, int], Gate] = {}
        # Table size that starts the next sweep; doubling it after each
        # sweep keeps the cost of sweeping constant per event.
        self._sweep_at = MIN_SWEEP
        # Whether reads and writes take the short path. Tests turn it off
        # to check that both paths give the same dependencies.
        self.fast = True

    def step(self, position: int, event: Event, op: str) -> Optional[Step]:
        """Return the step of ``event`` of file ``position``, or ``None``."""
        path = event.path
        if path is not None and op in _TRANSFER_OPS and self.fast:
            return self._transfer_step(position, event, call_role(op), path)
        args = event.args
        if op == "openat":
            path = _joined_path(path, self._second_path(event))
        elif path is None:
            fd = calls.arg_int(args, "fd")
            if fd is not None:
                path = self._fds.get((position, event.pid, fd))
        if path is None:
            return None

        kind = namespace_kind(op, args)
        role = call_role(op)
        waits: List[Gate] = []
        releases: List[Gate] = []
        if role == OPEN and op != "fopen":
            fd = calls.arg_int(args, "ret")
            if fd is not None and fd >= 0:
                self._fds[(position, event.pid, fd)] = path
                # The kernel hands out a descriptor number only after its
                # last close, so an open waits for the close that freed it.
                closed = self._closes.pop((position, event.pid, fd), None)
                if closed is not None and closed.count > 0:
                    waits.append(closed)
        elif role == CLOSE:
            fd = calls.arg_int(args, "fd")
            if fd is not None and op == "close":
                self._fds.pop((position, event.pid, fd), None)
                closing = self._closes[(position, event.pid, fd)] = Gate()
                releases.append(closing)

        stream = (position, event.pid, event.tid)
        with self._gates.lock:
            self._add_path(path, kind, role, stream, waits, releases)
            if op == "rename":
                target = self._second_path(event)
                if target is not None and target != path:
                    self._add_path(target, "rename", PROBE, stream, waits, releases)
        if len(self._paths) + len(self._closes) > self._sweep_at:
            self._sweep()
        return Step(event, waits, releases)

    def _transfer_step(self, position: int, event: Event, role: str, path: str) -> Step:
        """Return the step of a read or write on a known path.

        It computes the dependencies that :meth:`_add_path` gives a call
        with no namespace kind and the role ``role`` (READ or WRITE), but
        without the general case's lists, because these calls are most of
        a trace.
        """
        pid = event.pid
        tid = event.tid
        stream = (position, pid, tid)
        process = (position, pid)
        waits: Sequence[Gate] = ()
        with self._gates.lock:
            deps = self._paths.get(path)
            if deps is None:
                deps = self._paths[path] = _PathDeps()
            barrier = deps.barrier
            if barrier is not None and barrier.count > 0:
                waits = [barrier]
            epoch = deps.epoch
            epoch.count += 1
            writes = deps.writes
            write = None
            if role == READ:
                if writes.gates:
                    waits = [*waits, *writes.snapshot(stream)]
            else:
                write = writes.add(stream)
            if deps.opens:
                opens = deps.opens.get(process)
                if opens is not None:
                    waits = [*waits, *opens.snapshot(tid)]
            io = deps.io.get(process)
            if io is None:
                io = deps.io[process] = _Pending()
            pending = io.add(tid)
        if len(self._paths) + len(self._closes) > self._sweep_at:
            self._sweep()
        if write is None:
            return Step(event, waits, (epoch, pending))
        return Step(event, waits, (epoch, write, pending))

    def _add_path(
        self,
        path: str,
        kind: Optional[str],
        role: str,
        stream: Tuple[int, int, int],
        waits: List[Gate],
        releases: List[Gate],
    ) -> None:
        process = stream[:2]
        thread = stream[2]
        deps = self._paths.get(path)
        if deps is None:
            deps = self._paths[path] = _PathDeps()

        if kind is not None:
            # Every call dispatched on the path before this one ends first,
            # and every call after it waits for it.
            if deps.epoch.count > 0:
                waits.append(deps.epoch)
            barrier = Gate()
            deps.barrier = barrier
            deps.epoch = Gate()
            releases.append(barrier)
            releases.append(deps.epoch)
        else:
            barrier = deps.barrier
            if barrier is not None and barrier.count > 0:
                waits.append(barrier)
            deps.epoch.count += 1
            releases.append(deps.epoch)

        if role == READ:
            waits.extend(deps.writes.snapshot(stream))
        elif role == WRITE:
            releases.append(deps.writes.add(stream))
        if role in (READ, WRITE, IO, CLOSE):
            opens = deps.opens.get(process)
            if opens is not None:
                waits.extend(opens.snapshot(thread))
        if role == OPEN:
            pending = deps.opens.get(process)
            if pending is None:
                pending = deps.opens[process] = _Pending()
            releases.append(pending.add(thread))
        elif role == CLOSE:
            io = deps.io.get(process)
            if io is not None:
                waits.extend(io.snapshot(thread))
        elif role in (READ, WRITE, IO):
            pending = deps.io.get(process)
            if pending is None:
                pending = deps.io[process] = _Pending()
            releases.append(pending.add(thread))

    def _sweep(self) -> None:
        """Drop the paths and closes with nothing pending."""
        with self._gates.lock:
            idle = [path for path, deps in self._paths.items() if deps.idle()]
            for path in idle:
                del self._paths[path]
            done = [key for key, gate in self._closes.items() if gate.count <= 0]
            for key in done:
                del self._closes[key]
        self._sweep_at = max(MIN_SWEEP, 2 * (len(self._paths) + len(self._closes)))

    @property
    def tracked_paths(self) -> int:
        """Paths with dependency tables right now."""
        return len(self._paths)


class GlobalOrder:
    """Computes the :class:`Step` of each event for ``--order global``."""

    def __init__(self) -> None:
        self._previous: Optional[Gate] = None

    def step(self, position: int, event: Event, op: str) -> Step:
        previous = self._previous
        gate = self._previous = Gate()
        return Step(event, (previous,) if previous is not None else (), (gate,))


# -- violations -------------------------------------------------------------------


class _Recent:
    """One ended call in the history of a path."""

    __slots__ = ("ts", "role", "name", "stats", "short", "missing", "flagged")

    def __init__(
        self, ts: int, role: str, name: str, stats: StreamStats, short: bool, missing: bool
    ) -> None:
        self.ts = ts
        self.role = role
        self.name = name
        self.stats = stats
        self.short = short
        self.missing = missing
        self.flagged = False


class _History:
    __slots__ = ("recent", "max_ts", "max_read_ts", "namespace")

    def __init__(self) -> None:
        self.recent: Deque[_Recent] = collections.deque(maxlen=RECENT_CALLS)
        self.max_ts = -1
        self.max_read_ts = -1
        # Namespace kind to the latest traced start of such a call that ended.
        self.namespace: Dict[str, int] = {}


class OrderTracker:
    """Finds the calls whose replay order broke a trace dependency.

    Each ended call is compared with the calls on the same path that
    ended before it:

    * a write that ended (in the trace) before a read started must end
      (in the replay) before that read runs: ``read-before-write``;
    * a creation, truncation, rename or removal keeps its trace order
      with every call on the path: a later call that ended first is a
      ``before-<kind>`` violation, an earlier call that ends after it is
      an ``after-<kind>`` violation.

    Each call is counted at most once, in the counters of its own stream,
    together with whether it came up short or found its file missing.

    Threads: safe from any thread.

    Args:
        display: maps a traced path to the mapped path shown in examples.
    """

    def __init__(self, display: Callable[[str], str]) -> None:
        self._display = display
        self._lock = allocate_lock()
        self._paths: Dict[str, _History] = {}

    def record(
        self,
        stats: StreamStats,
        event: Event,
        op: str,
        path: str,
        *,
        kind: Optional[str],
        short: bool = False,
        missing: bool = False,
    ) -> None:
        """Record that ``event`` ended on ``path`` and count what it broke.

        ``kind`` is its :func:`namespace_kind` on this path, if any.
        """
        ts = event.ts
        role = call_role(op) if kind is None else kind
        entry = _Recent(ts, role, event.name, stats, short, missing)
        with self._lock:
            history = self._paths.get(path)
            if history is None:
                if len(self._paths) >= MAX_TRACKED_PATHS:
                    # NOTE: dropping a path's history may miss violations on it.
                    del self._paths[next(iter(self._paths))]
                history = self._paths[path] = _History()

            if history.namespace:
                for other, other_ts in history.namespace.items():
                    if other_ts > ts:
                        self._flag(entry, f"after-{other}", path, event)
                        break
            if role == WRITE:
                end = ts + event.dur
                if history.max_read_ts >= end:
                    for recent in history.recent:
                        if recent.role == READ and recent.ts >= end and not recent.flagged:
                            self._flag(recent, READ_BEFORE_WRITE, path, None)
            elif kind is not None:
                if history.max_ts > ts:
                    for recent in history.recent:
                        if recent.ts > ts and not recent.flagged:
                            self._flag(recent, f"before-{kind}", path, None)
                if history.namespace.get(kind, -1) < ts:
                    history.namespace[kind] = ts

            history.recent.append(entry)
            if ts > history.max_ts:
                history.max_ts = ts
            if role == READ and ts > history.max_read_ts:
                history.max_read_ts = ts

    def _flag(self, entry: _Recent, reason: str, path: str, event: Optional[Event]) -> None:
        entry.flagged = True
        stats = entry.stats
        stats.order_violations[reason] += 1
        if entry.short:
            stats.order_short_reads += 1
        if entry.missing:
            stats.order_missing += 1
        if len(stats.order_examples) < MAX_ORDER_EXAMPLES:
            stats.order_examples.append(
                {
                    "file": stats.file,
                    "path": self._display(path),
                    "call": entry.name,
                    "ts": entry.ts,
                    "reason": reason,
                }
            )
