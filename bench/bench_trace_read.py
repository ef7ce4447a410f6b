"""Compare TraceReader.iter_events with a bare inflate-split-parse loop.

Run from the repository root::

    python bench/bench_trace_read.py [--repeat N] [FILE ...]

Without FILE arguments it reads the two largest traces in ``tests/data``.
For each file it times, in the same process and interleaved:

* ``bare zlib``: ``zlib.decompressobj`` in 1 MiB steps, restarting on each
  gzip member, ``bytes.split`` into lines, ``orjson.loads`` on every line;
* ``bare isal``: the same loop with ``isal.isal_zlib`` (when installed);
* ``iter_events``: ``TraceReader(path).iter_events()`` drained, with
  the variants ``inline`` (inflating in the calling thread), ``prefetch``
  (inflating in a reader thread), ``in task`` (inside ``greenpipe.run``)
  and ``pure Python`` (without the compiled fast path);
* ``iter_lines_json``: ``TraceReader(path).iter_lines_json()`` drained;
* ``iter_raw zlib`` and ``iter_raw isal``: inflating and line-aligning only,
  with each inflater (the second one only when isal is installed).

It prints the best of ``--repeat`` runs of each: the time, the rate in
lines per second, and the ratio of the ``iter_events`` rate to the rate of
each loop (time of the loop divided by time of ``iter_events``, since all
loops cover the same lines).

With ``--evict``, every timed run starts with the file dropped from the
page cache (``posix_fadvise(POSIX_FADV_DONTNEED)``, Linux), so each loop
reads it from the disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import zlib
from typing import Any, Callable, Dict, List, Optional

import orjson

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import greenpipe  # noqa: E402
from greenpipe.trace import TraceReader, _decode  # noqa: E402

try:
    from isal import isal_zlib
except ImportError:
    isal_zlib = None

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")
DEFAULT_FILES = [
    os.path.join(DATA, "anku94_dftracer", "examples", "dfanalyzer", "test-trace.pfw.gz"),
    os.path.join(
        DATA,
        "hariharan-devarajan_dftracer",
        "examples",
        "dfanalyzer",
        "test-trace-distributed",
        "test-trace-dist-1.pfw.gz",
    ),
]
STEP = 1024 * 1024


def bare_loop(path: str, inflater: Any) -> int:
    """Inflate, split and parse every line; return the number parsed."""
    loads = orjson.loads
    error = orjson.JSONDecodeError
    parsed = 0
    carry = b""
    with open(path, "rb") as stream:
        decompressor = inflater.decompressobj(31)
        while True:
            data = stream.read(STEP)
            if not data:
                break
            while data:
                block = decompressor.decompress(data, STEP)
                if decompressor.eof:
                    data = decompressor.unused_data
                    decompressor = inflater.decompressobj(31)
                else:
                    data = decompressor.unconsumed_tail
                lines = (carry + block).split(b"\n")
                carry = lines.pop()
                for line in lines:
                    try:
                        loads(line)
                    except error:
                        continue
                    parsed += 1
    try:
        loads(carry)
        parsed += 1
    except error:
        pass
    return parsed


def drain_events(path: str, prefetch: Optional[bool] = None) -> int:
    return sum(1 for _ in TraceReader(path, prefetch=prefetch).iter_events())


def drain_events_pure(path: str) -> int:
    """``iter_events`` with the compiled fast path turned off."""
    saved = _decode.PURE_PYTHON
    _decode.PURE_PYTHON = True
    try:
        return drain_events(path)
    finally:
        _decode.PURE_PYTHON = saved


def drain_dicts(path: str, prefetch: Optional[bool] = None) -> int:
    return sum(1 for _ in TraceReader(path, prefetch=prefetch).iter_lines_json())


def drain_events_in_task(path: str) -> int:
    def body(scope: Any) -> int:
        return sum(1 for _ in TraceReader(path, prefetch=True).iter_events())

    return greenpipe.run(body, threads=1)


def drain_raw(path: str, inflater: Any) -> int:
    reader = TraceReader(path)
    reader._inflater = inflater
    for _ in reader.iter_raw():
        pass
    return reader.statistics().files[0].lines


def evict(path: str) -> None:
    """Drop ``path`` from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def best_time(fn: Callable[[str], int], path: str, cold: bool = False) -> float:
    if cold:
        evict(path)
    start = time.perf_counter()
    fn(path)
    return time.perf_counter() - start


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", default=DEFAULT_FILES)
    parser.add_argument("--repeat", type=int, default=7, help="runs per loop")
    parser.add_argument(
        "--evict",
        action="store_true",
        help="drop each file from the page cache before every timed run (Linux)",
    )
    args = parser.parse_args(argv)

    loops: Dict[str, Callable[[str], int]] = {
        "bare zlib": lambda p: bare_loop(p, zlib),
    }
    if isal_zlib is not None:
        loops["bare isal"] = lambda p: bare_loop(p, isal_zlib)
    loops["iter_events"] = drain_events
    loops["iter_events inline"] = lambda p: drain_events(p, False)
    loops["iter_events prefetch"] = lambda p: drain_events(p, True)
    loops["iter_events in task"] = drain_events_in_task
    loops["iter_events pure Python"] = drain_events_pure
    loops["iter_lines_json"] = drain_dicts
    loops["iter_lines_json inline"] = lambda p: drain_dicts(p, False)
    loops["iter_raw zlib"] = lambda p: drain_raw(p, zlib)
    if isal_zlib is not None:
        loops["iter_raw isal"] = lambda p: drain_raw(p, isal_zlib)

    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, orjson {orjson.__version__}, "
        f"isal {'yes' if isal_zlib is not None else 'no'}, best of {args.repeat}"
        f"{', page cache dropped before each run' if args.evict else ''}"
    )
    print("| file | loop | items | ms | lines/s | iter_events rate / loop rate |")
    print("|---|---|---:|---:|---:|---:|")
    for path in args.files:
        counts = {name: fn(path) for name, fn in loops.items()}
        lines = drain_raw(path, zlib)
        times = {name: float("inf") for name in loops}
        for _ in range(args.repeat):
            for name, fn in loops.items():
                times[name] = min(times[name], best_time(fn, path, args.evict))
        for name in loops:
            print(
                f"| {os.path.basename(path)} | {name} | {counts[name]} | "
                f"{times[name] * 1e3:.1f} | {lines / times[name]:,.0f} | "
                f"{times[name] / times['iter_events']:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
