"""Measure how closely ``greenpipe replay --timing original`` keeps a schedule.

Usage::

    python bench/bench_timing.py [--seconds 60] [--rate 20000] [--streams 8]
                                 [--processes 1] [--threads 1] [--parent /dev/shm]
                                 [--skip-peers] [--peer-spin]

Writes a synthetic trace in a temporary folder under ``--parent`` (a tmpfs,
so that the file system adds no noise): ``--streams`` traced threads, each
with its own trace file, issuing 4 KiB ``pread`` and ``pwrite`` calls in
turn over 3 files of its own, ``--rate`` calls per second in all, for
``--seconds`` seconds. Then it replays the trace with ``--timing original``
into a root on the same tmpfs and prints, from the replay's summary, the
replayer lateness (p50, p99, max), the busy lateness (p99), the elapsed
error and the drift, next to the targets: p50 <= 100 us, p99 <= 1 ms,
elapsed within 0.5 % (or 10 ms) of the traced span, drift <= 1 ms.

The same open-loop schedule, with the same calls on the same kind of
files, is then run by loops written directly on gevent, asyncio and trio:
one task per stream that sleeps until each call is due, then issues it.
They report the same numbers. greenpipe sleeps until 2 ms before a due
time and yields until it passes; the peers use their plain sleep, and
with ``--peer-spin`` also the same sleep-then-yield scheme.

Lateness is the start of a call minus its due time. The part during which
the stream's previous call was still running counts as busy, the rest as
the replayer's. Drift is the median replayer lateness of the calls in the
last 1 % of the traced span minus that of the calls in the first 1 %.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from greenpipe.replay import ReplayOptions, replay

#: Traced start of the synthetic trace, in microseconds since the epoch.
BASE_US = 1_700_000_000_000_000
BLOCK = 4096
FILES_PER_STREAM = 3
#: Blocks per file: reads and writes wrap around this extent.
BLOCKS_PER_FILE = 256

TARGET_P50 = 100e-6
TARGET_P99 = 1e-3
TARGET_DRIFT = 1e-3

#: One call of the schedule: seconds from the start, True for a write,
#: index of the file within the stream, byte offset.
Call = Tuple[float, bool, int, int]


def tmpfs_of(path: str) -> Optional[str]:
    """Return the tmpfs mount point that contains ``path``, or ``None``."""
    real = os.path.realpath(path)
    best: Optional[Tuple[str, str]] = None
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            point, kind = fields[1], fields[2]
            if real == point or real.startswith(point.rstrip("/") + "/"):
                if best is None or len(point) > len(best[0]):
                    best = (point, kind)
    if best is not None and best[1] == "tmpfs":
        return best[0]
    return None


def schedule(seconds: float, rate: int, streams: int) -> List[List[Call]]:
    """Return each stream's calls: evenly spaced, streams interleaved."""
    per_stream = rate / streams
    gap = 1.0 / per_stream
    count = int(seconds * per_stream)
    plans = []
    for stream in range(streams):
        calls = []
        shift = stream * gap / streams
        for number in range(count):
            at = shift + number * gap
            block = (number * 7 + stream) % BLOCKS_PER_FILE
            calls.append((at, number % 2 == 1, number % FILES_PER_STREAM, block * BLOCK))
        plans.append(calls)
    return plans


def write_traces(folder: Path, plans: Sequence[List[Call]]) -> int:
    """Write one trace file per stream; return the number of events."""
    events = 0
    for stream, calls in enumerate(plans):
        pid = 1000 + stream
        names = [f"/data/s{stream}/f{index}" for index in range(FILES_PER_STREAM)]
        lines = ["["]
        for index, name in enumerate(names):
            lines.append(
                f'{{"id":{index},"name":"open","cat":"POSIX","pid":{pid},"tid":{pid},'
                f'"ts":{BASE_US - 1000 + index},"dur":1,"ph":"X","args":{{"fname":"{name}",'
                f'"flags":66,"mode":420,"ret":{3 + index}}}}}'
            )
        for number, (at, write, index, offset) in enumerate(calls):
            ts = BASE_US + round(at * 1e6)
            call = "pwrite" if write else "pread"
            lines.append(
                f'{{"id":{number + 10},"name":"{call}","cat":"POSIX","pid":{pid},"tid":{pid},'
                f'"ts":{ts},"dur":5,"ph":"X","args":{{"fname":"{names[index]}","fd":{3 + index},'
                f'"count":{BLOCK},"offset":{offset},"ret":{BLOCK}}}}}'
            )
        lines.append("]")
        (folder / f"rank-{stream:02d}.pfw").write_text("\n".join(lines) + "\n")
        events += len(calls) + len(names)
    return events


# -- results --------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class Row:
    """The numbers of one runner, from a greenpipe summary or a peer loop."""

    def __init__(
        self, name: str, events: int, p50: float, p99: float, maximum: float,
        busy_p99: float, elapsed: float, expected: float, drift: Optional[float], note: str = "",
    ) -> None:
        self.name = name
        self.events = events
        self.p50 = p50
        self.p99 = p99
        self.maximum = maximum
        self.busy_p99 = busy_p99
        self.elapsed = elapsed
        self.expected = expected
        self.drift = drift
        self.note = note

    def error(self) -> float:
        return self.elapsed - self.expected

    def meets(self) -> Dict[str, bool]:
        allowed = max(0.005 * self.expected, 0.010)
        return {
            "p50": self.p50 <= TARGET_P50,
            "p99": self.p99 <= TARGET_P99,
            "elapsed": abs(self.error()) <= allowed,
            "drift": self.drift is not None and abs(self.drift) <= TARGET_DRIFT,
        }


def row_from_samples(
    name: str, samples: List[Tuple[float, float, float]], elapsed: float, expected: float, span: float
) -> Row:
    """Build a row from ``(scheduled offset, replayer lateness, busy)`` samples."""
    replayer = [late for _, late, _ in samples]
    busy = [b for _, _, b in samples]
    margin = span / 100
    head = [late for at, late, _ in samples if at <= margin]
    tail = [late for at, late, _ in samples if at >= span - margin]
    drift = percentile(tail, 0.5) - percentile(head, 0.5) if head and tail else None
    return Row(
        name, len(samples), percentile(replayer, 0.5), percentile(replayer, 0.99),
        max(replayer, default=0.0), percentile(busy, 0.99), elapsed, expected, drift,
    )


# -- greenpipe --------------------------------------------------------------------


def run_greenpipe(traces: Path, root: Path, processes: int, threads: int) -> Row:
    options = ReplayOptions(root=str(root), timing="original", threads=threads)
    # The command line moves what exists at start-up out of the collector's
    # reach. This does the same, because otherwise every full collection
    # would also walk this process's schedule of a million calls.
    gc.collect()
    gc.freeze()
    try:
        summary = replay([str(traces)], options, processes=processes)
    finally:
        gc.unfreeze()
    timing = summary.timing
    replayer = timing["lateness"]["replayer"]
    busy = timing["lateness"]["busy"]
    note = f"{summary.events_failed} failed" if summary.events_failed else ""
    return Row(
        f"greenpipe ({processes} process{'es' if processes > 1 else ''}, {threads} thread{'s' if threads > 1 else ''})",
        replayer["count"], replayer["p50_s"], replayer["p99_s"], replayer["max_s"],
        busy["p99_s"], timing["elapsed_s"], timing["expected_s"], timing["drift_s"], note,
    )


# -- peers: the same schedule on gevent, asyncio and trio -------------------------------


SPIN = 0.002


class Files:
    """The real files of every stream, opened for reading and writing."""

    def __init__(self, folder: Path, streams: int) -> None:
        self.fds: List[List[int]] = []
        for stream in range(streams):
            row = []
            for index in range(FILES_PER_STREAM):
                path = folder / f"s{stream}-f{index}"
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                os.ftruncate(fd, BLOCKS_PER_FILE * BLOCK)
                row.append(fd)
            self.fds.append(row)

    def close(self) -> None:
        for row in self.fds:
            for fd in row:
                os.close(fd)


def issue(fds: List[int], buffer: bytearray, data: bytes, write: bool, index: int, offset: int) -> None:
    if write:
        os.pwrite(fds[index], data, offset)
    else:
        os.preadv(fds[index], [buffer], offset)


def run_stream_sync(
    calls: List[Call], fds: List[int], t0: float, sleep: Callable[[float], None], spin: bool,
    samples: List[Tuple[float, float, float]],
) -> float:
    """One stream of the gevent loop; returns the end of its last call."""
    buffer = bytearray(BLOCK)
    data = bytes(BLOCK)
    clock = time.monotonic
    previous_start = previous_end = 0.0
    for at, write, index, offset in calls:
        due = t0 + at
        delay = due - clock()
        if delay > 0:
            if spin:
                if delay > SPIN:
                    sleep(delay - SPIN)
                while clock() < due:
                    sleep(0)
            else:
                sleep(delay)
        start = clock()
        late = start - due if start > due else 0.0
        busy = min(previous_end - max(due, previous_start), late) if previous_end > due else 0.0
        samples.append((at, late - busy, busy))
        previous_start = start
        issue(fds, buffer, data, write, index, offset)
        previous_end = clock()
    return previous_end


def run_gevent(plans: List[List[Call]], files: Files, spin: bool) -> Tuple[List[Any], float, float]:
    import gevent

    samples: List[Tuple[float, float, float]] = []
    t0 = time.monotonic() + 0.05
    tasks = [
        gevent.spawn(run_stream_sync, calls, files.fds[n], t0, gevent.sleep, spin, samples)
        for n, calls in enumerate(plans)
    ]
    gevent.joinall(tasks)
    return samples, t0, max(task.value for task in tasks)


async def _async_stream(
    calls: List[Call], fds: List[int], t0: float, sleep: Any, spin: bool,
    samples: List[Tuple[float, float, float]],
) -> float:
    buffer = bytearray(BLOCK)
    data = bytes(BLOCK)
    clock = time.monotonic
    previous_start = previous_end = 0.0
    for at, write, index, offset in calls:
        due = t0 + at
        delay = due - clock()
        if delay > 0:
            if spin:
                if delay > SPIN:
                    await sleep(delay - SPIN)
                while clock() < due:
                    await sleep(0)
            else:
                await sleep(delay)
        start = clock()
        late = start - due if start > due else 0.0
        busy = min(previous_end - max(due, previous_start), late) if previous_end > due else 0.0
        samples.append((at, late - busy, busy))
        previous_start = start
        issue(fds, buffer, data, write, index, offset)
        previous_end = clock()
    return previous_end


def run_asyncio(plans: List[List[Call]], files: Files, spin: bool) -> Tuple[List[Any], float, float]:
    import asyncio

    samples: List[Tuple[float, float, float]] = []
    t0 = time.monotonic() + 0.05

    async def main() -> float:
        ends = await asyncio.gather(
            *(_async_stream(calls, files.fds[n], t0, asyncio.sleep, spin, samples) for n, calls in enumerate(plans))
        )
        return max(ends)

    end = asyncio.run(main())
    return samples, t0, end


def run_trio(plans: List[List[Call]], files: Files, spin: bool) -> Tuple[List[Any], float, float]:
    import trio

    samples: List[Tuple[float, float, float]] = []
    t0 = time.monotonic() + 0.05
    ends: List[float] = []

    async def one(n: int, calls: List[Call]) -> None:
        ends.append(await _async_stream(calls, files.fds[n], t0, trio.sleep, spin, samples))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for n, calls in enumerate(plans):
                nursery.start_soon(one, n, calls)

    trio.run(main)
    return samples, t0, max(ends)


# -- the run ---------------------------------------------------------------------


def print_table(rows: List[Row]) -> None:
    print()
    print("| runner | calls | lateness p50 | p99 | max | busy p99 | elapsed error | drift | meets targets |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        meets = row.meets()
        missed = [name for name, ok in meets.items() if not ok]
        verdict = "all" if not missed else "misses " + ", ".join(missed)
        drift = "n/a" if row.drift is None else f"{row.drift * 1e6:+,.0f} us"
        note = f" ({row.note})" if row.note else ""
        print(
            f"| {row.name}{note} | {row.events:,} | {row.p50 * 1e6:,.0f} us | {row.p99 * 1e6:,.0f} us "
            f"| {row.maximum * 1e3:,.1f} ms | {row.busy_p99 * 1e6:,.0f} us "
            f"| {row.error() * 1e3:+,.1f} ms ({row.error() / row.expected * 100:+.2f} %) | {drift} | {verdict} |"
        )
    print()
    print(
        "Targets: replayer lateness p50 <= 100 us, p99 <= 1 ms; elapsed within 0.5 % "
        "(or 10 ms) of the traced span; drift <= 1 ms."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="traced span in seconds (default 60)")
    parser.add_argument("--rate", type=int, default=20_000, help="calls per second, all streams together (default 20000)")
    parser.add_argument("--streams", type=int, default=8, help="traced threads (default 8)")
    parser.add_argument("--processes", type=int, default=1, help="worker processes of the greenpipe replay (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="worker threads per process of the greenpipe replay (default 1)")
    parser.add_argument("--parent", default="/dev/shm", help="tmpfs folder for the trace and the roots (default /dev/shm)")
    parser.add_argument("--skip-peers", action="store_true", help="replay with greenpipe only")
    parser.add_argument("--peer-spin", action="store_true", help="also run each peer with greenpipe's sleep-then-yield scheme")
    args = parser.parse_args()

    if tmpfs_of(args.parent) is None:
        print(
            f"{args.parent} is not on a tmpfs, so the file system would dominate the timing. "
            "Give --parent a folder on a tmpfs (see 'findmnt -t tmpfs').",
            file=sys.stderr,
        )
        return 1
    work = Path(tempfile.mkdtemp(prefix="greenpipe-timing-", dir=args.parent))
    try:
        plans = schedule(args.seconds, args.rate, args.streams)
        traces = work / "traces"
        traces.mkdir()
        started = time.perf_counter()
        events = write_traces(traces, plans)
        span = max(calls[-1][0] for calls in plans if calls)
        print(
            f"trace: {args.streams} streams, {events:,} events over {span:.1f} s "
            f"({args.rate:,} calls/s), written in {time.perf_counter() - started:.1f} s to {traces}"
        )
        print(f"load average before: {os.getloadavg()[0]:.2f}")

        rows = [run_greenpipe(traces, work / "root", args.processes, args.threads)]
        shutil.rmtree(work / "root", ignore_errors=True)
        print(f"greenpipe done; load average {os.getloadavg()[0]:.2f}")

        if not args.skip_peers:
            # A peer's expected time runs from its first data call to the
            # traced end (5 us later) of its last one.
            expected = span + 5e-6
            peers: List[Tuple[str, Callable[..., Tuple[List[Any], float, float]]]] = [
                ("gevent", run_gevent), ("asyncio", run_asyncio)
            ]
            try:
                import trio  # noqa: F401

                peers.append(("trio", run_trio))
            except ImportError:
                print("trio is not installed (pip install -e '.[bench]'); its row is left out")
            variants = [False, True] if args.peer_spin else [False]
            for name, runner in peers:
                for spin in variants:
                    folder = work / f"peer-{name}"
                    folder.mkdir()
                    files = Files(folder, args.streams)
                    gc.collect()
                    try:
                        samples, t0, end = runner(plans, files, spin)
                    finally:
                        files.close()
                        shutil.rmtree(folder, ignore_errors=True)
                    label = f"{name} (sleep then yield)" if spin else f"{name} (plain sleep)"
                    rows.append(row_from_samples(label, samples, end - t0, expected, span))
                    print(f"{label} done; load average {os.getloadavg()[0]:.2f}")
        print_table(rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
