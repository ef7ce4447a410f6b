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
* the peak RSS of the process.
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

from greenpipe.replay import ReplayOptions, replay

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--orders", default="stream,resource,global", help="comma-separated --order modes to measure")
    parser.add_argument("--root", default=None, help="parent folder for replay roots (default: a new folder in /tmp)")
    args = parser.parse_args()

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
    shutil.rmtree(parent, ignore_errors=True)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {peak / 1024:,.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
