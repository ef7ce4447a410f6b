"""Failures and cancellations of the stages of the replay pipeline.

An exception raised in a stage reaches the caller as itself.

Without fail-fast scopes, the stages next to the failed one stay parked on
their channels: the parser on a full channel that no stage reads any more,
or the router on a full stream channel. The run then ends in a
DeadlockError that hides the exception.
"""

from __future__ import annotations

import gc
import traceback
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from greenpipe.replay import Replayer, ReplayOptions, replay
from greenpipe.replay import _execute, _pipeline

from .conftest import call, write_trace

pytestmark = pytest.mark.timeout(60)

#: The smallest memory budget, so the reader cuts the trace into 4 KiB
#: chunks and the parser fills its channel long before it reaches the end.
SMALL_BUDGET = 64 * 1024

ORDERS = ["stream", "resource", "global"]


def many_chunk_trace(tmp_path: Path) -> Path:
    """Write a trace of one stream, many chunks long and many batches long.

    The router and the dispatcher send 512 events at a time, so 8000
    events fill the 8 batches of a stream channel.
    """
    events = []
    for n in range(8000):
        events.append(call("write", 1000 + 10 * n, fd=3, count=16, fname="/data/out", offset=16 * n))
    return write_trace(tmp_path / "t.pfw", events)


def options(tmp_path: Path, order: str, **extra: Any) -> ReplayOptions:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return ReplayOptions(root=str(root), order=order, memory_budget=SMALL_BUDGET, **extra)


def failing_batches(self: Any, chunks: Iterator[bytes], tally: Any = None) -> Iterator[List[Any]]:
    raise MemoryError("decoder out of memory")
    yield []  # a generator, like the method it replaces


@pytest.mark.parametrize("order", ORDERS)
def test_decode_error_reaches_caller(tmp_path: Path, monkeypatch, order: str) -> None:
    trace = many_chunk_trace(tmp_path)
    monkeypatch.setattr(_pipeline.Decoder, "iter_batches", failing_batches)

    with pytest.raises(MemoryError, match="decoder out of memory") as caught:
        replay([str(trace)], options(tmp_path, order))

    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "failing_batches" in frames


def test_decode_error_reaches_caller_in_dry_run(tmp_path: Path, monkeypatch) -> None:
    trace = many_chunk_trace(tmp_path)
    monkeypatch.setattr(_pipeline.Decoder, "iter_batches", failing_batches)

    with pytest.raises(MemoryError, match="decoder out of memory"):
        replay([str(trace)], ReplayOptions(dry_run=True, memory_budget=SMALL_BUDGET))


def test_decode_error_in_timed_replay(tmp_path: Path, monkeypatch) -> None:
    trace = many_chunk_trace(tmp_path)
    monkeypatch.setattr(_pipeline.Decoder, "iter_batches", failing_batches)

    with pytest.raises(MemoryError, match="decoder out of memory"):
        replay([str(trace)], options(tmp_path, "resource", timing="original", speed=100.0))


@pytest.mark.parametrize("order", ORDERS)
def test_stream_error_reaches_caller(tmp_path: Path, monkeypatch, order: str) -> None:
    trace = many_chunk_trace(tmp_path)

    def failing_run(self: Any, *args: Any) -> None:
        raise RuntimeError("stream runner failed")

    method = "run" if order == "stream" else "run_ordered"
    monkeypatch.setattr(_execute.StreamRunner, method, failing_run)

    with pytest.raises(RuntimeError, match="stream runner failed"):
        replay([str(trace)], options(tmp_path, order))


@pytest.mark.parametrize("order", ORDERS)
def test_cancel_before_stages_start(tmp_path: Path, monkeypatch, order: str) -> None:
    # The replay is cancelled while the parse and decode tasks of the file
    # are spawned but not started, so they never run. Their channel
    # producers must still be released, or the pipeline warns that they
    # leaked (the test suite turns that warning into an error).
    trace = many_chunk_trace(tmp_path)
    replayer = Replayer([str(trace)], options(tmp_path, order))
    original = _pipeline.Dispatcher.run
    make_router = Replayer._make_router

    def cancelling_run(self: Any, scope: Any) -> None:
        replayer.cancel()
        original(self, scope)

    def cancelling_router(self: Any, contexts: Any, anchors: Any) -> Any:
        route = make_router(self, contexts, anchors)

        def route_after_cancel(scope: Any, *args: Any) -> None:
            replayer.cancel()
            route(scope, *args)

        return route_after_cancel

    monkeypatch.setattr(_pipeline.Dispatcher, "run", cancelling_run)
    monkeypatch.setattr(Replayer, "_make_router", cancelling_router)

    summary = replayer.run()
    gc.collect()

    assert summary.interrupted
    assert summary.events_replayed == 0
