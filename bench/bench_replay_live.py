"""Measure live ``--timing asap`` replay of 4 KiB calls on tmpfs.

Usage::

    python bench/bench_replay_live.py [--events 400000] [--streams 8]
                                      [--parent /dev/shm] [--repeat 3] [--profile FILE]

Writes a synthetic trace in a temporary folder under ``--parent`` (a
tmpfs): ``--streams`` traced threads, each in its own trace file, issuing
``--events`` 4 KiB ``pread`` and ``pwrite`` calls in all over 3 files per
stream (the trace of ``bench_timing.py``). Then it prints one table:

* ``greenpipe replay --timing asap`` with 1 and 2 worker processes, as
  calls per second of the replay phase (after planning and preparing) and
  of the whole run (from the start of the replay to its summary);
* the anchor: a plain Python loop that issues the same ``os.pread`` and
  ``os.pwrite`` calls on the same kind of files, stream after stream;
* the same calls from one task per stream on gevent, asyncio and trio,
  each task yielding to the others after every call, as a cooperative
  replayer does.

Each row is the best of ``--repeat`` runs. ``--profile FILE`` also writes a
cProfile of one single-process replay, its worker threads included, to
FILE and prints its top entries.
The target is at least 100,000 calls per second per core.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from bench_timing import BLOCK, Call, Files, schedule, tmpfs_of, write_traces

from greenpipe.replay import ReplayOptions, replay

TARGET_PER_CORE = 100_000


def issue_all(calls: List[Call], fds: List[int]) -> None:
    buffer = bytearray(BLOCK)
    data = bytes(BLOCK)
    pread = os.preadv
    pwrite = os.pwrite
    for _, write, index, offset in calls:
        if write:
            pwrite(fds[index], data, offset)
        else:
            pread(fds[index], [buffer], offset)


def plain_loop(plans: List[List[Call]], files: Files) -> None:
    for number, calls in enumerate(plans):
        issue_all(calls, files.fds[number])


def gevent_loop(plans: List[List[Call]], files: Files) -> None:
    import gevent

    def stream(calls: List[Call], fds: List[int]) -> None:
        buffer = bytearray(BLOCK)
        data = bytes(BLOCK)
        for _, write, index, offset in calls:
            if write:
                os.pwrite(fds[index], data, offset)
            else:
                os.preadv(fds[index], [buffer], offset)
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(stream, calls, files.fds[n]) for n, calls in enumerate(plans)])


async def _async_stream(calls: List[Call], fds: List[int], sleep: Any) -> None:
    buffer = bytearray(BLOCK)
    data = bytes(BLOCK)
    for _, write, index, offset in calls:
        if write:
            os.pwrite(fds[index], data, offset)
        else:
            os.preadv(fds[index], [buffer], offset)
        await sleep(0)


def asyncio_loop(plans: List[List[Call]], files: Files) -> None:
    import asyncio

    async def main() -> None:
        await asyncio.gather(
            *(_async_stream(calls, files.fds[n], asyncio.sleep) for n, calls in enumerate(plans))
        )

    asyncio.run(main())


def trio_loop(plans: List[List[Call]], files: Files) -> None:
    import trio

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for n, calls in enumerate(plans):
                nursery.start_soon(_async_stream, calls, files.fds[n], trio.sleep)

    trio.run(main)


def profile_replay(traces: Path, root: Path, target: str) -> None:
    """Profile one single-process replay, worker threads included, into ``target``."""
    import greenpipe._executor as executor_module

    profiles: List[cProfile.Profile] = []
    start_thread = executor_module.start_new_thread

    def start_profiled(function: Callable[..., Any], arguments: Tuple[Any, ...]) -> Any:
        def run(*values: Any) -> None:
            profile = cProfile.Profile()
            profiles.append(profile)
            profile.enable()
            try:
                function(*values)
            finally:
                profile.disable()

        return start_thread(run, arguments)

    # The executor starts its worker threads through this name; wrapping it
    # profiles each worker, which cProfile alone would not.
    executor_module.start_new_thread = start_profiled
    try:
        replay([str(traces)], ReplayOptions(root=str(root), threads=1), processes=1)
    finally:
        executor_module.start_new_thread = start_thread
    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        stats.add(profile)
    stats.dump_stats(target)
    print()
    stats.sort_stats("tottime").print_stats(25)


def best_of(repeat: int, run: Callable[[], Tuple[float, float]]) -> Tuple[float, float]:
    """Return the best (smallest) pair of times over ``repeat`` runs."""
    results = [run() for _ in range(repeat)]
    return min(r[0] for r in results), min(r[1] for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000, help="calls in the trace (default 400000)")
    parser.add_argument("--streams", type=int, default=8, help="traced threads, one trace file each (default 8)")
    parser.add_argument("--parent", default="/dev/shm", help="tmpfs folder for the trace and the roots (default /dev/shm)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the best is kept (default 3)")
    parser.add_argument("--profile", metavar="FILE", help="also profile one single-process replay into FILE")
    args = parser.parse_args()

    if tmpfs_of(args.parent) is None:
        print(
            f"{args.parent} is not on a tmpfs, so the file system would dominate the rates. "
            "Give --parent a folder on a tmpfs (see 'findmnt -t tmpfs').",
            file=sys.stderr,
        )
        return 1
    work = Path(tempfile.mkdtemp(prefix="greenpipe-live-", dir=args.parent))
    try:
        # 1 s of trace at the requested number of calls per second.
        plans = schedule(1.0, args.events, args.streams)
        calls = sum(len(p) for p in plans)
        traces = work / "traces"
        traces.mkdir()
        write_traces(traces, plans)
        print(f"trace: {args.streams} streams, {calls:,} calls of 4 KiB, in {traces}")
        print(f"load average before: {os.getloadavg()[0]:.2f}; usable cores: {len(os.sched_getaffinity(0))}")
        rows: List[Tuple[str, float, Optional[float], int]] = []

        for processes in (1, 2):
            def run_replay() -> Tuple[float, float]:
                root = work / "root"
                shutil.rmtree(root, ignore_errors=True)
                started = time.perf_counter()
                summary = replay([str(traces)], ReplayOptions(root=str(root), threads=1), processes=processes)
                whole = time.perf_counter() - started
                assert summary.events_replayed == calls + 3 * args.streams, summary.events_replayed
                return summary.wall_seconds, whole

            phase, whole = best_of(args.repeat, run_replay)
            rows.append((f"greenpipe replay --timing asap --processes {processes} --threads 1", phase, whole, processes))

        peers: List[Tuple[str, Callable[[List[List[Call]], Files], None]]] = [
            ("plain loop of os.pread/os.pwrite (anchor)", plain_loop),
            ("gevent, one greenlet per stream, sleep(0) after each call", gevent_loop),
            ("asyncio, one task per stream, sleep(0) after each call", asyncio_loop),
        ]
        try:
            import trio  # noqa: F401

            peers.append(("trio, one task per stream, sleep(0) after each call", trio_loop))
        except ImportError:
            print("trio is not installed (pip install -e '.[bench]'); its row is left out")
        for name, loop in peers:
            def run_peer() -> Tuple[float, float]:
                folder = work / "peer"
                folder.mkdir()
                files = Files(folder, args.streams)
                try:
                    started = time.perf_counter()
                    loop(plans, files)
                    elapsed = time.perf_counter() - started
                finally:
                    files.close()
                    shutil.rmtree(folder, ignore_errors=True)
                return elapsed, elapsed

            elapsed, _ = best_of(args.repeat, run_peer)
            rows.append((name, elapsed, None, 1))

        anchor = next(row[1] for row in rows if "anchor" in row[0])
        print()
        print("| run | calls/s (replay phase) | calls/s (whole run) | per core | / anchor |")
        print("|---|---:|---:|---:|---:|")
        for name, phase, whole, cores in rows:
            rate = calls / phase
            whole_text = "" if whole is None else f"{calls / whole:,.0f}"
            print(f"| {name} | {rate:,.0f} | {whole_text} | {rate / cores:,.0f} | {anchor / phase:.2f} |")
        print()
        print(f"Target: at least {TARGET_PER_CORE:,} calls/s per core for the replay phase.")
        print(f"load average after: {os.getloadavg()[0]:.2f}")

        if args.profile:
            profile_replay(traces, work / "root-profile", args.profile)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
