"""Measure replay rates against a bare inflate-and-parse loop.

Usage::

    python bench/bench_replay.py [--copies 20] [--root /tmp/greenpipe-bench]

Reports, in one run on one machine:

* the bare loop: inflate every trace in 1 MiB steps, split lines and call
  ``orjson.loads`` on each, building nothing;
* ``--dry-run``: the replay pipeline with parse and decode only, and its
  rate relative to the bare loop;
* ``--timing asap`` with 1 and 2 workers on ``--copies`` copies of the
  newest-generation trace (74,362 events each), reads larger than 64 KiB
  filtered out because the full trace reads 18 GB, once per ``--order``
  mode. The copies use the same paths, so ``resource`` orders the calls
  of all copies against each other;
* the peak RSS of the process;
* the cost of ``--data`` and ``--verify`` on the asap path: a synthetic
  trace of 4 KiB ``pwrite`` and ``pread`` calls (4 streams, each on its
  own file) replayed with each data kind, into ``/dev/shm`` when it
  exists (tmpfs). ``--only-data`` prints this table alone;
* ``--timing asap`` with 1 worker while collecting the report's series
  (``--report``), then also writing the replay's trace to a ``.pfw.gz``
  (``--emit-trace``);
* the execute step alone (``StreamRunner.execute``) on ``--calls``
  alternating 4 KiB ``pwrite64``/``pread64`` calls in a root on tmpfs
  (``/dev/shm``), plain, collecting the series, and collecting them while
  emitting a ``.pfw.gz``: microseconds per call and the added cost.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import orjson

from greenpipe.replay import PathSandbox, ReplayContext, ReplayOptions, StreamRunner, StreamStats, prepare_root, replay
from greenpipe.replay._emit import TraceEmitter
from greenpipe.replay._pipeline import series_origin
from greenpipe.replay._series import SeriesCollector
from greenpipe.trace import Event

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
NEWEST = DATA / "anku94_dftracer" / "examples" / "dfanalyzer" / "test-trace.pfw.gz"


def bare_loop(files: list[Path]) -> int:
    lines = 0
    for path in files:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            data = b""
            pending = raw
            while pending:
                inflater = zlib.decompressobj(31)
                data += inflater.decompress(pending)
                pending = inflater.unused_data
        else:
            data = raw
        for line in data.split(b"\n"):
            line = line.strip()
            if line.startswith(b"{"):
                try:
                    orjson.loads(line)
                except orjson.JSONDecodeError:
                    pass
                lines += 1
    return lines


def write_io_trace(path: Path, calls_per_stream: int, streams: int = 4) -> int:
    """Write a trace of 4 KiB writes and reads; return its event count."""
    lines = [b"["]
    ts = 1_000_000
    for tid in range(1, streams + 1):
        name = f"/bench/file-{tid}.bin"

        def event(call: str, **args: object) -> bytes:
            nonlocal ts
            ts += 1
            record = {"id": ts, "name": call, "cat": "POSIX", "pid": 1, "tid": tid,
                      "ts": ts, "dur": 1, "ph": "X", "args": {"fname": name, **args}}
            return orjson.dumps(record)

        lines.append(event("open", flags=os.O_RDWR | os.O_CREAT, mode=0o644, ret=3))
        for number in range(calls_per_stream // 2):
            offset = (number % 1024) * 4096
            lines.append(event("pwrite", fd=3, count=4096, offset=offset, ret=4096))
            lines.append(event("pread", fd=3, count=4096, offset=offset, ret=4096))
        lines.append(event("close", fd=3, ret=0))
    path.write_bytes(b"\n".join(lines) + b"\n]")
    return len(lines) - 1


def data_table(parent: Path, calls_per_stream: int) -> None:
    """Print the asap replay rate of each --data kind and of --verify."""
    trace = parent / "io.pfw"
    events = write_io_trace(trace, calls_per_stream)
    shm = Path("/dev/shm")
    roots = Path(tempfile.mkdtemp(prefix="greenpipe-bench-", dir=shm if shm.is_dir() else parent))
    rows = [
        ("--data zero", {}),
        ("--data random:1", {"data": "random:1"}),
        ("--data pattern", {"data": "pattern"}),
        ("--verify", {"verify": True}),
    ]
    print(f"\n4 KiB pwrite+pread, {events:,} events, 4 streams, 1 worker, root in {roots.parent}")
    print(f"| {'data':<18} | {'replay s':>8} | {'events/s':>10} | {'vs zero':>7} |")
    print(f"|{'-' * 20}|{'-' * 10}:|{'-' * 12}:|{'-' * 9}:|")
    base = None
    try:
        for label, extra in rows:
            best = None
            for attempt in range(3):
                root = roots / f"{label.strip('-').replace(' ', '-').replace(':', '-')}-{attempt}"
                summary = replay([str(trace)], ReplayOptions(root=str(root), threads=1, **extra))
                assert summary.exit_code() == 0, summary.failed
                best = summary.wall_seconds if best is None else min(best, summary.wall_seconds)
                shutil.rmtree(root, ignore_errors=True)
            assert best is not None
            base = base or best
            print(f"| {label:<18} | {best:>8.3f} | {events / best:>10,.0f} | {best / base:>7.2f} |")
    finally:
        shutil.rmtree(roots, ignore_errors=True)
def hot_path(parent: Path, count: int, rounds: int = 3) -> None:
    """Time ``StreamRunner.execute`` per call, with and without the report's recording."""
    path = "/bench/data.bin"
    events = [Event("open64", "POSIX", 1, 1, 0, 1, "X", {"flags": 66, "mode": 420}, path)]
    for number in range(count):
        name = "pwrite64" if number % 2 == 0 else "pread64"
        offset = (number // 2 % 256) * 4096
        args = {"count": 4096, "offset": offset, "ret": 4096}
        events.append(Event(name, "POSIX", 1, 1, 10 + number * 10, 3, "X", args, path))
    events.append(Event("close", "POSIX", 1, 1, 10 + count * 10, 1, "X", {"ret": 0}, path))

    def run_once(label: str) -> float:
        root = parent / "hot-root"
        shutil.rmtree(root, ignore_errors=True)
        assert prepare_root(str(root)) is None
        with PathSandbox(str(root)) as sandbox:
            collector = SeriesCollector(series_origin(), {"bench": 0}) if label != "plain" else None
            emitter = TraceEmitter(str(parent / "hot.pfw.gz")) if "emit" in label else None
            context = ReplayContext(sandbox, series=collector, emitter=emitter)
            runner = StreamRunner(context, StreamStats("bench", 1, 1))
            started = time.perf_counter()
            for event in events:
                runner.execute(event)
            runner.finish()
            elapsed = time.perf_counter() - started
            context.close_all()
            if emitter is not None:
                emitter.close()
        shutil.rmtree(root, ignore_errors=True)
        return elapsed

    labels = ("plain", "series", "series + emit-trace")
    # Rounds alternate the three, and the fastest round of each counts, so
    # that other load on the machine distorts the comparison less.
    best = {label: float("inf") for label in labels}
    for _ in range(rounds):
        for label in labels:
            best[label] = min(best[label], run_once(label))
    plain = best["plain"] / len(events) * 1e6
    for label in labels:
        per_call = best[label] / len(events) * 1e6
        line = f"execute, {label}: {len(events):,} calls, best of {rounds}: {per_call:.2f} us per call"
        if label != "plain":
            line += f" ({per_call - plain:+.2f} us, {(per_call / plain - 1) * 100:+.0f} %)"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--orders", default="stream,resource,global", help="comma-separated --order modes to measure")
    parser.add_argument("--root", default=None, help="parent folder for replay roots (default: a new folder in /tmp)")
    parser.add_argument("--only-data", action="store_true", help="print only the table of --data kinds")
    parser.add_argument("--data-calls", type=int, default=50_000, help="data calls per stream of the --data table")
    parser.add_argument("--calls", type=int, default=200_000, help="data calls of the execute-step measurement")
    args = parser.parse_args()

    if args.only_data:
        parent = Path(args.root or tempfile.mkdtemp(prefix="greenpipe-bench-", dir="/tmp"))
        parent.mkdir(parents=True, exist_ok=True)
        try:
            data_table(parent, args.data_calls)
        finally:
            shutil.rmtree(parent, ignore_errors=True)
        return

    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    hot = Path(tempfile.mkdtemp(prefix="greenpipe-bench-hot-", dir=shm))
    try:
        hot_path(hot, args.calls)
    finally:
        shutil.rmtree(hot, ignore_errors=True)

    files = sorted(p for p in DATA.rglob("*") if p.name.endswith((".pfw", ".pfw.gz")))
    started = time.perf_counter()
    lines = bare_loop(files)
    bare = time.perf_counter() - started
    print(f"bare inflate+orjson loop: {lines:,} lines in {bare:.2f} s, {lines / bare:,.0f} lines/s")

    started = time.perf_counter()
    summary = replay([str(DATA)], ReplayOptions(dry_run=True, threads=2))
    dry = time.perf_counter() - started
    print(
        f"--dry-run (2 workers): {summary.events_seen:,} events in {dry:.2f} s, "
        f"{summary.events_seen / dry:,.0f} events/s, {bare / dry:.2f} x the bare loop"
    )

    parent = Path(args.root or tempfile.mkdtemp(prefix="greenpipe-bench-", dir="/tmp"))
    copies = parent / "copies"
    copies.mkdir(parents=True, exist_ok=True)
    for index in range(args.copies):
        target = copies / f"rank-{index:03d}.pfw.gz"
        if not target.exists():
            shutil.copyfile(NEWEST, target)
    print(f"{'order':<9} {'workers':>7} {'events':>10} {'replayed':>10} {'seconds':>8} "
          f"{'events/s':>10} {'replay s':>8} {'waits':>8} {'violations':>10}")
    for order in args.orders.split(","):
        for threads in (1, 2):
            root = parent / f"root-{order}-{threads}"
            shutil.rmtree(root, ignore_errors=True)
            options = ReplayOptions(root=str(root), threads=threads, max_size=65536, order=order)
            started = time.perf_counter()
            summary = replay([str(copies)], options)
            elapsed = time.perf_counter() - started
            violations = sum(summary.order["violations"].values())
            print(
                f"{order:<9} {threads:>7} {summary.events_seen:>10,} {summary.events_replayed:>10,} "
                f"{elapsed:>8.2f} {summary.events_seen / elapsed:>10,.0f} "
                f"{summary.wall_seconds:>8.2f} {summary.order['waits']:>8,} {violations:>10,}"
            )
            shutil.rmtree(root, ignore_errors=True)
    data_table(parent, args.data_calls)
    emitted = parent / "replay.pfw.gz"
    runs = [
        ("", 1, {}),
        (" + series", 1, {"series": True}),
        (" + series + emit-trace", 1, {"series": True, "emit_trace": str(emitted)}),
    ]
    for label, threads, extra in runs:
        root = parent / f"root-{threads}"
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        summary = replay(
            [str(copies)], ReplayOptions(root=str(root), threads=threads, max_size=65536, **extra)
        )
        elapsed = time.perf_counter() - started
        line = (
            f"--timing asap, {threads} worker(s){label}: {summary.events_seen:,} events "
            f"({summary.events_replayed:,} replayed) in {elapsed:.2f} s, "
            f"{summary.events_seen / elapsed:,.0f} events/s "
            f"(replay phase {summary.wall_seconds:.2f} s)"
        )
        print(line)
        shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(parent, ignore_errors=True)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {peak / 1024:,.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
