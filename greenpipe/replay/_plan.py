"""The preparation step: what must exist under the root before replaying.

A replay starts from an empty root, but a trace usually reads files that
existed before it was recorded (a data set, a config file, ``/proc``
entries). A first pass over the decoded events, the plan, follows each
file the way the replay will: it tracks positions per descriptor, the
extent written so far and the extent each read needs. Afterwards,
:meth:`Plan.prepare` creates

* each file that the trace uses before creating it, or reads beyond what
  it wrote, as a sparse file long enough for every traced read, and
* each folder that the trace uses (``opendir``, ``rmdir``, ``stat`` of a
  path that other paths live under) before creating it.

The plan follows events in file order, which within one traced thread is
the order of the calls; a descriptor shared between threads of a process
may get slightly different positions than the concurrent replay gives
it, so a read can still come up short (counted as a short read).
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Set, Tuple

from .._compat import allocate_lock
from ..trace import Event
from . import _calls as calls
from ._execute import Timeline, second_path
from ._sandbox import Components, PathSandbox, SandboxError
from ._summary import Preparation

logger = logging.getLogger(__name__)

#: Prepared paths listed by name in the summary.
MAX_EXAMPLES = 10


class PathPlan:
    """The uses of one path in a trace that the preparation step needs to know."""

    __slots__ = (
        "first_need",
        "first_create",
        "probed",
        "directory",
        "read_need",
        "written",
        "modified",
    )

    def __init__(self) -> None:
        self.probed: Optional[int] = None
        self.first_need: Optional[int] = None
        self.first_create: Optional[int] = None
        self.directory = False
        self.read_need = 0
        self.written = 0
        #: Whether the trace writes, creates, truncates, renames or removes
        #: the path. Files that only read or probe a path are not ordered
        #: against each other on it.
        self.modified = False

    def need(self, ts: int) -> None:
        if self.first_need is None or ts < self.first_need:
            self.first_need = ts

    def probe(self, ts: int) -> None:
        if self.probed is None or ts < self.probed:
            self.probed = ts

    def create(self, ts: int) -> None:
        self.modified = True
        if self.first_create is None or ts < self.first_create:
            self.first_create = ts

    def merge(self, other: PathPlan) -> None:
        if other.first_need is not None:
            self.need(other.first_need)
        if other.first_create is not None:
            self.create(other.first_create)
        if other.probed is not None:
            self.probe(other.probed)
        self.directory = self.directory or other.directory
        self.modified = self.modified or other.modified
        self.read_need = max(self.read_need, other.read_need)
        self.written = max(self.written, other.written)

    def used_before_created(self) -> bool:
        """Return whether the trace needs the path to exist before creating it.

        A ``stat`` or ``access`` before the creation is a probe that found
        nothing, so only a path probed and never created counts.
        """
        if self.first_need is not None and (
            self.first_create is None or self.first_need < self.first_create
        ):
            return True
        return self.probed is not None and self.first_create is None


class _SimHandle:
    __slots__ = ("path", "position")

    def __init__(self, path: str) -> None:
        self.path = path
        self.position = 0


class FilePlan:
    """The plan of one trace file, filled in file order by one task."""

    def __init__(self) -> None:
        self.paths: Dict[str, PathPlan] = {}
        self.write_bytes = 0
        self.first_ts: Optional[int] = None
        self.last_ts: Optional[int] = None
        self.last_end: Optional[int] = None
        self.events = 0
        self._by_fd: Dict[Tuple[int, int], _SimHandle] = {}
        self._by_path: Dict[Tuple[int, bool, str], List[_SimHandle]] = {}

    def _path(self, path: str) -> PathPlan:
        found = self.paths.get(path)
        if found is None:
            found = self.paths[path] = PathPlan()
        return found

    def _find(self, event: Event, stdio: bool) -> Optional[_SimHandle]:
        fd = calls.arg_int(event.args, "fd")
        if fd is not None and not stdio:
            handle = self._by_fd.get((event.pid, fd))
            if handle is not None and (event.path is None or handle.path == event.path):
                return handle
        if event.path is None:
            return None
        found = self._by_path.get((event.pid, stdio, event.path))
        if found:
            return found[-1]
        handle = _SimHandle(event.path)
        self._path(event.path).need(event.ts)
        self._by_path.setdefault((event.pid, stdio, event.path), []).append(handle)
        if fd is not None and not stdio:
            self._by_fd[(event.pid, fd)] = handle
        return handle

    def feed(self, events: Iterable[Event]) -> None:
        """Follow a batch of events of this file, in file order."""
        for event in events:
            op = calls.classify(event.category, event.name)
            if op is None:
                continue
            if calls.arg_int(event.args, "ret") == -1:
                continue
            self.events += 1
            ts = event.ts
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
            end = ts + event.dur
            if self.last_end is None or end > self.last_end:
                self.last_end = end
            self._feed_one(event, op)

    def _feed_one(self, event: Event, op: str) -> None:
        ts = event.ts
        args = event.args
        if op in ("open", "openat", "creat", "fopen"):
            path = event.path
            if op == "openat":
                relative = second_path(event)
                if relative is not None:
                    path = relative if relative.startswith("/") or path is None else (
                        path.rstrip("/") + "/" + relative
                    )
            if path is None:
                return
            flags = calls.open_flags(op, args)
            plan = self._path(path)
            if flags & os.O_CREAT:
                plan.create(ts)
            else:
                plan.need(ts)
            if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
                plan.written = 0
                plan.create(ts)
            handle = _SimHandle(path)
            stdio = op == "fopen"
            self._by_path.setdefault((event.pid, stdio, path), []).append(handle)
            fd = None if stdio else calls.arg_int(args, "ret")
            if fd is not None and fd >= 0:
                self._by_fd[(event.pid, fd)] = handle
        elif op in ("close", "fclose"):
            stdio = op == "fclose"
            fd = calls.arg_int(args, "fd")
            handle = None
            if fd is not None and not stdio:
                handle = self._by_fd.pop((event.pid, fd), None)
            path = handle.path if handle is not None else event.path
            if path is not None:
                found = self._by_path.get((event.pid, stdio, path))
                if found:
                    found.remove(handle) if handle in found else found.pop()
        elif op in calls.READ_OPS or op in calls.WRITE_OPS:
            self._feed_data(event, op)
        elif op in ("lseek", "fseek"):
            handle = self._find(event, op == "fseek")
            if handle is None:
                return
            ret = calls.arg_int(args, "ret")
            offset = calls.arg_int(args, "offset") or 0
            whence = calls.arg_int(args, "whence") or 0
            if op == "lseek" and ret is not None and ret >= 0:
                handle.position = ret
            elif whence == os.SEEK_SET:
                handle.position = offset
            elif whence == os.SEEK_CUR:
                handle.position += offset
            else:
                plan = self._path(handle.path)
                handle.position = max(plan.written, plan.read_need) + offset
        elif op == "ftruncate":
            handle = self._find(event, False)
            length = calls.arg_int(args, "length")
            if handle is not None:
                plan = self._path(handle.path)
                plan.modified = True
                if length is not None:
                    plan.written = length
        elif event.path is None:
            return
        elif op == "truncate":
            plan = self._path(event.path)
            plan.need(ts)
            plan.modified = True
            length = calls.arg_int(args, "length")
            if length is not None:
                plan.written = length
        elif op in ("stat", "access"):
            self._path(event.path).probe(ts)
        elif op in ("unlink", "remove"):
            plan = self._path(event.path)
            plan.need(ts)
            plan.modified = True
        elif op in ("opendir", "rmdir"):
            plan = self._path(event.path)
            plan.need(ts)
            plan.directory = True
            plan.modified = plan.modified or op == "rmdir"
        elif op == "mkdir":
            plan = self._path(event.path)
            plan.create(ts)
            plan.directory = True
        elif op == "rename":
            plan = self._path(event.path)
            plan.need(ts)
            plan.modified = True
            target = second_path(event)
            if target is not None:
                self._path(target).create(ts)

    def _feed_data(self, event: Event, op: str) -> None:
        handle = self._find(event, op in ("fread", "fwrite"))
        if handle is None:
            return
        offset = calls.arg_int(event.args, "offset") if op in ("pread", "pwrite") else None
        position = handle.position if offset is None else offset
        plan = self._path(handle.path)
        if op in calls.READ_OPS:
            moved = calls.done_size(op, event.args) or 0
            end = position + moved
            if moved and end > plan.written:
                plan.read_need = max(plan.read_need, end)
        else:
            moved = calls.transfer_size(op, event.args) or 0
            self.write_bytes += moved
            plan.written = max(plan.written, position + moved)
            plan.modified = True
        if offset is None:
            handle.position = position + moved


class Plan:
    """The merged plan of every trace file of a replay.

    A plan pickles without its lock, so the plan of a shard can be sent
    to the process that merges it with :meth:`update`.

    Threads: :meth:`add` and :meth:`update` may be called from any thread.
    """

    def __init__(self) -> None:
        self.paths: Dict[str, PathPlan] = {}
        self.write_bytes = 0
        self.events = 0
        self.first_ts: Dict[str, int] = {}
        # Which trace files must keep their order against each other: the
        # first file that modifies each path, the files that only read a
        # path no file modifies (yet), and a union-find forest over the
        # trace files. Files that only read a common path stay apart.
        self.path_modifiers: Dict[str, str] = {}
        self.path_readers: Dict[str, Set[str]] = {}
        self.file_links: Dict[str, str] = {}
        #: Per trace file, the latest start time and the latest end
        #: (``ts + dur``) of the events to replay.
        self.last_ts: Dict[str, int] = {}
        self.last_end: Dict[str, int] = {}
        self._lock = allocate_lock()

    def _root(self, file: str) -> str:
        links = self.file_links
        root = links.setdefault(file, file)
        while links[root] != root:
            root = links[root]
        while links[file] != root:
            links[file], file = root, links[file]
        return root

    def _link(self, file: str, other: str) -> None:
        first, second = self._root(file), self._root(other)
        if first != second:
            # The smaller name becomes the root, so the forest is the same
            # whatever order the plans were merged in.
            low, high = sorted((first, second))
            self.file_links[high] = low

    def _use(self, path: str, file: str, modifies: bool) -> None:
        self._root(file)
        modifier = self.path_modifiers.get(path)
        if modifier is not None:
            self._link(file, modifier)
        elif modifies:
            self.path_modifiers[path] = file
            for reader in self.path_readers.pop(path, ()):
                self._link(file, reader)
        else:
            self.path_readers.setdefault(path, set()).add(file)

    def file_groups(self, key: Callable[[str], Hashable] = lambda path: path) -> List[List[str]]:
        """Return the trace files grouped so that no path orders two groups.

        Two files are in one group when they use the same path and one of
        them writes, creates, truncates, renames or removes it, directly
        or through other files of the group. Files that only read or
        probe a common path are not joined by it. ``key`` maps a traced
        path to what identifies the file it names (the mapped path), so
        two spellings of one path join their files. Files without any
        such path are groups of their own; files the plan never saw are
        missing.
        """
        with self._lock:
            modifiers: Dict[Hashable, str] = {}
            for path, file in self.path_modifiers.items():
                known = modifiers.setdefault(key(path), file)
                if known != file:
                    self._link(file, known)
            for path, readers in self.path_readers.items():
                known = modifiers.get(key(path))
                if known is not None:
                    for reader in readers:
                        self._link(reader, known)
            groups: Dict[str, List[str]] = {}
            for file in sorted(self.file_links):
                groups.setdefault(self._root(file), []).append(file)
        return list(groups.values())

    def add(self, file: str, plan: FilePlan) -> None:
        """Merge the plan of trace ``file``."""
        with self._lock:
            for path, entry in plan.paths.items():
                mine = self.paths.get(path)
                if mine is None:
                    self.paths[path] = entry
                else:
                    mine.merge(entry)
            self.write_bytes += plan.write_bytes
            self.events += plan.events
            if plan.first_ts is not None:
                self.first_ts[file] = plan.first_ts
            self._root(file)
            for path, entry in plan.paths.items():
                self._use(path, file, entry.modified)
            if plan.last_ts is not None and plan.last_end is not None:
                self.last_ts[file] = plan.last_ts
                self.last_end[file] = plan.last_end

    def update(self, other: Plan) -> None:
        """Merge ``other``, the plan of other trace files.

        Merging is commutative: each path keeps the earliest times and
        the largest extents, so the order of the updates does not matter.
        """
        with self._lock:
            for path, entry in other.paths.items():
                mine = self.paths.get(path)
                if mine is None:
                    mine = self.paths[path] = PathPlan()
                mine.merge(entry)
            self.write_bytes += other.write_bytes
            self.events += other.events
            self.first_ts.update(other.first_ts)
            for file, parent in other.file_links.items():
                self._link(file, parent)
            for path, file in other.path_modifiers.items():
                self._use(path, file, True)
            for path, readers in other.path_readers.items():
                for reader in readers:
                    self._use(path, reader, False)
            self.last_ts.update(other.last_ts)
            self.last_end.update(other.last_end)

    def timeline(self) -> Optional[Timeline]:
        """Return the traced time span of the events to replay, over all files.

        ``None`` when the plan contains no event.
        """
        with self._lock:
            if not self.first_ts or not self.last_ts:
                return None
            return Timeline(
                min(self.first_ts.values()),
                max(self.last_ts.values()),
                max(self.last_end.values()),
            )

    def __getstate__(self) -> Dict[str, object]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: Dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = allocate_lock()

    def prepare(self, sandbox: PathSandbox) -> Preparation:
        """Create the files and folders the trace uses before creating them.

        Blocking: makes the system calls in the calling thread.

        Returns:
            What was created; paths that could not be created are listed
            in :attr:`Preparation.failures` and do not stop the replay.
        """
        mapped: Dict[str, Components] = {}
        failures: List[str] = []
        for path in self.paths:
            try:
                mapped[path] = sandbox.components(path)
            except SandboxError as exc:
                failures.append(f"{path!r}: {exc}")
        folders: Set[Components] = set()
        made_later: Dict[Components, int] = {}
        for path, parts in mapped.items():
            for end in range(1, len(parts)):
                folders.add(parts[:end])
            entry = self.paths[path]
            if entry.directory and entry.first_create is not None:
                made_later[parts] = min(entry.first_create, made_later.get(parts, entry.first_create))

        files_made = folders_made = total = 0
        examples: List[str] = []
        for path in sorted(mapped):
            entry = self.paths[path]
            parts = mapped[path]
            is_folder = entry.directory or parts in folders
            first_use = min(
                (t for t in (entry.first_need, entry.probed) if t is not None), default=None
            )
            if first_use is not None and _inside_later_folder(parts, first_use, made_later):
                # The trace creates a folder above this path only after using
                # the path, so the traced call found nothing there either.
                continue
            try:
                if is_folder:
                    if entry.used_before_created() and sandbox.ensure_dir(path):
                        folders_made += 1
                        if len(examples) < MAX_EXAMPLES:
                            examples.append(sandbox.display(path) + "/")
                    continue
                if entry.read_need > 0 or entry.used_before_created():
                    if sandbox.ensure_file(path, entry.read_need):
                        files_made += 1
                        total += entry.read_need
                        if len(examples) < MAX_EXAMPLES:
                            examples.append(sandbox.display(path))
            except OSError as exc:
                failures.append(f"{sandbox.display(path)}: {exc.strerror or exc}")
        logger.debug("prepared %d files (%d bytes), %d folders", files_made, total, folders_made)
        return Preparation(
            files=files_made,
            folders=folders_made,
            bytes=total,
            examples=tuple(examples),
            failures=tuple(failures[:MAX_EXAMPLES]),
        )


def _inside_later_folder(parts: Components, ts: int, made: Dict[Components, int]) -> bool:
    """Return whether a folder above ``parts`` is created by the trace after ``ts``."""
    for end in range(1, len(parts)):
        created = made.get(parts[:end])
        if created is not None and created > ts:
            return True
    return False
