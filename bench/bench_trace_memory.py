"""Measure the peak RSS of TraceReader on a large synthetic gzip trace.

Run from the repository root::

    python bench/bench_trace_memory.py [--size-mib 1024] [--budget-mib 128]
        [--file /tmp/greenpipe-synthetic-1024MiB.pfw.gz] [--keep]

The script writes a synthetic DFTracer 1.0.15-style trace (hex hashes,
``FH``/``HH`` metadata, POSIX and application events, one gzip member per
64 MiB of text, like writers that flush per buffer) of ``--size-mib``
uncompressed, unless the file exists already. Then, for each iterator and
for ``prefetch`` on and off, it starts a fresh Python process that drains
the iterator with ``memory_budget`` set to ``--budget-mib``. Each row shows
that process's peak RSS (``VmHWM`` from ``/proc/self/status``), its RSS
after the imports, the rate and the item count. The exit status is 0 when
every peak RSS stays under the budget plus 100 MiB.

The file is deleted at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MIB = 1024 * 1024
#: Uncompressed bytes per gzip member.
MEMBER_BYTES = 64 * MIB
#: Allowed peak RSS above the budget.
HEADROOM = 100 * MIB

FILE_COUNT = 64
HOST_HASH = "2dbbcec2c820dc4c"
POSIX_EVENT = (
    '{"id":%d,"name":"%s","cat":"POSIX","pid":%d,"tid":%d,"ts":%d,"dur":%d,'
    '"ph":"X","args":{"hhash":"' + HOST_HASH + '","p_idx":%d,"level":3,'
    '"fhash":"%016x","size":%d,"offset":%d,"ret":%d}}\n'
)
APP_EVENT = (
    '{"id":%d,"name":"TorchDataset.__getitem__","cat":"dlio_benchmark",'
    '"pid":%d,"tid":%d,"ts":%d,"dur":%d,"ph":"X","args":{"hhash":"'
    + HOST_HASH
    + '","p_idx":%d,"level":2,"image_idx":%d,"epoch":1}}\n'
)
CALLS = ("read", "pread64", "write", "lseek64", "open64", "close")


def file_hash(index: int) -> int:
    return 0x5EED0000_00000000 + index * 0x9E3779B97F4A7C15 % (1 << 60)


def metadata_text() -> str:
    lines = [
        "[\n",
        '{"id":1,"name":"HH","cat":"dftracer","pid":1000,"tid":1000,"ph":"M",'
        '"args":{"hhash":"%s","name":"node01","value":"%s"}}\n' % (HOST_HASH, HOST_HASH),
    ]
    for index in range(FILE_COUNT):
        lines.append(
            '{"id":%d,"name":"FH","cat":"dftracer","pid":1000,"tid":1000,"ph":"M",'
            '"args":{"hhash":"%s","name":"/lustre/data/train/img_%05d.npz",'
            '"value":"%016x"}}\n' % (index + 2, HOST_HASH, index, file_hash(index))
        )
    return "".join(lines)


def event_block(first_id: int, count: int) -> str:
    """Return ``count`` event lines starting at id ``first_id``."""
    parts: List[str] = []
    for offset in range(count):
        number = first_id + offset
        pid = 1000 + number % 4
        ts = 1_760_614_064_000_000 + number * 13
        if number % 5 == 0:
            parts.append(APP_EVENT % (number, pid, pid, ts, 97, number - 1, number))
        else:
            size = 4096 << (number % 6)
            parts.append(
                POSIX_EVENT
                % (
                    number,
                    CALLS[number % len(CALLS)],
                    pid,
                    pid,
                    ts,
                    number % 211,
                    number - 1,
                    file_hash(number % FILE_COUNT),
                    size,
                    number * 4096,
                    size,
                )
            )
    return "".join(parts)


def write_trace(path: str, size_bytes: int) -> int:
    """Write a gzip trace of about ``size_bytes`` inflated; return its lines."""
    try:
        from isal import igzip as gzip_module  # compresses several times faster
    except ImportError:
        gzip_module = gzip  # type: ignore[assignment]

    written = 0
    lines = 0
    member = metadata_text().encode()
    lines += member.count(b"\n")
    next_id = FILE_COUNT + 2
    with open(path + ".part", "wb") as out:
        while written < size_bytes:
            block = event_block(next_id, 20_000).encode()
            next_id += 20_000
            member += block
            written += len(block)
            if len(member) >= MEMBER_BYTES or written >= size_bytes:
                out.write(gzip_module.compress(member, compresslevel=1))
                lines += member.count(b"\n")
                member = b""
    os.replace(path + ".part", path)
    return lines


CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})

def rss(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field + " not in /proc/self/status")

from greenpipe.trace import TraceReader
reader = TraceReader({path!r}, memory_budget={budget}, prefetch={prefetch})
base = rss("VmRSS")
start = time.perf_counter()
items = 0
for _ in getattr(reader, {method!r})():
    items += 1
elapsed = time.perf_counter() - start
stats = reader.statistics()
print(json.dumps({{
    "items": items, "seconds": elapsed, "base_rss": base, "peak_rss": rss("VmHWM"),
    "lines": stats.files[0].lines, "bad_lines": stats.bad_lines,
    "inflated": stats.files[0].bytes_inflated,
}}))
"""


def measure(path: str, method: str, budget: int, prefetch: Optional[bool]) -> Dict[str, float]:
    code = CHILD.format(
        root=ROOT, path=path, budget=budget, prefetch=prefetch, method=method
    )
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output)  # type: ignore[no-any-return]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="uncompressed size in MiB")
    parser.add_argument("--budget-mib", type=int, default=128, help="memory_budget in MiB")
    parser.add_argument("--file", help="trace path (default: in /tmp, named by size)")
    parser.add_argument("--keep", action="store_true", help="keep the trace file")
    parser.add_argument(
        "--methods",
        default="iter_events,iter_lines_json,iter_raw",
        help="comma-separated TraceReader iterators to measure",
    )
    args = parser.parse_args(argv)

    path = args.file or f"/tmp/greenpipe-synthetic-{args.size_mib}MiB.pfw.gz"
    budget = args.budget_mib * MIB
    if not os.path.exists(path):
        start = time.perf_counter()
        lines = write_trace(path, args.size_mib * MIB)
        print(
            f"# wrote {path}: {lines:,} lines, {os.path.getsize(path) / MIB:.0f} MiB "
            f"compressed, in {time.perf_counter() - start:.0f} s"
        )

    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, budget {args.budget_mib} MiB, "
        f"limit {args.budget_mib + HEADROOM // MIB} MiB peak RSS"
    )
    print("| iterator | prefetch | items | inflated MiB | s | MiB/s | RSS after imports MiB | peak RSS MiB | under limit |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    passed = True
    try:
        for method in args.methods.split(","):
            for prefetch in (False, True):
                result = measure(path, method, budget, prefetch)
                ok = result["peak_rss"] < budget + HEADROOM
                passed = passed and ok
                print(
                    f"| {method} | {prefetch} | {result['items']:,} | "
                    f"{result['inflated'] / MIB:.0f} | {result['seconds']:.1f} | "
                    f"{result['inflated'] / MIB / result['seconds']:.0f} | "
                    f"{result['base_rss'] / MIB:.0f} | {result['peak_rss'] / MIB:.0f} | "
                    f"{'yes' if ok else 'NO'} |",
                    flush=True,
                )
    finally:
        if not args.keep and not args.file:
            os.remove(path)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
