"""Measure trace throughput on many copies of the newest-generation trace.

Run from the repository root::

    python bench/bench_trace_scale.py [--copies 20] [--repeat 3] [--json PATH]

It copies ``tests/data/anku94_dftracer/examples/dfanalyzer/test-trace.pfw.gz``
(DFTracer 1.0.15, two gzip members, 74,362 events) ``--copies`` times into
a temporary folder, compressed as shipped, and measures, each in a fresh
Python process so that every peak RSS belongs to one measurement:

* ``bare loop``: inflate each file in 1 MiB steps (with ``isal`` when
  installed, else ``zlib``), split lines, ``orjson.loads`` each line, and
  keep nothing. It is timed inside the process, so interpreter start is
  left out;
* ``bare loop, 2 processes``: two such loops started at once, each over
  every other file, timed from the start of both processes to the end of
  the last, as the replay rows are. It bounds what two processes that
  parse every line with orjson can reach;
* ``iter_events``: ``TraceReader(folder).iter_events()`` drained, timed
  inside the process the same way;
* ``replay --dry-run`` with ``--processes 1`` and ``--processes 2``: the
  command run with :mod:`subprocess`, timed from process start to the
  summary on standard output;
* ``replay --dry-run`` of one file, with ``--processes 1`` and
  ``--processes 2``: the same copies concatenated into one ``.pfw.gz``
  file of ``2 * --copies`` gzip members, which the two-process run splits
  at a member boundary;
* ``replay --timing asap`` with ``--processes 1`` and ``--processes 2``
  into a temporary root, also timed from process start to summary. Reads
  and writes above 64 KiB are filtered out (``--max-size 65536``) because
  each copy of the trace reads 18 GB in full.

Rates are in events per second, where the events of a loop are what that
loop counts: JSON lines parsed for the bare loop (metadata lines
included), decoded events for the others. Each row is the best of
``--repeat`` runs. Peak RSS is ``VmHWM`` of the measured process. For the
replay commands it is the largest among the main process and its
workers, as reported in ``--json``. The last column compares each rate
with 1.69 million events/s, the rate of the C++ ``dftracer_replay
--dry-run`` (single-thread version from the dftracer-utils sources) on
the same 20 copies uncompressed, measured on a 2-core machine.

Before measuring, it writes the bytecode caches of greenpipe and of this
folder, which an installed package has, so that no row pays for
compiling modules at start.

The default run takes about two minutes on 2 cores. Run it on an otherwise
idle machine: other processes on the same cores slow every row, and the
two-process rows most of all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEWEST = os.path.join(REPO, "tests", "data", "anku94_dftracer", "examples", "dfanalyzer", "test-trace.pfw.gz")
#: Events per second of the C++ dftracer_replay --dry-run on 20 copies.
CPP_ANCHOR = 1.69e6
STEP = 1024 * 1024


def vm_hwm_bytes() -> int:
    """Return the peak resident set size of this process, in bytes."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# -- loops run inside a child process ---------------------------------------------


def bare_loop(folder: str, share: int = 0, shares: int = 1) -> Tuple[int, str]:
    """Inflate, split and parse every line of every file; return the count and inflater.

    With ``shares`` above 1, only every ``shares``-th file from number
    ``share`` on is read.
    """
    # The same loop as bench_trace_read.py, which sits beside this script.
    from bench_trace_read import bare_loop as bare_file_loop

    try:
        from isal import isal_zlib as inflater

        name = "isal"
    except ImportError:
        import zlib as inflater

        name = "zlib"
    parsed = 0
    for entry in sorted(os.listdir(folder))[share::shares]:
        parsed += bare_file_loop(os.path.join(folder, entry), inflater)
    return parsed, name


def iter_events(folder: str) -> Tuple[int, str]:
    from greenpipe.trace import TraceReader

    return sum(1 for _ in TraceReader(folder).iter_events()), ""


def run_inner(loop: str, folder: str) -> None:
    """Run one loop and print its count, seconds and peak RSS as JSON."""
    started = time.perf_counter()
    if loop.startswith("bare-share-"):
        count, note = bare_loop(folder, int(loop[len("bare-share-"):]), 2)
    else:
        count, note = {"bare": bare_loop, "iter_events": iter_events}[loop](folder)
    seconds = time.perf_counter() - started
    print(json.dumps({"events": count, "seconds": seconds, "peak_rss": vm_hwm_bytes(), "note": note}))


# -- measurements from the parent ---------------------------------------------------


def measure_loop(loop: str, folder: str) -> Dict[str, Any]:
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--inner", loop, folder],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(result.stdout)


def measure_two_bare_loops(folder: str) -> Dict[str, Any]:
    """Run two bare loops at once, each over half the files, timed from process start."""
    started = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--inner", f"bare-share-{share}", folder],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for share in (0, 1)
    ]
    outputs = [child.communicate()[0] for child in children]
    seconds = time.perf_counter() - started
    if any(child.returncode for child in children):
        raise SystemExit("a bare loop process failed")
    results = [json.loads(output) for output in outputs]
    return {
        "events": sum(result["events"] for result in results),
        "seconds": seconds,
        "peak_rss": max(result["peak_rss"] for result in results),
        "note": f"{results[0]['note']}, 2 processes, from process start",
    }


def measure_replay(arguments: List[str], trace: str, work: str) -> Dict[str, Any]:
    summary = os.path.join(work, "summary.json")
    command = [
        sys.executable, "-m", "greenpipe", "replay", trace, *arguments,
        "--quiet", "--json", summary,
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if completed.returncode not in (0, 2):
        raise SystemExit(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr}")
    with open(summary, encoding="utf-8") as stream:
        data = json.load(stream)
    return {
        "events": data["events_seen"],
        "seconds": seconds,
        "peak_rss": max(row["peak_rss_bytes"] for row in data["processes"]),
        "note": f"{len(data['processes'])} process(es), replayed {data['events_replayed']:,}",
    }


def compile_bytecode() -> None:
    """Write the bytecode caches of greenpipe and of this folder.

    An installed package has them, and Python writes them at the first
    import unless ``PYTHONDONTWRITEBYTECODE`` is set or the folder is
    read-only. Without them every process compiles each module again at
    its start, which costs the command about 70 ms on 2 cores.
    """
    import compileall

    for folder in (os.path.join(REPO, "greenpipe"), os.path.dirname(os.path.abspath(__file__))):
        compileall.compile_dir(folder, quiet=1)


def build_input(folder: str, copies: int) -> None:
    for number in range(copies):
        shutil.copyfile(NEWEST, os.path.join(folder, f"rank-{number:03d}.pfw.gz"))


def build_one_file(path: str, copies: int) -> None:
    """Concatenate ``copies`` of the trace into one multi-member gzip file."""
    with open(NEWEST, "rb") as stream:
        data = stream.read()
    with open(path, "wb") as stream:
        for _ in range(copies):
            stream.write(data)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20, help="copies of the trace (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the best is kept (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write every number to PATH")
    parser.add_argument("--inner", nargs=2, metavar=("LOOP", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        run_inner(*args.inner)
        return 0
    if args.copies < 1 or args.repeat < 1:
        parser.error("--copies and --repeat must be 1 or more")

    compile_bytecode()
    rows: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="greenpipe-bench-") as work:
        folder = os.path.join(work, "traces")
        os.mkdir(folder)
        build_input(folder, args.copies)
        one_file = os.path.join(work, "all-copies.pfw.gz")
        build_one_file(one_file, args.copies)
        root = os.path.join(work, "root")
        cases = [
            ("bare loop", lambda: measure_loop("bare", folder)),
            ("bare loop, 2 processes", lambda: measure_two_bare_loops(folder)),
            ("iter_events", lambda: measure_loop("iter_events", folder)),
            ("replay --dry-run --processes 1", lambda: measure_replay(["--dry-run", "--processes", "1"], folder, work)),
            ("replay --dry-run --processes 2", lambda: measure_replay(["--dry-run", "--processes", "2"], folder, work)),
            (
                "replay --dry-run --processes 1, one file",
                lambda: measure_replay(["--dry-run", "--processes", "1"], one_file, work),
            ),
            (
                "replay --dry-run --processes 2, one file",
                lambda: measure_replay(["--dry-run", "--processes", "2"], one_file, work),
            ),
        ]
        for processes in ("1", "2"):
            arguments = ["--root", root, "--timing", "asap", "--max-size", "65536", "--processes", processes]

            def asap(arguments: List[str] = arguments) -> Dict[str, Any]:
                shutil.rmtree(root, ignore_errors=True)
                return measure_replay(arguments, folder, work)

            cases.append((f"replay --timing asap --processes {processes}", asap))

        for _ in range(args.repeat):
            for name, measure in cases:
                result = measure()
                best = rows.get(name)
                if best is None or result["seconds"] < best["seconds"]:
                    rows[name] = result

    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"{len(os.sched_getaffinity(0))} usable cores, {args.copies} copies of "
        f"{os.path.basename(NEWEST)}, best of {args.repeat}"
    )
    print("| run | events | s | events/s | peak RSS MiB | rate / C++ anchor | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, row in rows.items():
        rate = row["events"] / row["seconds"]
        row["events_per_second"] = rate
        print(
            f"| {name} | {row['events']:,} | {row['seconds']:.2f} | {rate:,.0f} | "
            f"{row['peak_rss'] / 2**20:.1f} | {rate / CPP_ANCHOR:.2f} | {row['note']} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump({"copies": args.copies, "repeat": args.repeat, "rows": rows}, stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
