"""Multi-process replay: shards of the trace files run in worker processes.

Decoding holds the GIL, in the compiled decoder too, so one process
decodes on one core whatever its thread count. :class:`ShardedReplayer`
splits the trace files into one shard per worker process (see
``_shards``). Each worker runs each of its shards on an executor of its
own and sends back a :class:`ShardResult`, and the parent merges the
results in file order.

A real replay has two rounds. First every worker plans its files. The
parent then merges the plans, checks free space and prepares the root
once, exactly as a single-process replay does. In the second round every
worker replays its files into that shared root. A dry run has one round,
may read parts of one large file in different workers (see ``_split``),
and reads the first group in the parent itself (see below).

How workers start. By default each worker is a fresh interpreter started
with :mod:`subprocess` (``python -c``) that imports greenpipe and
inherits no thread, lock or hub from the parent. ``fork`` is unsafe in
general because the parent may already run threads: a progress bar,
gevent's hub and thread pool, an executor. A lock that one of them owns
at the moment of the fork stays locked forever in the child. The
``greenpipe`` command owns its process, so it asks for forked workers
(``fork=True``) and starts them before its progress bar. They are forked
only on Linux while the process runs one thread and gevent has not
patched ``threading``, and otherwise start fresh. A forked worker blocks
signals until it has dropped the parent's handlers. It closes the
parent's ends of the pipes and sockets at once, so that it still detects
the parent's death, and leaves with ``os._exit``. On 20 copies of the
newest test trace this took a two-process dry run from 1.15 s to 0.95 s.
:mod:`multiprocessing` with ``spawn`` or ``forkserver`` is as safe, but
it runs the caller's main module again in every worker, which breaks a
script without a ``__main__`` guard and a program read from standard
input. It also starts a resource tracker process that outlives the
parent. The cost of a fresh interpreter is one start and greenpipe
import per worker, paid once per run and in parallel. Measured with
``python -X importtime`` and a profile of a worker's start (2-core Linux
machine, CPython 3.11, without bytecode caches): the interpreter takes
about 25 ms, the imports about 170 ms of CPU time, starting the executor
about 6 ms. The graph, pipeline and combinator
modules, which a worker never uses, are imported lazily by the package.

In a dry run the parent does not wait idle while its workers start: a
thread of the parent (:class:`_LocalProcess`) takes the first group and
speaks the same protocol over a socket pair, so ``N`` processes start
``N - 1`` workers. On two small files with two processes this took the
run from 0.46 s to 0.28 s (best of 7, busy machine). A real replay keeps
every group in a worker process, because a thread cannot be killed: a
replay shard stuck in a system call on a hung file system could then
not be stopped.

Protocol. Each worker has one socket pair with the parent, used through
:class:`multiprocessing.connection.Connection` (pickled messages). The
parent sends a :class:`ReplayShard`, or ``None`` to stop the worker. The
worker replies with ``("progress", events, bytes)`` messages about every
:data:`PROGRESS_INTERVAL` seconds and ends the shard with
``("result", ShardResult)`` or ``("error", traceback text)``. A worker's
death closes its end of the socket, so the parent, which waits on every
socket at once, detects deaths and messages alike as they happen.

Cancellation and orphans. Workers ignore SIGINT: Ctrl-C in a terminal
reaches the whole process group, and the parent alone decides. Every
worker has the read end of one pipe whose write end only the parent
has. :meth:`ShardedReplayer.cancel` closes the write end, and a thread
in each worker, seeing the end of the pipe, cancels the running shard,
which returns its partial result like a cancelled single-process
replay. The write end also closes when the parent dies, however it dies,
so the workers then cancel and, finding their socket closed, exit. The
parent stops its workers before :meth:`ShardedReplayer.run` returns or
raises: it asks first, then sends SIGTERM, then SIGKILL, and waits for
each.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import gc
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple, Union

from .._compat import threading_patched
from .._memory import compute_memory_budget
from ..trace._decoder import effective_budget
from ._options import ReplayOptions
from ._pipeline import (
    check_free_space,
    files_at_once,
    order_groups,
    ReplayError,
    ReplayProgress,
    Replayer,
    open_copies,
    peak_rss_bytes,
    prepare_copies,
    ranked_files,
    require_trace_files,
    series_origin,
)
from ._emit import join_parts, part_path, remove_parts
from ._execute import Timeline
from ._plan import Plan
from ._sandbox import PathSandbox, SandboxError, prepare_root
from ._shards import (
    ReplayShard,
    ShardResult,
    ShardRun,
    anchors_of,
    merge_file_parts,
    merge_plans,
    merge_results,
    partition_by_paths,
    partition_files,
)
from ._split import MIN_SPLIT_BYTES, FilePart, partition_work
from ._summary import Preparation, ReplaySummary

logger = logging.getLogger(__name__)

#: Seconds between progress messages of a worker.
PROGRESS_INTERVAL = 0.2
#: Seconds between sending the replay shards and the instant the first
#: traced call is due in every worker: a shard is pickled, sent and
#: unpickled, and the worker starts an executor, before its first call.
START_LEAD = 0.5
#: Seconds a worker gets to exit after being asked, then after SIGTERM.
STOP_TIMEOUT = 10.0
KILL_TIMEOUT = 2.0

_WORKER_COMMAND = (
    "import sys; from greenpipe.replay._processes import worker_main; "
    "worker_main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))"
)


def usable_cores() -> int:
    """Return the number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


# -- the worker process ---------------------------------------------------------


def worker_main(connection_fd: int, cancel_fd: int, log_level: int) -> None:
    """Run the shards received on socket ``connection_fd`` until a ``None``.

    The entry point of a worker process. ``cancel_fd`` is the read end of
    the parent's cancel pipe. ``log_level`` is the level of the parent's
    ``greenpipe`` logger when it is below WARNING, so that the worker's
    records go to the standard error it shares with the parent; 0 leaves
    logging alone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The worker process runs nothing else: keep the collector off the
    # objects of start-up, as the command does.
    gc.freeze()
    if log_level:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s[%(process)d]: %(message)s"))
        root = logging.getLogger("greenpipe")
        root.addHandler(handler)
        root.setLevel(log_level)
    _serve(Connection(connection_fd), cancel_fd)


def _serve(
    connection: Connection,
    cancel_fd: int,
    started: Optional[Callable[[ShardRun], None]] = None,
) -> None:
    """Run the shards received on ``connection`` until a ``None`` or its end."""
    while True:
        try:
            shard = connection.recv()
        except (EOFError, OSError):
            return
        if shard is None:
            return
        try:
            _run_one(connection, shard, cancel_fd, started)
        except OSError:
            # The parent is gone, so the result has no receiver.
            return


def _run_one(
    connection: Connection,
    shard: ReplayShard,
    cancel_fd: int,
    started: Optional[Callable[[ShardRun], None]] = None,
) -> None:
    run = ShardRun(shard)
    if started is not None:
        started(run)
    # Written to when the shard ends, so the watcher stops at once.
    wake_read, wake_write = os.pipe()

    def watch() -> None:
        while True:
            readable, _, _ = select.select([cancel_fd, wake_read], [], [], PROGRESS_INTERVAL)
            if wake_read in readable:
                return
            if cancel_fd in readable:
                # The parent closed the cancel pipe, or died.
                run.cancel()
                return
            progress = run.progress()
            try:
                connection.send(("progress", progress.events_done, progress.bytes_done))
            except OSError:
                run.cancel()
                return

    watcher = threading.Thread(target=watch, name="greenpipe-shard-watch", daemon=True)
    watcher.start()
    try:
        try:
            result = run.run()
        except Exception:
            message: Tuple[Any, ...] = ("error", traceback.format_exc())
        else:
            message = ("result", result)
    finally:
        os.write(wake_write, b"x")
        watcher.join()
        os.close(wake_read)
        os.close(wake_write)
    # The watcher has stopped, so the result is the last message.
    progress = run.progress()
    connection.send(("progress", progress.events_done, progress.bytes_done))
    connection.send(message)


# -- the parent ---------------------------------------------------------------


class _LocalProcess:
    """The worker that runs in the parent: a thread behind a socket pair.

    It speaks the protocol of a worker process and offers the methods of
    :class:`subprocess.Popen` that the parent uses, so the parent treats
    it like any other worker. A thread cannot be killed:
    :meth:`terminate` and :meth:`kill` cancel its shard instead.
    """

    def __init__(self, connection: Connection, cancel_fd: int) -> None:
        self.pid = os.getpid()
        self.returncode: Optional[int] = None
        self._run: Optional[ShardRun] = None
        # A copy of the cancel pipe's read end, closed when the thread ends,
        # because the parent closes its own copy once the workers started.
        self._cancel_fd = os.dup(cancel_fd)
        self._thread = threading.Thread(
            target=self._main, args=(connection,), name="greenpipe-local-shard", daemon=True
        )
        self._thread.start()

    def _main(self, connection: Connection) -> None:
        try:
            _serve(connection, self._cancel_fd, self._started)
        finally:
            connection.close()
            os.close(self._cancel_fd)
            self.returncode = 0

    def _started(self, run: ShardRun) -> None:
        self._run = run

    def poll(self) -> Optional[int]:
        return None if self._thread.is_alive() else 0

    def wait(self, timeout: Optional[float] = None) -> int:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise subprocess.TimeoutExpired("greenpipe-local-shard", timeout or 0.0)
        return 0

    def terminate(self) -> None:
        run = self._run
        if run is not None:
            run.cancel()

    kill = terminate


def can_fork() -> bool:
    """Return whether a worker may be forked from this process now.

    Only on Linux, and only while this process runs a single thread, as
    both Python and the operating system count threads: a lock that
    another thread holds at the fork stays locked forever in the child.
    Never after gevent has patched ``threading``.
    """
    if not sys.platform.startswith("linux") or threading.active_count() != 1:
        return False
    if threading_patched():
        # A forked worker would start its shard's watcher as a greenlet,
        # which never runs while the shard blocks the process.
        return False
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Threads:"):
                    return int(line.split()[1]) == 1
    except (OSError, ValueError):
        pass
    return False


class _ForkedProcess:
    """A worker forked from this process, with the methods of Popen the parent uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None

    @classmethod
    def start(
        cls, connection_fd: int, cancel_fd: int, theirs: Callable[[], Sequence[int]]
    ) -> "_ForkedProcess":
        """Fork a worker that serves ``connection_fd``.

        The child closes the descriptors that ``theirs`` returns. It is
        called just before the fork, because a signal handler may have
        closed a descriptor of an earlier list, and a new descriptor may
        have taken its number since.
        """
        # Every signal stays blocked until the child has replaced the
        # parent's handlers, because the parent's Ctrl-C handler, run in
        # the child, would cancel and report as if it were the parent.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            closing = theirs()
            pid = os.fork()
            if pid == 0:
                _forked_main(connection_fd, cancel_fd, closing, mask)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return cls(pid)

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                # Reaped elsewhere, for example by a SIGCHLD handler, so
                # the exit code is lost.
                self.returncode = 0
                return 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if timeout is None:
            while self.poll() is None:
                try:
                    _, status = os.waitpid(self.pid, 0)
                except ChildProcessError:
                    self.returncode = 0
                else:
                    self.returncode = os.waitstatus_to_exitcode(status)
            assert self.returncode is not None
            return self.returncode
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            code = self.poll()
            if code is not None:
                return code
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(f"greenpipe worker {self.pid}", timeout)
            # A worker asked to stop exits within milliseconds, so the
            # pause starts short and grows for one that takes longer.
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)

    def _signal(self, number: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, number)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


def _flush_before_fork() -> None:
    """Flush the standard streams and every logging handler.

    A forked child copies the parent's buffers. Its log records go
    through the parent's handlers, whose streams would then write the
    parent's buffered text a second time.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    loggers = [logging.getLogger()] + [
        logger
        for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            try:
                handler.flush()
            except (OSError, ValueError):
                pass


def _reset_signal_handlers() -> None:
    """Replace the parent's Python signal handlers in a forked child.

    Signals that the parent handles in Python get their default action,
    as in a fresh interpreter. The worker ignores SIGINT and dies on
    SIGTERM.
    """
    for number in signal.valid_signals():
        try:
            handler = signal.getsignal(number)
        except ValueError:
            continue
        if callable(handler):
            signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)


def _forked_main(
    connection_fd: int, cancel_fd: int, theirs: Sequence[int], mask: Any
) -> None:
    """Run a forked worker and leave the process; never returns.

    ``mask`` is the signal mask to restore once the parent's signal
    handlers are replaced. The child leaves with ``os._exit``, so it runs
    none of the parent's exit handlers and flushes none of its buffered
    output.
    """
    code = 1
    try:
        _reset_signal_handlers()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in theirs:
            try:
                os.close(fd)
            except OSError as error:
                # A Python signal handler that ran just before the fork may
                # have closed it in the parent after ``theirs`` was taken.
                if error.errno != errno.EBADF:
                    raise
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        # The parent's standard output may carry the JSON summary.
        os.dup2(devnull, 1)
        if devnull > 1:
            os.close(devnull)
        # Logging is set up already, as the parent had it.
        worker_main(connection_fd, cancel_fd, 0)
        code = 0
    except BaseException:
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(code)


@dataclasses.dataclass
class _Work:
    """The files, groups and options that :meth:`ShardedReplayer.start` prepared."""

    files: List[str]
    problems: List[str]
    groups: List[Tuple[Tuple[int, str], ...]]
    parts: List[Tuple[Optional[FilePart], ...]]
    worker_options: ReplayOptions
    share: int


@dataclasses.dataclass
class _Worker:
    number: int
    process: Union[subprocess.Popen, _LocalProcess, _ForkedProcess]  # type: ignore[type-arg]
    connection: Connection
    files: Tuple[Tuple[int, str], ...] = ()
    busy: bool = False
    failed: bool = False
    events_done: int = 0
    bytes_done: int = 0
    peak_rss_bytes: int = 0


def _describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _worker_environment() -> Dict[str, str]:
    """Return the environment of a worker: this one, with greenpipe importable."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    environment = dict(os.environ)
    paths = [package_parent] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return environment


def _move_above_standard_streams(fd: int) -> int:
    """Return ``fd`` if it is numbered 3 or above, otherwise move it there.

    While this process has a standard stream closed, a new descriptor may
    take number 0, 1 or 2, and a starting worker replaces descriptors 0
    and 1 with ``/dev/null``. A moved descriptor keeps its inheritable
    flag, and ``fd`` is closed.
    """
    if fd > 2:
        return fd
    duplicate = fcntl.fcntl(fd, fcntl.F_DUPFD, 3)
    os.set_inheritable(duplicate, os.get_inheritable(fd))
    os.close(fd)
    return duplicate


def _blocking_socketpair() -> Tuple[socket.socket, socket.socket]:
    """Return a connected pair of Unix sockets whose descriptors block.

    :class:`Connection` reads and writes the descriptor with ``os.read``
    and ``os.write``, which raise :class:`BlockingIOError` on a
    non-blocking one. After ``gevent.monkey.patch_all()`` the
    ``socket.socketpair`` function returns non-blocking sockets. Both
    descriptors are numbered 3 or above (see
    :func:`_move_above_standard_streams`).
    """
    ends = []
    for end in socket.socketpair():
        moved = socket.socket(fileno=_move_above_standard_streams(end.detach()))
        # After the constructor, which gevent's makes non-blocking.
        os.set_blocking(moved.fileno(), True)
        ends.append(moved)
    return ends[0], ends[1]


class _WorkerPool:
    """Workers that each run one shard at a time.

    With ``local``, worker 0, which gets the first and heaviest group of
    the partition, is a thread of this process (see :class:`_LocalProcess`).
    It starts after the worker processes, so that they import while it
    already reads.
    """

    def __init__(
        self,
        count: int,
        cancel_fd: int,
        *,
        local: bool = False,
        fork: bool = False,
        parent_fds: Callable[[], Sequence[int]] = tuple,
    ) -> None:
        self.workers: List[_Worker] = []
        self.forked = fork and can_fork()
        environment = {} if self.forked else _worker_environment()
        level = logging.getLogger("greenpipe").getEffectiveLevel()
        log_level = level if level < logging.WARNING else 0
        try:
            for number in range(1 if local else 0, count):
                parent_end, child_end = _blocking_socketpair()
                try:
                    process: Union[subprocess.Popen, _ForkedProcess]  # type: ignore[type-arg]
                    if self.forked:
                        # The child must not keep the parent's ends open: a
                        # worker detects its parent's death by their closing.
                        theirs = [parent_end.fileno()]
                        theirs += [worker.connection.fileno() for worker in self.workers]
                        process = _ForkedProcess.start(
                            child_end.fileno(),
                            cancel_fd,
                            lambda: [*theirs, *parent_fds()],
                        )
                    else:
                        process = subprocess.Popen(
                            [
                                sys.executable, "-c", _WORKER_COMMAND,
                                str(child_end.fileno()), str(cancel_fd), str(log_level),
                            ],
                            pass_fds=(child_end.fileno(), cancel_fd),
                            stdin=subprocess.DEVNULL,
                            # The parent's standard output may carry the JSON
                            # summary; a worker never writes there.
                            stdout=subprocess.DEVNULL,
                            env=environment,
                        )
                except BaseException:
                    parent_end.close()
                    raise
                finally:
                    child_end.close()
                self.workers.append(_Worker(number, process, Connection(parent_end.detach())))
            if local:
                parent_end, child_end = _blocking_socketpair()
                child = Connection(child_end.detach())
                try:
                    thread = _LocalProcess(child, cancel_fd)
                except BaseException:
                    child.close()
                    parent_end.close()
                    raise
                self.workers.insert(0, _Worker(0, thread, Connection(parent_end.detach())))
        except BaseException:
            self.close(polite=False)
            raise

    def close(self, *, polite: bool = True) -> None:
        """Stop every worker and wait for it; never leaves one running."""
        for worker in self.workers:
            if polite and worker.process.poll() is None:
                try:
                    worker.connection.send(None)
                except OSError:
                    pass
        deadline = time.monotonic() + (STOP_TIMEOUT if polite else 0.0)
        for worker in self.workers:
            process = worker.process
            try:
                process.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                process.terminate()
                # A local worker is a thread, which cannot be killed. While
                # it waits for a shard, only closing this end of its socket
                # wakes it.
                worker.connection.close()
                try:
                    process.wait(KILL_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            worker.connection.close()


class ShardedReplayer:
    """Replays traces with their files spread over worker processes.

    The same interface as :class:`Replayer`: call :meth:`run` once;
    :meth:`cancel` and :meth:`progress` may be called from any thread
    while it runs. The summary equals that of :class:`Replayer` on the
    same inputs (apart from times, latencies and the per-process rows),
    whatever the number of processes.

    With one process, a cap counted across files (``max_events``,
    ``max_bytes``), or one trace file that is not split (every file of a
    real replay), the replay runs in the calling process, as
    :class:`Replayer` does.

    Args:
        inputs: trace files and folders.
        options: what to replay and how. ``options.memory_budget`` (or,
            when 0, the default budget of
            :func:`~greenpipe.compute_memory_budget`) is divided among
            the worker processes.
        processes: worker processes; ``None`` for the number of cores
            this process may run on.
        min_split_bytes: smallest file, in bytes on disk, that a dry run
            may split into parts (see ``_split``).
        local_share: in a dry run, read one share of the files in this
            process, with one worker process fewer.
        fork: start the workers by forking this process, which spares
            each one an interpreter start and the imports. Only on Linux,
            while this process runs a single thread (see :meth:`start`)
            and gevent has not patched ``threading``; otherwise they
            start as fresh interpreters.
            For a process that runs nothing but the replay, as the
            ``greenpipe`` command does.

    Raises:
        ValueError: ``processes`` is below 1.
    """

    def __init__(
        self,
        inputs: Sequence[str],
        options: ReplayOptions,
        processes: Optional[int] = None,
        *,
        min_split_bytes: int = MIN_SPLIT_BYTES,
        local_share: bool = True,
        fork: bool = False,
    ) -> None:
        if processes is None:
            processes = usable_cores()
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be an integer >= 1, not {processes!r}")
        self.inputs = list(inputs)
        self.options = options
        self.processes = processes
        self.min_split_bytes = min_split_bytes
        self.local_share = local_share
        self._cancelled = False
        self._cancel_lock = threading.RLock()
        self._cancel_write = -1
        self._inner: Optional[Replayer] = None
        self._workers: List[_Worker] = []
        self._failures: Dict[int, str] = {}
        self._phase = "plan"
        self._phase_started = time.monotonic()
        self._events_total = 0
        self._bytes_total = 0
        # Events and bytes done, from the merged summary, for the done phase.
        self._finished: Optional[Tuple[int, int]] = None
        self._timeline: Optional[Timeline] = None
        self.fork = fork
        self._started = False
        self._pool: Optional[_WorkerPool] = None
        self._work: Optional[_Work] = None

    # -- control from other threads -------------------------------------------

    def cancel(self) -> None:
        """Stop the replay soon; :meth:`run` returns a partial summary.

        Does not wait for the workers; safe from any thread and from a
        signal handler.
        """
        self._cancelled = True
        self._close_cancel_pipe()
        inner = self._inner
        if inner is not None:
            inner.cancel()

    def _close_cancel_pipe(self) -> None:
        # Reentrant: a signal handler may run cancel() while the main thread
        # is inside this method already.
        with self._cancel_lock:
            fd, self._cancel_write = self._cancel_write, -1
            if fd >= 0:
                os.close(fd)

    def _cancel_write_fds(self) -> List[int]:
        """Return the cancel pipe's write end while it is open, for a forked child to close."""
        fd = self._cancel_write
        return [fd] if fd >= 0 else []

    def progress(self) -> ReplayProgress:
        """Return a snapshot of the progress of all workers; never blocks."""
        inner = self._inner
        if inner is not None:
            return inner.progress()
        phase = self._phase
        finished = self._finished
        if phase == "done" and finished is not None:
            events_done, bytes_done = finished
        else:
            workers = list(self._workers)
            events_done = sum(w.events_done for w in workers)
            bytes_done = sum(w.bytes_done for w in workers)
        return ReplayProgress(
            phase,
            events_done,
            self._events_total,
            bytes_done,
            self._bytes_total,
            time.monotonic() - self._phase_started,
        )

    def worker_processes(self) -> List[Tuple[int, Tuple[str, ...]]]:
        """Return the process id and the trace files of each running worker.

        Empty before the workers start and after they stop; never blocks.
        """
        return [
            (worker.process.pid, tuple(path for _, path in worker.files))
            for worker in list(self._workers)
            if not isinstance(worker.process, _LocalProcess) and worker.process.poll() is None
        ]

    def _set_phase(self, phase: str) -> None:
        for worker in self._workers:
            worker.events_done = worker.bytes_done = 0
        self._phase = phase
        self._phase_started = time.monotonic()

    # -- the run --------------------------------------------------------------

    def start(self) -> None:
        """Find the trace files and start the worker processes.

        :meth:`run` calls it when it was not called before. With ``fork``,
        call it before starting threads of your own, since workers are
        forked only while this process runs a single thread.

        Raises:
            ReplayError: no input contains a trace, or the root cannot be
                used.
        """
        if self._started:
            return
        files, problems = require_trace_files(self.inputs)
        options = self.options
        ranked_files(files, options)  # raises for a rank that names no file
        parts: List[Tuple[Optional[FilePart], ...]] = []
        if options.dry_run:
            work = partition_work(
                files, self.processes, options, min_split_bytes=self.min_split_bytes
            )
            groups = [tuple((index, path) for index, path, _ in group) for group in work]
            parts = [tuple(part for _, _, part in group) for group in work]
        else:
            groups = partition_files(files, self.processes, options)
        if len(groups) <= 1:
            if options.max_events is not None or options.max_bytes is not None:
                logger.info(
                    "replaying in one process: max_events and max_bytes count across all files"
                )
            self._inner = Replayer(self.inputs, options)
            if self._cancelled:
                self._inner.cancel()
            self._started = True
            return

        budget = compute_memory_budget(options.memory_budget)
        share = budget // len(groups)
        # A worker reads files_at_once files at once, each through a reader
        # with its own budget, so each reader gets a part of the share. It
        # never gets more than in a single-process replay.
        # NOTE: the longest accepted line is a quarter of the reader budget,
        # so when share // in_flight is below the single-process reader
        # budget (always, with an explicit memory_budget), a line that one
        # process accepts can be a bad line here.
        in_flight = files_at_once(options, count_only=options.dry_run)
        reader_budget = min(effective_budget(options.memory_budget), max(share // in_flight, 1))
        worker_options = dataclasses.replace(options, memory_budget=reader_budget)
        if not options.dry_run:
            assert options.root is not None
            message = prepare_root(options.root)
            if message is not None:
                raise ReplayError(message)

        read_fd, write_fd = os.pipe()
        read_fd = _move_above_standard_streams(read_fd)
        with self._cancel_lock:
            self._cancel_write = write_fd
            if self._cancelled:
                self._close_cancel_pipe()
        try:
            if self.fork:
                _flush_before_fork()
            # In a dry run the parent takes a share instead of waiting,
            # which spares one worker process its start.
            # Patched by gevent, the local worker's thread would be a
            # greenlet that blocks the whole process while it waits.
            local = options.dry_run and self.local_share and not threading_patched()
            pool = _WorkerPool(
                len(groups),
                read_fd,
                local=local,
                fork=self.fork,
                parent_fds=self._cancel_write_fds,
            )
        except BaseException:
            self._close_cancel_pipe()
            raise
        finally:
            # Only the workers read the pipe; the parent keeps the write end.
            os.close(read_fd)
        forked = sum(isinstance(worker.process, _ForkedProcess) for worker in pool.workers)
        if forked:
            logger.debug("forked %d worker process(es)", forked)
        self._pool = pool
        self._workers = pool.workers
        for worker, group in zip(pool.workers, groups):
            worker.files = group
        self._work = _Work(files, problems, groups, parts, worker_options, share)
        # Only now: after a failure, run() calls start() again and raises.
        self._started = True

    def run(self) -> ReplaySummary:
        """Plan, prepare and replay with worker processes; return the summary.

        Blocking: returns when every worker has finished its shards and
        exited or, after :meth:`cancel`, once the workers have returned
        their partial results. Worker processes are stopped before this
        method returns or raises.

        Raises:
            ReplayError: no input contains a trace, or the root cannot be
                used.
            InsufficientSpaceError: the estimated bytes to write exceed
                the free space and ``options.force`` is false.
        """
        self.start()
        if self._inner is not None:
            return self._inner.run()
        pool, work = self._pool, self._work
        assert pool is not None and work is not None
        try:
            polite = False
            try:
                if self.options.dry_run:
                    summary = self._run_dry(
                        work.files, work.problems, work.groups, work.parts, work.worker_options
                    )
                else:
                    summary = self._run_real(
                        work.files, work.problems, work.groups, work.worker_options
                    )
                polite = True
            finally:
                pool.close(polite=polite)
        finally:
            self._close_cancel_pipe()
        return dataclasses.replace(summary, processes=self._process_rows(work.share))

    def _run_dry(
        self,
        files: List[str],
        problems: List[str],
        groups: List[Tuple[Tuple[int, str], ...]],
        parts: List[Tuple[Optional[FilePart], ...]],
        worker_options: ReplayOptions,
    ) -> ReplaySummary:
        self._set_phase("dry-run")
        started = time.monotonic()
        results = self._round(
            [
                ReplayShard("dry-run", group, worker_options, parts=group_parts)
                for group, group_parts in zip(groups, parts)
            ]
        )
        _, unsafe = merge_file_parts(files, [r for r in results if r is not None])
        if unsafe and not self._cancelled:
            results += self._reread_whole(files, unsafe, worker_options)
        return self._finish(files, problems, results, time.monotonic() - started, Preparation())

    def _reread_whole(
        self, files: List[str], indexes: List[int], worker_options: ReplayOptions
    ) -> List[Optional[ShardResult]]:
        """Read the files at ``indexes`` whole, after a part boundary proved unsafe."""
        logger.info(
            "reading %s whole: a part did not end on a safe boundary",
            ", ".join(files[index] for index in indexes),
        )
        ready = [worker for worker in self._workers if not worker.failed]
        if not ready:
            return []
        assigned: List[List[Tuple[int, str]]] = [[] for _ in self._workers]
        for position, index in enumerate(indexes):
            worker = ready[position % len(ready)]
            assigned[worker.number].append((index, files[index]))
        for worker, group in zip(self._workers, assigned):
            if group:
                worker.files = worker.files + tuple(group)
        return self._round(
            [
                ReplayShard("dry-run", tuple(group), worker_options) if group else None
                for group in assigned
            ]
        )

    def _run_real(
        self,
        files: List[str],
        problems: List[str],
        groups: List[Tuple[Tuple[int, str], ...]],
        worker_options: ReplayOptions,
    ) -> ReplaySummary:
        options = self.options
        assert options.root is not None
        with open_copies(options.root, options.copies, prepare=True) as sandboxes:
            self._set_phase("plan")
            planned = self._round([ReplayShard("plan", group, worker_options) for group in groups])
            if self._cancelled:
                return self._finish(files, problems, [], 0.0, Preparation())
            plan = merge_plans([r for r in planned if r is not None])

            needed = check_free_space(plan.write_bytes, options, os.path.realpath(options.root))

            self._set_phase("prepare")
            preparation = prepare_copies(plan, sandboxes)

            planned_ok = [result is not None for result in planned]
            linked: List[List[int]] = []
            if options.order != "stream" and all(planned_ok):
                # Every copy maps paths alike, so the first one stands for all.
                groups = self._order_groups(files, plan, sandboxes[0])
                planned_ok = [True] * len(groups)
                if options.order == "resource":
                    linked = order_groups(plan, ranked_files(files, options), sandboxes[0])

        self._events_total = plan.events * options.copies
        self._bytes_total = needed
        self._timeline = plan.timeline()
        self._set_phase("replay")
        started = time.monotonic()
        origin = series_origin()
        target = options.emit_trace
        parts = [part_path(target, number) for number in range(len(groups))] if target else []
        # Every worker starts the common timeline at the same wall-clock
        # instant, late enough for all of them to receive their shard.
        start_epoch = time.time() + START_LEAD
        shards: List[Optional[ReplayShard]] = []
        for number, (group, ok) in enumerate(zip(groups, planned_ok)):
            # A worker that failed while planning has no plan for its
            # files, so they are not replayed; the failure is reported.
            if not ok:
                shards.append(None)
                continue
            shard_options = worker_options
            if target:
                shard_options = dataclasses.replace(worker_options, emit_trace=parts[number])
            mine = {index for index, _ in group}
            shards.append(
                ReplayShard(
                    "replay",
                    group,
                    shard_options,
                    anchors_of(plan, group),
                    groups=tuple(tuple(part) for part in linked if part[0] in mine),
                    origin=origin,
                    timeline=self._timeline,
                    start_epoch=start_epoch,
                )
            )
        try:
            results = self._round(shards)
            if target:
                # A worker that failed may have left a cut gzip member.
                join_parts(target, [part for part, r in zip(parts, results) if r is not None])
        finally:
            remove_parts(parts)
        return self._finish(files, problems, results, time.monotonic() - started, preparation)

    def _order_groups(
        self, files: List[str], plan: Plan, sandbox: PathSandbox
    ) -> List[Tuple[Tuple[int, str], ...]]:
        """Regroup the files for the replay round of an ordered replay.

        Order across trace files is kept inside one process only. With
        ``global`` every file goes to one worker; with ``resource`` the
        files that share a mapped path go to the same worker.
        """
        chosen = {index for index, _ in ranked_files(files, self.options)}
        if self.options.order == "global":
            groups = [tuple((index, path) for index, path in enumerate(files) if index in chosen)]
            logger.info(
                "--order global: one worker process replays all %d trace files, "
                "because one timeline needs every file",
                len(files),
            )
        else:

            def mapped(path: str) -> Hashable:
                try:
                    return sandbox.components(path)
                except SandboxError:
                    return path

            groups = [
                kept
                for kept in (
                    tuple(pair for pair in group if pair[0] in chosen)
                    for group in partition_by_paths(files, len(self._workers), plan, mapped)
                )
                if kept
            ]
            if len(groups) == 1:
                logger.info(
                    "--order resource: one worker process replays all %d trace files, "
                    "because they share paths",
                    len(files),
                )
            else:
                logger.info(
                    "--order resource: %d worker processes replay groups of trace files "
                    "that share no path (%s files)",
                    len(groups),
                    ", ".join(str(len(group)) for group in groups),
                )
        for worker in self._workers:
            worker.files = ()
        for worker, group in zip(self._workers, groups):
            worker.files = group
        return groups

    def _round(self, shards: Sequence[Optional[ReplayShard]]) -> List[Optional[ShardResult]]:
        """Run ``shards[i]`` on worker ``i``; return the results, ``None`` for failures."""
        results: List[Optional[ShardResult]] = [None] * len(shards)
        for worker, shard in zip(self._workers, shards):
            if shard is None or worker.failed:
                continue
            try:
                worker.connection.send(shard)
            except OSError:
                self._fail(worker, self._crash_message(worker))
                continue
            worker.busy = True

        while True:
            busy = {w.connection: w for w in self._workers if w.busy}
            if not busy:
                return results
            for ready in wait(list(busy)):
                self._receive(busy[ready], results)

    def _receive(self, worker: _Worker, results: List[Optional[ShardResult]]) -> None:
        try:
            message = worker.connection.recv()
        except (EOFError, OSError):
            # The worker's end of the socket closed: the process is ending.
            self._fail(worker, self._crash_message(worker))
            return
        kind = message[0]
        if kind == "progress":
            worker.events_done, worker.bytes_done = message[1], message[2]
        elif kind == "result":
            result: ShardResult = message[1]
            results[worker.number] = result
            worker.peak_rss_bytes = max(worker.peak_rss_bytes, result.peak_rss_bytes)
            worker.busy = False
        else:
            logger.error(
                "worker process %d failed while reading %s:\n%s",
                worker.number + 1,
                ", ".join(path for _, path in worker.files),
                message[1],
            )
            last_line = message[1].strip().splitlines()[-1]
            self._fail(worker, f"{self._files_text(worker)}: the worker process raised {last_line}")

    def _crash_message(self, worker: _Worker) -> str:
        try:
            code: Optional[int] = worker.process.wait(KILL_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        return (
            f"{self._files_text(worker)}: the worker process ended with "
            f"{_describe_exit(code)}"
        )

    @staticmethod
    def _files_text(worker: _Worker) -> str:
        return ", ".join(path for _, path in worker.files)

    def _fail(self, worker: _Worker, message: str) -> None:
        worker.busy = False
        if not worker.failed:
            worker.failed = True
            self._failures[worker.number] = message

    # -- the summary ----------------------------------------------------------

    def _finish(
        self,
        files: List[str],
        problems: List[str],
        results: Sequence[Optional[ShardResult]],
        wall: float,
        preparation: Preparation,
    ) -> ReplaySummary:
        # A replay interrupted while planning has no round to report on, so
        # the files of a failed worker are listed only after a round ran.
        failed_files = [
            item for w in self._workers if w.failed and results for item in w.files
        ]
        summary = merge_results(
            files,
            self.options,
            [r for r in results if r is not None],
            wall_seconds=wall,
            preparation=preparation,
            problems=problems,
            failed_files=failed_files,
            worker_failures=[self._failures[n] for n in sorted(self._failures)],
            interrupted=self._cancelled,
            timeline=self._timeline,
        )
        # A worker's count covers its last shard only and is reset at each
        # phase, so the done phase reports the merged counts, as
        # Replayer.progress() does.
        if self.options.dry_run:
            self._finished = (summary.events_seen, 0)
        else:
            executed = summary.events_replayed + summary.events_failed + summary.events_skipped
            self._finished = (executed, summary.bytes_read + summary.bytes_written)
        self._set_phase("done")
        return summary

    def _process_rows(self, share: int) -> Tuple[Dict[str, Any], ...]:
        # Unless it took a share of the files, the main process reads no
        # trace, so the whole budget goes to the workers.
        main = {"role": "main", "files": 0, "memory_budget_bytes": 0, "peak_rss_bytes": peak_rss_bytes()}
        rows = [main]
        for worker in self._workers:
            if isinstance(worker.process, _LocalProcess):
                main["files"] = len(worker.files)
                main["memory_budget_bytes"] = share
                continue
            rows.append(
                {
                    "role": "worker",
                    "files": len(worker.files),
                    "memory_budget_bytes": share,
                    "peak_rss_bytes": worker.peak_rss_bytes,
                }
            )
        return tuple(rows)


def replay_processes(
    inputs: Sequence[str], options: ReplayOptions, processes: Optional[int] = None
) -> ReplaySummary:
    """Replay ``inputs`` with ``processes`` worker processes; see :class:`ShardedReplayer`."""
    return ShardedReplayer(inputs, options, processes).run()

