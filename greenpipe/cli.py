"""The ``greenpipe`` command.

``greenpipe replay TRACE_OR_DIR... --root DIR`` replays traces; see
``greenpipe replay --help``. This module is the only part of greenpipe
that writes to the terminal: the summary goes to standard output, the
progress bar and errors to standard error.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional, Protocol, Sequence, TextIO, TypeVar, Union

from . import __version__
from ._memory import keep_large_blocks_in_heap
from .replay import ReplayError, ReplayOptions, ReplayProgress, Replayer, ReplaySummary
from .replay import find_trace_files
from .replay._data import parse_data
from .replay._options import SAMPLE_UNITS
from .replay._options import is_inside
from .replay._processes import ShardedReplayer, usable_cores
from .replay._order import DEFAULT_ORDER, ORDER_MODES
from .replay._sandbox import SandboxError

if TYPE_CHECKING:
    from .dask._replay import DaskReplayer

logger = logging.getLogger(__name__)

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_FAILED_CALLS = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line; the message is one full sentence."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{message[0].upper()}{message[1:]}.")


def _number_list(kind: Callable[[str], T], what: str) -> Callable[[str], List[T]]:
    def parse(text: str) -> List[T]:
        values = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                values.append(kind(part))
            except ValueError:
                raise argparse.ArgumentTypeError(f"{part!r} is not a valid {what}") from None
        if not values:
            # An empty list would silently filter nothing.
            raise argparse.ArgumentTypeError(
                f"{text!r} names no {what}; give one or more, separated by commas"
            )
        return values

    return parse


#: Maximum worker threads of a replay. Each is an OS thread with its own
#: event loop, so far more threads than cores only add switching.
MAX_THREADS = 1024
#: Bounds of a --timing speed factor: from 1000 times slower than traced
#: (gaps grow by that much) to a billion times faster.
MIN_SPEED = 1e-3
MAX_SPEED = 1e9


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; give 0 or more")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not allowed; give 1 or more")
    return value


def _thread_count(text: str) -> int:
    value = _positive(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(
            f"{text} threads is too many; give at most {MAX_THREADS}"
        )
    return value


#: Maximum worker processes of a replay; each is a Python interpreter of
#: its own, so far more processes than cores only add memory.
MAX_PROCESSES = 1024


def _process_count(text: str) -> int:
    value = _positive(text)
    if value > MAX_PROCESSES:
        raise argparse.ArgumentTypeError(
            f"{text} processes is too many; give at most {MAX_PROCESSES}"
        )
    return value


def _timing(text: str) -> Any:
    if text in ("asap", "original", "think"):
        return text
    try:
        factor = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'asap', 'original', 'think' or a speed factor such as 2"
        ) from None
    return _speed_factor(factor, text)


def _speed(text: str) -> float:
    try:
        factor = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a speed factor such as 2 or 0.5") from None
    return _speed_factor(factor, text)


def _speed_factor(factor: float, text: str) -> float:
    if not math.isfinite(factor) or not MIN_SPEED <= factor <= MAX_SPEED:
        raise argparse.ArgumentTypeError(
            f"the speed factor must be between {MIN_SPEED:g} and {MAX_SPEED:g}, not {text}"
        )
    return factor


def _order(text: str) -> str:
    if text not in ORDER_MODES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an order mode; use stream, resource or global"
        )
    return text


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"the sample rate must be between 0 and 1, not {text}")
    return rate


#: Maximum copies of a replay run at once (--copies).
MAX_COPIES = 1024
#: Bounds of a --size-scale factor.
MIN_SIZE_SCALE = 1e-6
MAX_SIZE_SCALE = 1e6


def _data_kind(text: str) -> str:
    try:
        parse_data(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'zero', 'pattern' or 'random:SEED' with an integer SEED"
        ) from None
    return text


def _size_scale(text: str) -> float:
    try:
        factor = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number such as 0.5 or 4") from None
    if not math.isfinite(factor) or not MIN_SIZE_SCALE <= factor <= MAX_SIZE_SCALE:
        raise argparse.ArgumentTypeError(
            f"the size factor must be between {MIN_SIZE_SCALE:g} and {MAX_SIZE_SCALE:g}, not {text}"
        )
    return factor


def _copy_count(text: str) -> int:
    value = _positive(text)
    if value > MAX_COPIES:
        raise argparse.ArgumentTypeError(f"{text} copies is too many; give at most {MAX_COPIES}")
    return value


def _ranks(text: str) -> List[int]:
    """Parse a rank list such as ``0,2-5``."""
    ranks: List[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a rank or a range of ranks such as 2-5"
            ) from None
        if low < 0 or high < low:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a rank or a range of ranks such as 2-5"
            )
        ranks.extend(range(low, high + 1))
    if not ranks:
        raise argparse.ArgumentTypeError(f"{text!r} names no rank; give ranks such as 0,2-5")
    return ranks


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``greenpipe`` command."""
    parser = _Parser(prog="greenpipe", description="Structured concurrency tools and trace replay.")
    parser.add_argument("--version", action="version", version=f"greenpipe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    rep = commands.add_parser(
        "replay",
        help="re-execute the I/O recorded in DFTracer traces under a root folder",
        description=(
            "Re-execute the POSIX and STDIO calls recorded in DFTracer traces "
            "(.pfw, .pfw.gz), with their traced sizes and offsets, on files "
            "mapped under --root. Nothing outside the root is touched."
        ),
    )
    rep.add_argument("traces", nargs="+", metavar="TRACE_OR_DIR", help="trace files or folders of traces")
    rep.add_argument("--root", metavar="DIR", help="folder that traced paths are mapped under (new, empty, or used by an earlier replay); required unless --dry-run")
    rep.add_argument("--timing", type=_timing, default="asap", metavar="asap|original|think|FACTOR", help="asap: no waiting (default); original: start each call at its traced time since the first traced call (open loop); think: start each call when the previous call of its thread ended plus the traced think time (closed loop); FACTOR: original at --speed FACTOR")
    rep.add_argument("--speed", type=_speed, metavar="FACTOR", help="divide the traced times of --timing original or think by FACTOR (default 1; 2 replays twice as fast)")
    rep.add_argument("--order", type=_order, default=DEFAULT_ORDER, metavar="stream|resource|global", help=f"stream: each traced thread in its own order, threads independent; resource: also keep the traced order of calls on the same path across threads, processes and files; global: every call in traced start order, one at a time (default: {DEFAULT_ORDER})")
    rep.add_argument("--dry-run", action="store_true", help="parse, decode and filter only; touch no file")
    rep.add_argument("--threads", type=_thread_count, metavar="N", help="worker threads of each process (default: number of CPUs; 1 in a dry run)")
    rep.add_argument("--processes", type=_process_count, metavar="N", help="worker processes that the trace files are spread over (default: number of usable cores; 1 runs everything in this process)")
    rep.add_argument("--force", action="store_true", help="replay even if the bytes to write exceed the free space under the root")

    filters = rep.add_argument_group("filters (lists are comma-separated; options repeat)")
    for name, kind, what in (
        ("pid", int, "process id"),
        ("tid", int, "thread id"),
        ("category", str, "category"),
        ("function", str, "call name"),
    ):
        filters.add_argument(f"--{name}", type=_number_list(kind, what), action="append", default=[], metavar="LIST", help=f"keep only events with this {what}")
        filters.add_argument(f"--exclude-{name}", type=_number_list(kind, what), action="append", default=[], metavar="LIST", help=f"drop events with this {what}")
    filters.add_argument("--start", type=_non_negative, metavar="US", help="keep events starting at or after this trace time (microseconds, as in the trace)")
    filters.add_argument("--end", type=_non_negative, metavar="US", help="keep events starting before this trace time (microseconds)")
    filters.add_argument("--min-size", type=_non_negative, metavar="BYTES", help="keep data calls moving at least this many bytes")
    filters.add_argument("--max-size", type=_non_negative, metavar="BYTES", help="keep data calls moving at most this many bytes")
    filters.add_argument("--sample", type=_rate, metavar="RATE", help="keep each unit of --sample-by with this probability")
    filters.add_argument("--sample-by", choices=SAMPLE_UNITS, default="event", help="unit that --sample keeps or drops whole: event (opens and closes are always kept; the default), file (every call on a traced path), stream (a thread of a process) or process")
    filters.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    filters.add_argument("--ranks", type=_ranks, action="append", default=[], metavar="LIST", help="replay only these ranks, such as 0,2-5; rank N is the N-th trace file of the inputs (folders list their files sorted by path)")
    filters.add_argument("--max-events", type=_non_negative, metavar="N", help="stop reading after N POSIX and STDIO events passed the filters")
    filters.add_argument("--max-bytes", type=_non_negative, metavar="BYTES", help="skip data calls once the replayed reads and writes reach this many bytes")

    data = rep.add_argument_group("data and scaling")
    data.add_argument("--data", type=_data_kind, default=None, metavar="zero|random:SEED|pattern", help="bytes that writes write: zeros (default), incompressible bytes from SEED, or a pattern of the traced path and offset")
    data.add_argument("--verify", action="store_true", help="write pattern data naming each traced write and check that every read of replayed bytes finds the latest write before it in trace order")
    data.add_argument("--size-scale", type=_size_scale, default=1.0, metavar="FACTOR", help="multiply the sizes and offsets of reads and writes by FACTOR (default 1)")
    data.add_argument("--align", type=_positive, default=1, metavar="BYTES", help="round scaled sizes and offsets to a multiple of BYTES; a non-zero size becomes at least BYTES (default 1)")
    data.add_argument("--copies", type=_copy_count, default=1, metavar="N", help="run N copies of the replay at once, in ROOT/copy-0 to ROOT/copy-<N-1> (default 1)")

    cluster = rep.add_argument_group(
        "cluster (the root and the traces must be reachable under the same paths on every worker)"
    ).add_mutually_exclusive_group()
    cluster.add_argument("--dask", metavar="ADDRESS", help="run the shards, one per trace file, on the Dask scheduler at ADDRESS (for example tcp://host:8786); each shard replays into ROOT/.shards/<file index>")
    cluster.add_argument("--scheduler-file", metavar="FILE", help="as --dask, with the scheduler named by the file that 'dask scheduler --scheduler-file' wrote")

    output = rep.add_argument_group("output")
    output.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE ('-' for standard output)")
    output.add_argument("--report", metavar="DIR", help="also write report.json, report.html and PNG plots comparing the trace and the replay to DIR (made if missing, outside --root); needs matplotlib: pip install 'greenpipe[report]'")
    output.add_argument("--emit-trace", metavar="FILE", help="write the replay's own DFTracer trace to FILE (outside --root; gzip when FILE ends in .gz; overwritten), one event per executed call")
    output.add_argument("--quiet", "-q", action="store_true", help="print no summary and no progress bar")
    output.add_argument("--verbose", "-v", action="count", default=0, help="log progress (-v) or details (-vv) to standard error")
    return parser


def _flatten(lists: List[List[T]]) -> frozenset[T]:
    return frozenset(value for values in lists for value in values)


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    """Build :class:`ReplayOptions` from parsed arguments.

    Raises:
        UsageError: the arguments contradict each other.
    """
    if args.root == "":
        raise UsageError("The option --root got an empty folder name ''. Give a new or empty folder.")
    if args.json == "":
        raise UsageError("The option --json got an empty file name ''. Give a file name or '-'.")
    if not args.dry_run and not args.root:
        raise UsageError("The option --root DIR is required unless --dry-run is given.")
    if args.report == "":
        raise UsageError("The option --report got an empty folder name ''. Give a folder for the report.")
    if args.emit_trace == "":
        raise UsageError("The option --emit-trace got an empty file name ''. Give a file name.")
    if args.emit_trace is not None and args.dry_run:
        raise UsageError("The option --emit-trace needs a replay; drop --dry-run, which executes no call.")
    for option, value in (("--report", args.report), ("--emit-trace", args.emit_trace)):
        if value is not None and args.root and is_inside(value, args.root):
            raise UsageError(
                f"The {option} output {value!r} is inside --root {args.root!r}, where the "
                "replay may overwrite or remove it. Choose a path outside the root."
            )
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise UsageError(f"--end ({args.end}) must be greater than --start ({args.start}).")
    if args.min_size is not None and args.max_size is not None and args.max_size < args.min_size:
        raise UsageError(f"--max-size ({args.max_size}) must not be below --min-size ({args.min_size}).")
    if args.sample_by != "event" and args.sample is None:
        raise UsageError(f"--sample-by {args.sample_by} needs a rate; add --sample RATE.")
    if args.verify and args.data not in (None, "pattern"):
        raise UsageError(
            f"--verify writes pattern data, so --data {args.data} does not apply; drop --data."
        )
    if args.speed is not None and not isinstance(args.timing, str):
        raise UsageError(
            f"--timing {args.timing:g} and --speed {args.speed:g} both set the speed. "
            f"Give --timing original --speed {args.speed:g} instead."
        )
    if args.speed is not None and args.timing == "asap":
        raise UsageError(
            f"--speed {args.speed:g} needs --timing original or --timing think; "
            "--timing asap does not wait."
        )
    return ReplayOptions(
        root=args.root,
        dry_run=args.dry_run,
        threads=args.threads,
        timing=args.timing,
        speed=args.speed,
        pids=_flatten(args.pid),
        tids=_flatten(args.tid),
        categories=_flatten(args.category),
        functions=_flatten(args.function),
        exclude_pids=_flatten(args.exclude_pid),
        exclude_tids=_flatten(args.exclude_tid),
        exclude_categories=_flatten(args.exclude_category),
        exclude_functions=_flatten(args.exclude_function),
        start=args.start,
        end=args.end,
        min_size=args.min_size,
        max_size=args.max_size,
        sample=args.sample,
        seed=args.seed,
        max_events=args.max_events,
        max_bytes=args.max_bytes,
        force=args.force,
        order=args.order,
        sample_by=args.sample_by,
        ranks=_flatten(args.ranks),
        data=args.data or ("pattern" if args.verify else "zero"),
        verify=args.verify,
        size_scale=args.size_scale,
        align=args.align,
        copies=args.copies,
        series=args.report is not None,
        emit_trace=None if args.emit_trace is None else os.path.abspath(args.emit_trace),
    )


def _check_report_folder(folder: str) -> None:
    """Check that the report can be drawn and written to ``folder``, which is made.

    Raises:
        UsageError: matplotlib is missing or the folder cannot be written.
    """
    from .replay._report import INSTALL_HINT, ReportUnavailableError, require_matplotlib

    try:
        require_matplotlib()
    except ReportUnavailableError as exc:
        raise UsageError(
            f"The option --report needs matplotlib, which cannot be imported ({exc.cause}). "
            f"Install it with: {INSTALL_HINT}."
        ) from None
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"The report folder {folder} exists and is not a folder. Choose another folder.")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"Cannot make the report folder {folder}: {exc.strerror}. Choose a writable folder."
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"Cannot write the report to {folder}: permission denied. Choose a writable folder.")


# -- progress bar ---------------------------------------------------------------


def _timing_lines(timing: Mapping[str, Any]) -> List[str]:
    """Return the summary lines of a timed replay: lateness and elapsed error."""
    if not timing or timing.get("mode", "asap") == "asap":
        return []
    replayer = timing["lateness"]["replayer"]
    busy = timing["lateness"]["busy"]
    lines = [
        f"  timing   {timing['mode']} at speed {timing['speed']:g}, "
        f"elapsed {timing['elapsed_s']:,.3f} s"
        + ("" if timing["expected_s"] is None else
           f", expected {timing['expected_s']:,.3f} s, error {timing['elapsed_error_s'] * 1e3:+,.1f} ms")
    ]
    lines.append(
        f"  lateness replayer p50 {replayer['p50_s'] * 1e6:,.0f} us, p99 {replayer['p99_s'] * 1e6:,.0f} us; "
        f"busy p50 {busy['p50_s'] * 1e6:,.0f} us, p99 {busy['p99_s'] * 1e6:,.0f} us"
        + ("" if timing["drift_s"] is None else f"; drift {timing['drift_s'] * 1e6:+,.0f} us")
    )
    return lines


def _human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


class _Progressing(Protocol):
    def progress(self) -> ReplayProgress: ...


class ProgressBar:
    """Redraws one status line on a terminal from a background thread."""

    def __init__(self, replayer: _Progressing, stream: TextIO, interval: float = 0.2) -> None:
        self._replayer = replayer
        self._stream = stream
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="greenpipe-progress", daemon=True)
        self._width = 0

    def __enter__(self) -> ProgressBar:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._stream.write("\r" + " " * self._width + "\r")
        self._stream.flush()

    def _main(self) -> None:
        while not self._stop.wait(self._interval):
            self._draw()

    def _draw(self) -> None:
        p = self._replayer.progress()
        rate = p.events_done / p.elapsed if p.elapsed > 0 else 0.0
        text = f"{p.phase:8} {p.events_done:,} events"
        if p.events_total:
            fraction = min(p.events_done / p.events_total, 1.0)
            filled = int(fraction * 24)
            eta = (p.events_total - p.events_done) / rate if rate > 0 else 0.0
            text = (
                f"{p.phase:8} [{'#' * filled}{'.' * (24 - filled)}] "
                f"{p.events_done:,}/{p.events_total:,} events"
            )
            suffix = f", ETA {eta:.0f} s"
        else:
            suffix = ""
        text += f", {_human_bytes(p.bytes_done)}, {rate:,.0f} events/s{suffix}"
        self._width = max(self._width, len(text))
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()


# -- summary ----------------------------------------------------------------------


def format_summary(summary: ReplaySummary) -> str:
    """Return the summary as the text the command prints."""
    s = summary
    lines = []
    state = " (interrupted)" if s.interrupted else ""
    mode = "dry run" if s.dry_run else f"root {s.root}"
    if s.copies > 1:
        mode += f", {s.copies} copies (counts add up all copies)"
    lines.append(f"greenpipe replay{state}: {len(s.files)} trace file(s), {mode}")
    lines.append(
        f"  events   seen {s.events_seen:,}, filtered {s.events_filtered:,}, "
        f"application {s.events_application:,}"
        + (f", unusable lines {s.bad_lines:,}" if s.bad_lines else "")
    )
    if not s.dry_run:
        lines.append(
            f"  calls    replayed {s.events_replayed:,}, failed {s.events_failed:,}, "
            f"skipped {s.events_skipped:,}"
        )
        lines.append(f"  bytes    read {s.bytes_read:,}, written {s.bytes_written:,}")
        extra = []
        if s.short_reads:
            extra.append(f"short reads {s.short_reads:,}")
        if s.short_writes:
            extra.append(f"short writes {s.short_writes:,}")
        if s.implicit_opens:
            extra.append(f"implicit opens {s.implicit_opens:,}")
        if s.descriptors_reopened:
            extra.append(f"reopened past the descriptor limit {s.descriptors_reopened:,}")
        if s.probes_not_found:
            extra.append(f"stat/access/opendir that found nothing {s.probes_not_found:,}")
        if s.late_events:
            extra.append(f"events outside the reorder window {s.late_events:,}")
        if extra:
            lines.append("  notes    " + ", ".join(extra))
        lines.extend(_format_order(s))
    if not s.dry_run and s.parity:
        lines.append(
            "  parity   "
            + ", ".join(f"{name} {count:,}" for name, count in s.parity.items())
            + (f"; failures reproduced {s.failures_reproduced:,}" if s.failures_reproduced else "")
        )
        if s.mismatch_cause_count:
            listed = len(s.mismatch_causes)
            lines.append(f"  mismatch root causes {s.mismatch_cause_count:,} (first {listed} listed)")
            for cause in s.mismatch_causes:
                lines.append(
                    f"    {cause['mismatches']:>9,}  {cause['call']} {cause['path']}: "
                    f"{cause['kind']}, expected {cause['expected']}, got {cause['got']}"
                )
    if s.verify is not None:
        v = s.verify
        lines.append(
            f"  verify   reads checked {v['reads_checked']:,}, bytes checked "
            f"{v['bytes_checked']:,}, mismatches {v['mismatches']:,}"
        )
        for row in v["examples"]:
            lines.append(
                f"    {row['path']} offset {row['offset']:,} length {row['length']:,}: "
                f"expected {row['expected']}, found {row['found']}"
            )
    if s.lines:
        lines.append(f"  lines    {s.lines['total']:,} read: " + _format_buckets(s.lines))
        for bucket in ("filtered", "rejected"):
            for reason, count in s.line_details.get(bucket, {}).items():
                lines.append(f"    {count:>9,}  {bucket}: {reason}")
    traced = s.trace_span_us / 1e6
    lines.append(f"  time     traced {traced:,.3f} s, replay {s.wall_seconds:,.3f} s")
    if not s.dry_run:
        lines.extend(_timing_lines(s.timing))
    prep = s.preparation
    if prep.files or prep.folders or prep.failures:
        lines.append(
            f"  prepared {prep.files:,} file(s) ({prep.bytes:,} bytes, sparse), "
            f"{prep.folders:,} folder(s)"
        )
        for failure in prep.failures:
            lines.append(f"           could not prepare {failure}")
    if s.skipped_by_call:
        lines.append("  skipped")
        for key, count in s.skipped_by_call.items():
            lines.append(f"    {count:>9,}  {key}")
    if s.failed:
        lines.append("  failed")
        for reason, count in s.failed.items():
            lines.append(f"    {count:>9,}  {reason}")
            for message in s.failure_messages.get(reason, ()):
                lines.append(f"               {message}")
    if s.latency:
        lines.append("  latency (microseconds)       count       p50       p90       p99       max")
        for name, row in s.latency.items():
            lines.append(
                f"    {name:<20} {int(row['count']):>11,} {row['p50_us']:>9.1f} "
                f"{row['p90_us']:>9.1f} {row['p99_us']:>9.1f} {row['max_us']:>9.1f}"
            )
    if s.files:
        lines.append("  files")
        for row in s.files:
            lines.append(
                f"    {row['path']}: {row['events']:,} events, {row['replayed']:,} replayed, "
                f"{row['failed']:,} failed, {row['skipped']:,} skipped, {row['streams']:,} streams"
            )
    if s.streams and not s.dry_run:
        busiest = sorted(s.streams, key=lambda r: -(r["replayed"] + r["failed"]))[:5]
        lines.append(f"  streams  {len(s.streams):,}; busiest:")
        for row in busiest:
            lines.append(
                f"    pid {row['pid']} tid {row['tid']}: {row['replayed']:,} replayed, "
                f"{row['failed']:,} failed, {row['bytes_read'] + row['bytes_written']:,} bytes"
            )
    for problem in s.input_problems:
        lines.append(f"  problem  {problem}")
    for failure in s.worker_failures:
        lines.append(f"  crashed  {failure}")
    # Paths and messages come from the trace: escape control characters so
    # that a crafted name cannot add lines or terminal escapes to the output.
    return "\n".join(_printable(line) for line in lines)


def _format_order(s: ReplaySummary) -> List[str]:
    """Return the lines about ordering: the mode, and the violations if any."""
    order = s.order
    violations = order.get("violations", {})
    line = f"  order    {order.get('mode')}, calls that waited {order.get('waits', 0):,}"
    if not violations:
        return [line + ", no order violations"]
    caused = []
    if s.missing_by_order:
        caused.append(f"missing files {s.missing_by_order:,}")
    if s.short_reads_by_order:
        caused.append(f"short reads {s.short_reads_by_order:,}")
    line += f", order violations {sum(violations.values()):,}"
    if caused:
        line += " (caused by ordering: " + ", ".join(caused) + ")"
    lines = [line]
    for reason, count in violations.items():
        lines.append(f"    {count:>9,}  {reason}")
    for row in order.get("examples", ()):
        lines.append(f"               {row['call']} {row['path']} at ts {row['ts']}: {row['reason']}")
    return lines


def _format_buckets(buckets: Mapping[str, int]) -> str:
    """Return the non-empty line buckets as ``name count`` pairs."""
    parts = [
        f"{name.replace('_', ' ')} {count:,}"
        for name, count in buckets.items()
        if name != "total" and count
    ]
    return ", ".join(parts) or "none"


def _printable(text: str) -> str:
    """Return ``text`` with every non-printable character backslash-escaped."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def _write_json(summary: ReplaySummary, target: str, stdout: TextIO) -> None:
    text = json.dumps(summary.to_dict(), indent=2, sort_keys=True)
    if target == "-":
        stdout.write(text + "\n")
        return
    with open(target, "w", encoding="utf-8") as stream:
        stream.write(text + "\n")


# -- entry point ---------------------------------------------------------------------


def _configure_logging(verbosity: int, stderr: TextIO) -> Optional[logging.Handler]:
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("greenpipe")
    root.addHandler(handler)
    if not verbosity:
        # Warnings repeat what the summary or the error message reports.
        # Without a handler, Python's last-resort handler would print them.
        handler.setLevel(logging.ERROR)
    else:
        root.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)
    return handler


def _dask_replayer(args: argparse.Namespace, options: ReplayOptions) -> DaskReplayer:
    """Build the replayer of ``--dask`` or ``--scheduler-file``; Dask is imported here only.

    Raises:
        UsageError: a cluster option has a bad value or is combined with
            ``--processes``, or this process cannot run a Dask client.
    """
    if args.processes is not None:
        raise UsageError(
            f"The option --processes ({args.processes}) applies to local replays; "
            "drop it with --dask or --scheduler-file."
        )
    if args.scheduler_file is not None and not os.path.isfile(args.scheduler_file):
        raise UsageError(
            f"The scheduler file {args.scheduler_file!r} was not found. Give the file "
            "that 'dask scheduler --scheduler-file' wrote."
        )
    from .dask import GeventPatchedError, check_unpatched

    try:
        check_unpatched()
        from .dask._replay import DaskReplayer, check_address

        if args.dask is not None:
            check_address(args.dask)
    except GeventPatchedError as exc:
        raise UsageError(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
    except ImportError as exc:
        raise UsageError(
            f"--dask and --scheduler-file need Dask's distributed package ({exc}). "
            "Install it with: pip install 'greenpipe[dask]'."
        ) from None
    except ValueError as exc:
        raise UsageError(f"Argument --dask: {exc}.") from None
    return DaskReplayer(args.traces, options, address=args.dask, scheduler_file=args.scheduler_file)


def _check_outputs_spare_inputs(args: argparse.Namespace) -> None:
    """Raise UsageError when --json or --emit-trace names an input trace file.

    Both outputs are truncated before or while the traces are read, so
    such a run would replay an empty trace and destroy the input.
    """
    outputs = [
        (option, value)
        for option, value in (("--json", args.json), ("--emit-trace", args.emit_trace))
        if value and value != "-" and os.path.exists(value)
    ]
    if not outputs:
        return
    inputs = {os.path.realpath(path): path for path in find_trace_files(args.traces)[0]}
    # An input that is not a regular file (a pipe) is left out of the
    # trace files, but opening it as an output would block or destroy it.
    for path in args.traces:
        if os.path.exists(path) and not os.path.isdir(path):
            inputs.setdefault(os.path.realpath(path), path)
    for option, value in outputs:
        trace = inputs.get(os.path.realpath(value))
        if trace is not None:
            raise UsageError(
                f"The {option} output {value!r} is the input trace {trace}, which it would "
                "overwrite. Choose another file."
            )


def _run_replay(
    args: argparse.Namespace, stdout: TextIO, stderr: TextIO, fork_workers: bool = False
) -> int:
    options = options_from_args(args)
    _check_outputs_spare_inputs(args)
    if args.json and args.json != "-":
        try:
            open(args.json, "a", encoding="utf-8").close()
        except OSError as exc:
            raise UsageError(f"Cannot write the JSON summary to {args.json}: {exc.strerror}. Choose a writable file.") from None
    if args.emit_trace is not None:
        if args.dask is not None or args.scheduler_file is not None:
            raise UsageError(
                "The option --emit-trace is not supported with --dask or --scheduler-file. "
                "Replay locally to write the replay's trace."
            )
        try:
            open(args.emit_trace, "a").close()
        except OSError as exc:
            raise UsageError(f"Cannot write the replay's trace to {args.emit_trace}: {exc.strerror}. Choose a writable file.") from None
    if args.report is not None:
        _check_report_folder(args.report)
    replayer: Union[Replayer, ShardedReplayer, "DaskReplayer"]
    processes = usable_cores() if args.processes is None else args.processes
    if args.dask is not None or args.scheduler_file is not None:
        replayer = _dask_replayer(args, options)
    elif processes == 1:
        replayer = Replayer(args.traces, options)
    else:
        replayer = ShardedReplayer(args.traces, options, processes, fork=fork_workers)

    interrupts = 0

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt
        stderr.write("\nInterrupted: stopping the replay and closing descriptors (Ctrl-C again to abort).\n")
        replayer.cancel()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        show_bar = not args.quiet and stderr.isatty()
        if fork_workers and options.dry_run:
            # The process and its forked workers only read: keep the blocks
            # of about 1 MiB that each chunk allocates in the heap.
            keep_large_blocks_in_heap()
        if isinstance(replayer, ShardedReplayer):
            # Before the progress bar's thread, so that workers can be forked.
            replayer.start()
        if show_bar:
            with ProgressBar(replayer, stderr):
                summary = replayer.run()
        else:
            summary = replayer.run()
    except ReplayError as exc:
        stderr.write(f"greenpipe replay: {exc}\n")
        return EXIT_ERROR
    except SandboxError as exc:
        stderr.write(f"greenpipe replay: {exc}.\n")
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)

    if not args.quiet:
        stdout.write(format_summary(summary) + "\n")
    if args.json:
        _write_json(summary, args.json, stdout)
    if args.report is not None:
        from .replay._report import write_report

        try:
            write_report(summary.to_dict(), args.report, timing=options.timing)
        except OSError as exc:
            stderr.write(
                f"greenpipe replay: cannot write the report to {args.report}: "
                f"{exc.strerror or exc}. Choose a writable folder.\n"
            )
            return EXIT_ERROR
    return summary.exit_code()


def console_main() -> None:
    """Run the ``greenpipe`` command as a program and exit with its code.

    The process belongs to the command, so the objects made while starting
    up (modules, classes, the parser) are moved out of the garbage
    collector's reach with ``gc.freeze``. Collections during the replay
    then scan only what the replay allocates. :func:`main`, which programs
    and tests may call, leaves the collector alone.
    """
    gc.freeze()
    sys.exit(main(fork_workers=True))


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
    fork_workers: bool = False,
) -> int:
    """Run the ``greenpipe`` command and return its exit code.

    Exit codes: 0 when every replayable call was replayed, 2 when some
    calls failed, 1 when nothing was replayed or the arguments are bad,
    130 after Ctrl-C (with a partial summary).

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when
            ``None``.
        stdout, stderr: streams for the summary and for errors and the
            progress bar; the process's streams when ``None``.
        fork_workers: start worker processes by forking this process
            (see :class:`~greenpipe.replay.ShardedReplayer`). Only for a
            process that runs nothing but the command.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except UsageError as exc:
        command = "greenpipe replay" if arguments[:1] == ["replay"] else "greenpipe"
        err.write(f"{command}: {exc} Run '{command} --help' for the options.\n")
        return EXIT_ERROR
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)

    handler = _configure_logging(args.verbose, err)
    try:
        if args.command == "replay":
            try:
                return _run_replay(args, out, err, fork_workers)
            except UsageError as exc:
                err.write(f"greenpipe replay: {exc} Run 'greenpipe replay --help' for the options.\n")
                return EXIT_ERROR
            except KeyboardInterrupt:
                err.write("greenpipe replay: aborted.\n")
                return EXIT_INTERRUPTED
            except BrokenPipeError:
                # The reader of the output went away (``| head``); the
                # replay itself ended, so leave quietly. Point stdout at
                # /dev/null so the interpreter's final flush cannot fail.
                if stdout is None:
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, sys.stdout.fileno())
                return EXIT_ERROR
        return EXIT_ERROR
    finally:
        if handler is not None:
            logging.getLogger("greenpipe").removeHandler(handler)
