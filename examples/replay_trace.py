"""Replay a DFTracer trace with the greenpipe library API, step by step.

This is the pipeline that ``greenpipe replay`` runs, written out with the
public building blocks so that each stage is visible:

    parse --bounded channel--> decode --bounded channel--> execute

* parse: inflates the trace in an I/O thread (``scope.spawn_io``) and sends
  line-aligned chunks;
* decode: turns chunks into events and keeps POSIX and STDIO calls;
* execute: one task per traced (pid, tid) stream runs that stream's calls
  under a sandboxed root, in start-time order.

Usage::

    python examples/replay_trace.py examples/traces/dfanalyzer-test.pfw.gz /tmp/greenpipe-example

It replays one file without preparation, filters or timing; use the
``greenpipe replay`` command for those.
"""

from __future__ import annotations

import sys
from typing import Dict, List, Tuple

import orjson

import greenpipe
from greenpipe.replay import PathSandbox, ReplayContext, StreamRunner, StreamStats, prepare_root
from greenpipe.trace import Event, TraceReader


def parse(scope: greenpipe.CoroScope, path: str, out: greenpipe.ChannelProducer) -> None:
    """Send the trace's inflated chunks; inflating runs in an I/O thread."""
    with out.guard():
        chunks = TraceReader(path).iter_raw()
        while True:
            chunk = scope.spawn_io(next, chunks, None).result()
            if chunk is None or not out.send(chunk):
                return


def decode(
    scope: greenpipe.CoroScope,
    chunks: greenpipe.Channel,
    out: greenpipe.ChannelProducer,
) -> None:
    """Turn chunks into POSIX and STDIO events, sent in batches.

    For brevity this decoder reads plain JSON lines and inline paths
    (``fname``); the library's decoder also repairs damaged lines and
    resolves hashed paths.
    """
    with out.guard():
        batch: List[Event] = []
        for chunk in chunks:
            for line in chunk.split(b"\n"):
                line = line.strip()
                if not line.startswith(b"{"):
                    continue
                data = orjson.loads(line)
                if data.get("cat") not in ("POSIX", "STDIO"):
                    continue
                args = data.get("args") or {}
                batch.append(
                    Event(
                        data["name"],
                        data["cat"],
                        int(data["pid"]),
                        int(data["tid"]),
                        int(data["ts"]),
                        int(data.get("dur", 0)),
                        "X",
                        {k: int(v) if k in ("fd", "count", "ret", "offset", "flags") else v for k, v in args.items()},
                        args.get("fname"),
                    )
                )
                if len(batch) == 256:
                    out.send(batch)
                    batch = []
        if batch:
            out.send(batch)


def execute(
    scope: greenpipe.CoroScope, events: greenpipe.Channel, context: ReplayContext
) -> List[StreamStats]:
    """Route events to one task per (pid, tid) stream and wait for them."""
    streams: Dict[Tuple[int, int], greenpipe.ChannelProducer] = {}
    stats: List[StreamStats] = []

    def run_stream(inner: greenpipe.CoroScope, runner: StreamRunner, channel: greenpipe.Channel) -> None:
        runner.run(channel, inner.maybe_yield)

    def route(inner: greenpipe.CoroScope) -> None:
        for batch in events:
            for event in batch:
                key = (event.pid, event.tid)
                if key not in streams:
                    channel = greenpipe.make_channel(8)
                    streams[key] = channel.producer()
                    stream_stats = StreamStats("trace", *key)
                    stats.append(stream_stats)
                    inner.spawn(run_stream, StreamRunner(context, stream_stats), channel)
                streams[key].send([event])
        for producer in streams.values():
            producer.release()

    scope.scope(route)
    return stats


def main(scope: greenpipe.CoroScope, trace: str, root: str) -> List[StreamStats]:
    raw = greenpipe.make_channel(4)
    events = greenpipe.make_channel(8)
    with PathSandbox(root) as sandbox:
        context = ReplayContext(sandbox)
        scope.spawn(parse, trace, raw.producer())
        scope.spawn(decode, raw, events.producer())
        try:
            return execute(scope, events, context)
        finally:
            context.close_all()


if __name__ == "__main__":
    trace_path, root_path = sys.argv[1], sys.argv[2]
    problem = prepare_root(root_path)
    if problem:
        sys.exit(problem)
    results = greenpipe.run(main, trace_path, root_path, threads=2)
    for s in results:
        failures = dict(s.failures)
        print(
            f"pid {s.pid} tid {s.tid}: {s.replayed} replayed, {s.failed} failed {failures}, "
            f"{sum(s.skipped.values())} skipped, {s.bytes_read} bytes read, "
            f"{s.bytes_written} bytes written"
        )
