"""Compare greenpipe's runtime with asyncio, trio, gevent and a thread pool.

Run from the repository root::

    python bench/bench_runtime.py [--repeat N] [--tasks N] [--hash-tasks N]
        [--hash-mib N] [--json PATH]

Two benchmarks run in the same process, their peers interleaved within each
repeat, and each row reports the best of ``--repeat`` runs:

* ``spawn``: start ``--tasks`` trivial tasks (each returns ``None`` at once)
  and wait for all of them.

  - greenpipe with 1 and 2 worker threads: the root task body calls
    ``scope.spawn(noop)`` for every task, then ``scope.join_all()``. The
    ``spawn+join`` column times only that part of the body. The ``whole
    call`` column times the whole ``greenpipe.run`` call, which also starts
    and stops the worker threads.
  - asyncio: ``asyncio.create_task`` for every task, then
    ``asyncio.gather``; and the same with ``asyncio.TaskGroup`` where it
    exists (Python 3.11 and newer). ``whole call`` times ``asyncio.run``.
  - trio: ``nursery.start_soon`` for every task inside one nursery.
    ``whole call`` times ``trio.run``. Skipped when trio is not installed.
  - gevent: ``gevent.spawn`` for every task, then ``gevent.joinall``, from
    the main greenlet. There is no separate loop to start, so the two
    columns time the same thing.

* ``sha256``: ``--hash-tasks`` tasks each compute ``hashlib.sha256`` of the
  same ``--hash-mib`` MiB buffer. CPython's hashlib releases the GIL while it
  hashes large buffers, so worker threads can hash in parallel. greenpipe
  runs one task per hash in ``greenpipe.run(threads=1)`` and
  ``threads=2``; a ``concurrent.futures.ThreadPoolExecutor`` with 1 and 2
  threads is the reference. Times cover the whole ``greenpipe.run`` call and
  the whole ``with ThreadPoolExecutor(...)`` block, so thread start-up is
  included in both.

The garbage collector is left on, but ``gc.collect()`` runs before each
timed run so that one peer's garbage is not collected during another's.

The main thread's gevent hub is created before the first run. Every
``greenpipe.run`` call then waits for its root task in the same way, by
parking the main greenlet in that hub, whether or not the gevent peer ran
before it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import gevent  # noqa: E402

import greenpipe  # noqa: E402

try:
    import trio
except ImportError:
    trio = None

# The greenpipe spawn+join rate must be at least asyncio's
# create_task + gather rate, and two workers must hash at least this many
# times faster than one.
SPAWN_TARGET_RATIO = 1.0
HASH_TARGET_SPEEDUP = 1.6

# Each timed function returns (spawn+join seconds, whole call seconds).
Timing = Tuple[float, float]


# -- spawn + join --------------------------------------------------------


def noop_task(scope: Any) -> None:
    return None


def greenpipe_spawn_body(scope: Any, tasks: int) -> float:
    start = time.perf_counter()
    for _ in range(tasks):
        scope.spawn(noop_task)
    scope.join_all()
    return time.perf_counter() - start


def time_greenpipe_spawn(tasks: int, threads: int) -> Timing:
    start = time.perf_counter()
    inner = greenpipe.run(greenpipe_spawn_body, tasks, threads=threads)
    return inner, time.perf_counter() - start


async def noop_coroutine() -> None:
    return None


async def asyncio_gather_body(tasks: int) -> float:
    start = time.perf_counter()
    pending = [asyncio.create_task(noop_coroutine()) for _ in range(tasks)]
    await asyncio.gather(*pending)
    return time.perf_counter() - start


async def asyncio_task_group_body(tasks: int) -> float:
    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(tasks):
            group.create_task(noop_coroutine())
    return time.perf_counter() - start


def time_asyncio_gather(tasks: int) -> Timing:
    start = time.perf_counter()
    inner = asyncio.run(asyncio_gather_body(tasks))
    return inner, time.perf_counter() - start


def time_asyncio_task_group(tasks: int) -> Timing:
    start = time.perf_counter()
    inner = asyncio.run(asyncio_task_group_body(tasks))
    return inner, time.perf_counter() - start


async def trio_nursery_body(tasks: int) -> float:
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(noop_coroutine)
    return time.perf_counter() - start


def time_trio_nursery(tasks: int) -> Timing:
    start = time.perf_counter()
    inner = trio.run(trio_nursery_body, tasks)
    return inner, time.perf_counter() - start


def noop_function() -> None:
    return None


def time_gevent_spawn(tasks: int) -> Timing:
    start = time.perf_counter()
    greenlets = [gevent.spawn(noop_function) for _ in range(tasks)]
    gevent.joinall(greenlets)
    elapsed = time.perf_counter() - start
    return elapsed, elapsed


def spawn_peers(tasks: int) -> Dict[str, Callable[[], Timing]]:
    """Return the spawn+join peers available in this interpreter, by label."""
    peers: Dict[str, Callable[[], Timing]] = {
        "greenpipe threads=1": lambda: time_greenpipe_spawn(tasks, 1),
        "greenpipe threads=2": lambda: time_greenpipe_spawn(tasks, 2),
        "asyncio create_task+gather": lambda: time_asyncio_gather(tasks),
    }
    if hasattr(asyncio, "TaskGroup"):
        peers["asyncio TaskGroup"] = lambda: time_asyncio_task_group(tasks)
    if trio is not None:
        peers["trio nursery.start_soon"] = lambda: time_trio_nursery(tasks)
    peers["gevent spawn+joinall"] = lambda: time_gevent_spawn(tasks)
    return peers


# -- sha256 over large buffers -------------------------------------------


def hash_task(scope: Any, buffer: bytes) -> bytes:
    return hashlib.sha256(buffer).digest()


def greenpipe_hash_body(scope: Any, buffer: bytes, tasks: int) -> List[bytes]:
    futures = [scope.spawn(hash_task, buffer) for _ in range(tasks)]
    scope.join_all()
    return [future.result() for future in futures]


def hash_buffer(buffer: bytes) -> bytes:
    return hashlib.sha256(buffer).digest()


def time_greenpipe_hash(buffer: bytes, tasks: int, threads: int) -> float:
    start = time.perf_counter()
    digests = greenpipe.run(greenpipe_hash_body, buffer, tasks, threads=threads)
    elapsed = time.perf_counter() - start
    check_digests(digests, buffer, tasks)
    return elapsed


def time_pool_hash(buffer: bytes, tasks: int, threads: int) -> float:
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        digests = list(pool.map(hash_buffer, [buffer] * tasks))
    elapsed = time.perf_counter() - start
    check_digests(digests, buffer, tasks)
    return elapsed


def check_digests(digests: List[bytes], buffer: bytes, tasks: int) -> None:
    expected = hashlib.sha256(buffer).digest()
    matching = sum(1 for digest in digests if digest == expected)
    if len(digests) != tasks or matching != tasks:
        raise RuntimeError(
            f"expected {tasks} sha256 digests equal to {expected.hex()}, "
            f"got {len(digests)} digests of which {matching} match"
        )


class HashPeer(NamedTuple):
    workers: int
    baseline: str  # label of the same runner with one worker
    measure: Callable[[], float]


def hash_peers(buffer: bytes, tasks: int) -> Dict[str, HashPeer]:
    """Return the sha256 peers by label."""
    one_worker = "greenpipe threads=1"
    one_thread = "ThreadPoolExecutor 1 thread"
    return {
        one_worker: HashPeer(
            1, one_worker, lambda: time_greenpipe_hash(buffer, tasks, 1)
        ),
        "greenpipe threads=2": HashPeer(
            2, one_worker, lambda: time_greenpipe_hash(buffer, tasks, 2)
        ),
        one_thread: HashPeer(1, one_thread, lambda: time_pool_hash(buffer, tasks, 1)),
        "ThreadPoolExecutor 2 threads": HashPeer(
            2, one_thread, lambda: time_pool_hash(buffer, tasks, 2)
        ),
    }


# -- running and reporting -----------------------------------------------


def describe_machine() -> Dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    # This script imports greenpipe from the checkout it sits in, which may
    # differ from any commit, so the report names the commit and local edits.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        edited = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "greenpipe"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        source = commit + (" with uncommitted changes" if edited else "")
    except (OSError, subprocess.CalledProcessError):
        source = "unknown (not a git checkout)"

    versions = {}
    for package in ("greenpipe", "greenlet", "gevent", "trio"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        # Other processes on the same cores slow every peer and hide the
        # two-worker speed-up, so the report records how busy the machine was.
        "load_average_1min": os.getloadavg()[0],
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "system": f"{platform.system()} {platform.machine()}",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "greenpipe_source": source,
        "versions": versions,
    }


def read_busy_seconds() -> Optional[Tuple[float, float]]:
    """Return CPU seconds used by the whole machine and by this process.

    Returns ``None`` where ``/proc/stat`` does not exist (outside Linux).
    """
    try:
        with open("/proc/stat", encoding="utf-8") as stat:
            fields = stat.readline().split()
    except OSError:
        return None

    # The first line counts clock ticks per state: user, nice, system, idle,
    # iowait, irq, softirq, steal. Idle and iowait are not busy time.
    ticks = [int(value) for value in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_cpu_seconds(
    before: Optional[Tuple[float, float]], after: Optional[Tuple[float, float]]
) -> Optional[float]:
    """Return the CPU seconds that other processes used between two readings."""
    if before is None or after is None:
        return None
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1]))


def run_spawn(tasks: int, repeat: int) -> List[Dict[str, Any]]:
    peers = spawn_peers(tasks)
    best = {name: [float("inf"), float("inf")] for name in peers}
    for _ in range(repeat):
        for name, measure in peers.items():
            gc.collect()
            inner, whole = measure()
            best[name][0] = min(best[name][0], inner)
            best[name][1] = min(best[name][1], whole)

    return [
        {
            "peer": name,
            "tasks": tasks,
            "spawn_join_s": inner,
            "whole_call_s": whole,
            "spawn_join_tasks_per_s": tasks / inner,
            "whole_call_tasks_per_s": tasks / whole,
        }
        for name, (inner, whole) in best.items()
    ]


def run_hash(tasks: int, mib: int, repeat: int) -> List[Dict[str, Any]]:
    buffer = os.urandom(mib * 1024 * 1024)
    peers = hash_peers(buffer, tasks)
    best = {name: float("inf") for name in peers}
    for _ in range(repeat):
        for name, peer in peers.items():
            gc.collect()
            best[name] = min(best[name], peer.measure())

    rows = []
    for name, peer in peers.items():
        rows.append(
            {
                "peer": name,
                "workers": peer.workers,
                "tasks": tasks,
                "buffer_mib": mib,
                "seconds": best[name],
                "mib_per_s": tasks * mib / best[name],
                "speedup_vs_1": best[peer.baseline] / best[name],
            }
        )
    return rows


def check_targets(
    spawn_rows: List[Dict[str, Any]], hash_rows: List[Dict[str, Any]]
) -> List[Dict[str, Any]]:
    spawn = {row["peer"]: row for row in spawn_rows}
    reference = spawn["asyncio create_task+gather"]["spawn_join_tasks_per_s"]
    results = []
    for name in ("greenpipe threads=1", "greenpipe threads=2"):
        ratio = spawn[name]["spawn_join_tasks_per_s"] / reference
        results.append(
            {
                "target": f"{name} spawn+join rate >= asyncio create_task+gather",
                "value": ratio,
                "required": SPAWN_TARGET_RATIO,
                "met": ratio >= SPAWN_TARGET_RATIO,
            }
        )

    hash_speedups = {row["peer"]: row["speedup_vs_1"] for row in hash_rows}
    speedup = hash_speedups["greenpipe threads=2"]
    results.append(
        {
            "target": "greenpipe sha256 speed-up, threads=2 over threads=1",
            "value": speedup,
            "required": HASH_TARGET_SPEEDUP,
            "met": speedup >= HASH_TARGET_SPEEDUP,
        }
    )
    return results


def print_report(
    machine: Dict[str, Any],
    spawn_rows: List[Dict[str, Any]],
    hash_rows: List[Dict[str, Any]],
    targets: List[Dict[str, Any]],
    repeat: int,
) -> None:
    versions = ", ".join(
        f"{name} {version}" for name, version in machine["versions"].items() if version
    )
    print(
        f"# {machine['python']}, {machine['system']}, {machine['cores']} cores "
        f"({machine['cpu']}), {versions}; best of {repeat}"
    )
    print(f"# greenpipe source: {machine['greenpipe_source']}")
    print(
        "# load average over the last minute before the run: "
        f"{machine['load_average_1min']:.2f}"
    )
    for section, seconds in machine["other_cpu_seconds"].items():
        if seconds is not None:
            print(
                f"# CPU time used by other processes during the {section} "
                f"benchmark: {seconds:.2f} s"
            )
    if trio is None:
        print("# trio is not installed, so its row is skipped (pip install trio)")

    print()
    print(f"## spawn + join of {spawn_rows[0]['tasks']:,} trivial tasks")
    print()
    print(
        "| peer | spawn+join ms | spawn+join tasks/s "
        "| whole call ms | whole call tasks/s |"
    )
    print("|---|---:|---:|---:|---:|")
    for row in spawn_rows:
        print(
            f"| {row['peer']} | {row['spawn_join_s'] * 1e3:.1f} | "
            f"{row['spawn_join_tasks_per_s']:,.0f} | {row['whole_call_s'] * 1e3:.1f} | "
            f"{row['whole_call_tasks_per_s']:,.0f} |"
        )

    first = hash_rows[0]
    print()
    print(
        f"## sha256: {first['tasks']} tasks, each hashing one "
        f"{first['buffer_mib']} MiB buffer"
    )
    print()
    print("| peer | workers | s | MiB/s | speed-up over 1 worker |")
    print("|---|---:|---:|---:|---:|")
    for row in hash_rows:
        print(
            f"| {row['peer']} | {row['workers']} | {row['seconds']:.3f} | "
            f"{row['mib_per_s']:,.0f} | {row['speedup_vs_1']:.2f} |"
        )

    print()
    print("## targets")
    print()
    print("| target | measured | required | met |")
    print("|---|---:|---:|---|")
    for target in targets:
        print(
            f"| {target['target']} | {target['value']:.2f} | "
            f">= {target['required']:.2f} | {'yes' if target['met'] else 'no'} |"
        )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed runs of each peer; the best counts"
    )
    parser.add_argument(
        "--tasks", type=int, default=100_000, help="tasks per spawn+join run"
    )
    parser.add_argument(
        "--hash-tasks", type=int, default=64, help="tasks per sha256 run"
    )
    parser.add_argument(
        "--hash-mib", type=int, default=8, help="size of the hashed buffer in MiB"
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results as JSON to PATH"
    )
    args = parser.parse_args(argv)
    for option in ("repeat", "tasks", "hash_tasks", "hash_mib"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1.")

    machine = describe_machine()
    gevent.get_hub()
    # The CPU time that other processes used during a section shows whether
    # the section shared the cores, which taking the best of N cannot undo.
    start = read_busy_seconds()
    spawn_rows = run_spawn(args.tasks, args.repeat)
    middle = read_busy_seconds()
    hash_rows = run_hash(args.hash_tasks, args.hash_mib, args.repeat)
    end = read_busy_seconds()
    machine["other_cpu_seconds"] = {
        "spawn": other_cpu_seconds(start, middle),
        "sha256": other_cpu_seconds(middle, end),
    }
    targets = check_targets(spawn_rows, hash_rows)
    print_report(machine, spawn_rows, hash_rows, targets, args.repeat)

    if args.json:
        report = {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "repeat": args.repeat,
            "machine": machine,
            "spawn": spawn_rows,
            "sha256": hash_rows,
            "targets": targets,
        }
        with open(args.json, "w", encoding="utf-8") as output:
            json.dump(report, output, indent=2)
            output.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
