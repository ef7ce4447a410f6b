"""Timeouts and cancellation.

1. The pipeline watchdog: a global timeout and a per-task timeout.
2. A CPU loop that checks for cancellation and stops cleanly.
3. A race between a cache, a disk read and a timeout.

A virtual clock makes every wait instant and every printed time exact.
"""

from __future__ import annotations

import greenpipe
from greenpipe.pipeline import (
    Pipeline,
    PipelineConfig,
    PipelineTimeoutError,
    TaskTimeoutError,
    make_task,
)
from greenpipe.testing import VirtualClock


def watchdog_limits() -> None:
    clock = VirtualClock()
    config = PipelineConfig().with_name("nightly").with_compute_threads(2).with_clock(clock)
    stuck = make_task(lambda scope: greenpipe.sleep(3600), name="stuck_upload")
    try:
        Pipeline(config.with_global_timeout(30)).set_source(stuck).execute()
    except PipelineTimeoutError as error:
        print(f"global timeout: {error} (at {clock.now():g} s)")

    clock = VirtualClock()
    config = PipelineConfig().with_name("ingest").with_compute_threads(2).with_clock(clock)
    fast = make_task(lambda scope: greenpipe.sleep(2), name="fast")
    slow = fast.then(lambda scope, _: greenpipe.sleep(20), name="slow")
    try:
        Pipeline(config.with_task_timeout(5)).set_source(fast).execute()
    except TaskTimeoutError as error:
        print(f"task timeout: {error} (at {clock.now():g} s)")
        print(f"  fast: {fast.state.value}, slow: {slow.state.value}")


def checksum_loop(scope, started, progress: dict) -> int:
    steps = 0
    value = 0
    try:
        while not scope.is_cancellation_requested():
            for number in range(1000):
                value = (value * 31 + number) % 1_000_003
            steps += 1
            if steps == 100:
                started.try_send("halfway")
            # Lets the other tasks of this hub run. It is also a
            # cancellation point, so the loop ends either at the check above
            # or here with Cancelled. The finally block runs in both cases.
            scope.maybe_yield()
        return steps
    finally:
        progress["steps"] = steps


def cooperative_cancel(scope) -> None:
    started = greenpipe.make_channel(0)
    progress: dict = {}
    loop = scope.spawn(checksum_loop, started, progress, name="checksum")
    started.receive()
    loop.cancel()
    loop.exception()
    print(f"checksum loop stopped after the cancel; ran at least 100 steps: {progress['steps'] >= 100}")


@greenpipe.coroutine
def cache_lookup(key: str, hit: bool) -> str:
    greenpipe.sleep(0.01)
    if not hit:
        greenpipe.sleep(10)
    return f"{key} from cache"


@greenpipe.coroutine
def disk_read(key: str, seconds: float) -> str:
    greenpipe.sleep(seconds)
    return f"{key} from disk"


def race(scope, clock: VirtualClock) -> None:
    sources = ("cache", "disk", "timeout")
    for key, hit, disk_seconds in (("a", True, 0.2), ("b", False, 0.2), ("c", False, 5.0)):
        started = clock.now()
        winner = greenpipe.when_any(
            cache_lookup(key, hit), disk_read(key, disk_seconds), greenpipe.timeout(1.0)
        ).wait()
        print(
            f"race {key}: {sources[winner.index]} won with {winner.result!r} "
            f"after {clock.now() - started:.2f} s"
        )


if __name__ == "__main__":
    watchdog_limits()
    greenpipe.run(cooperative_cancel, threads=2)
    clock = VirtualClock()
    greenpipe.run(race, clock, threads=2, clock=clock)
