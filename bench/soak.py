"""Soak test: multi-stage pipelines with random failures and cancellations.

Runs rounds back to back for ``--seconds`` (10 minutes by default) on
``--threads`` workers (4 by default), alternating two kinds:

- a channel round on one long-lived ``Executor``: producers, a pool of
  workers and a collector joined by two bounded channels in a
  ``scope.scope(..., fail_fast=True)``. Some rounds inject a failure into
  one worker, some cancel the stage scope from the collector after k
  items, some run under ``move_on_after`` with a short deadline;
- a ``greenpipe.Pipeline`` round: a source task, three map tasks that each
  run a channel stage of their own, and a reduce task, on an executor the
  pipeline creates. Some rounds make one task fail.

Each round checks its own outcome. A round that ran to its end must
deliver every item exactly once. A round with an injected failure must
raise it. A cancelled round must not deliver an item twice.

Every ``--interval`` seconds (30 by default) the script prints the RSS,
the live tasks of the long-lived executor, the live greenlets and the OS
threads, sampled between two rounds. At the end it compares the last
sample with the first. It exits with 1 when a round broke its checks,
when tasks, greenlets or threads grew, or when the RSS grew by more than
``--rss-slack-mib`` MiB (16 by default) and 10 %.

Usage::

    python bench/soak.py [--seconds 600] [--threads 4] [--interval 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from greenlet import greenlet

import greenpipe
from greenpipe._compat import os_thread_count

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


class InjectedFailure(Exception):
    """The failure a round injects on purpose."""


@dataclass
class Counters:
    """Outcomes of the rounds so far."""

    rounds: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    items: int = 0
    broken: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class Sample:
    """One measurement, taken between two rounds."""

    seconds: float
    rss_bytes: int
    live_tasks: int
    greenlets: int
    threads: int


def rss_bytes() -> int:
    """Return the resident set size of this process (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as stream:
        resident_pages = int(stream.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def live_greenlets() -> int:
    """Return the greenlets that started and have not finished."""
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, greenlet) and obj and not obj.dead
    )


def contains_injected(error: BaseException) -> bool:
    """Return whether ``error`` is, or groups, an :class:`InjectedFailure`."""
    if isinstance(error, InjectedFailure):
        return True
    if isinstance(error, BaseExceptionGroup):
        return any(contains_injected(inner) for inner in error.exceptions)
    return False


# -- channel rounds ---------------------------------------------------------------


@dataclass
class ChannelPlan:
    """The plan of one channel round, drawn from the seeded generator."""

    items: int
    workers: int
    fail_item: Optional[int]
    cancel_after: Optional[int]
    deadline: Optional[float]


def draw_channel_plan(rng: random.Random) -> ChannelPlan:
    items = rng.randrange(1, 400)
    kind = rng.random()
    return ChannelPlan(
        items=items,
        workers=rng.randrange(1, 6),
        fail_item=rng.randrange(items) if kind < 0.2 else None,
        cancel_after=rng.randrange(items) if 0.2 <= kind < 0.4 else None,
        deadline=rng.uniform(0.0005, 0.01) if 0.4 <= kind < 0.5 else None,
    )


def channel_round(scope: greenpipe.CoroScope, plan: ChannelPlan) -> Dict[str, Any]:
    """Run producers, workers and a collector; return what was delivered."""
    delivered: List[int] = []
    raised = []

    def produce(inner: greenpipe.CoroScope, slot: greenpipe.ChannelProducer, first: int) -> None:
        with slot.guard():
            for item in range(first, plan.items, 2):
                if not slot.send(item):
                    return

    def work(inner: greenpipe.CoroScope, source: greenpipe.Channel, slot: greenpipe.ChannelProducer) -> None:
        with slot.guard():
            for item in source:
                if item == plan.fail_item:
                    raised.append(item)
                    raise InjectedFailure(f"item {item}")
                inner.maybe_yield()
                slot.send(item * 2)

    def collect(inner: greenpipe.CoroScope, results: greenpipe.Channel, stages: greenpipe.CoroScope) -> None:
        for value in results:
            delivered.append(value)
            if len(delivered) == plan.cancel_after:
                stages.cancel()

    def stages(inner: greenpipe.CoroScope) -> None:
        work_channel = greenpipe.make_channel(8)
        results = greenpipe.make_channel(8)
        for first in (0, 1):
            inner.spawn(produce, work_channel.producer(), first, name=f"produce-{first}")
        for number in range(plan.workers):
            inner.spawn(work, work_channel, results.producer(), name=f"work-{number}")
        inner.spawn(collect, results, inner, name="collect")

    if plan.deadline is not None:
        with greenpipe.move_on_after(plan.deadline):
            scope.scope(stages, fail_fast=True)
    else:
        scope.scope(stages, fail_fast=True)
    return {"delivered": delivered, "raised": raised}


def check_channel_round(
    plan: ChannelPlan, outcome: Optional[Dict[str, Any]], error: Optional[BaseException], counters: Counters
) -> None:
    expected = [2 * item for item in range(plan.items)]
    if error is not None:
        if not contains_injected(error):
            counters.broken.append(f"channel round raised {error!r}")
        counters.failed += 1
        return
    assert outcome is not None
    delivered = outcome["delivered"]
    counters.items += len(delivered)
    if outcome["raised"]:
        counters.broken.append(f"injected failure {outcome['raised']} was lost")
    elif len(set(delivered)) != len(delivered):
        counters.broken.append("an item was delivered twice")
    elif not set(delivered) <= set(expected):
        counters.broken.append("an unknown item was delivered")
    elif sorted(delivered) == expected:
        counters.completed += 1
    elif plan.cancel_after is not None or plan.deadline is not None:
        counters.cancelled += 1
    else:
        counters.broken.append(f"{plan.items - len(delivered)} items were lost")


# -- pipeline rounds ----------------------------------------------------------------


def pipeline_round(rng: random.Random, threads: int, counters: Counters) -> None:
    """Run source -> three maps -> reduce as a Pipeline; one task may fail."""
    items = rng.randrange(1, 200)
    failing = rng.choice([None, None, None, "source", "map-1", "reduce"])

    def check_failure(name: str) -> None:
        if name == failing:
            raise InjectedFailure(name)

    def source(scope: greenpipe.CoroScope) -> List[int]:
        check_failure("source")
        return list(range(items))

    def make_map(index: int):
        def run_map(scope: greenpipe.CoroScope, values: List[int]) -> int:
            check_failure(f"map-{index}")
            channel = greenpipe.make_channel(4)

            def feed(inner: greenpipe.CoroScope, slot: greenpipe.ChannelProducer) -> None:
                with slot.guard():
                    for value in values[index::3]:
                        slot.send(value)

            scope.spawn(feed, channel.producer(), name=f"feed-{index}")
            return sum(channel)

        return run_map

    def reduce(scope: greenpipe.CoroScope, *sums: int) -> int:
        check_failure("reduce")
        return sum(sums)

    config = greenpipe.PipelineConfig().with_name("soak").with_compute_threads(threads)
    pipeline = greenpipe.Pipeline(config)
    first = greenpipe.make_task(source, name="source")
    maps = [greenpipe.make_task(make_map(index), name=f"map-{index}").depends_on(first) for index in range(3)]
    last = greenpipe.make_task(reduce, name="reduce").depends_on(*maps)
    pipeline.set_source([first]).set_destination(last)

    try:
        total = pipeline.execute()
    except BaseException as error:  # noqa: BLE001 - every outcome is checked
        if failing is None or not contains_injected(error):
            counters.broken.append(f"pipeline round raised {error!r}")
        counters.failed += 1
        return
    if failing is not None:
        counters.broken.append(f"injected failure in {failing} was lost")
    elif total != sum(range(items)):
        counters.broken.append(f"pipeline sum {total} != {sum(range(items))}")
    else:
        counters.completed += 1
        counters.items += items


# -- the soak ---------------------------------------------------------------------------


def take_sample(started: float, executor: greenpipe.Executor) -> Sample:
    gc.collect()
    return Sample(
        seconds=time.monotonic() - started,
        rss_bytes=rss_bytes(),
        live_tasks=executor.statistics()["live_tasks"],
        greenlets=live_greenlets(),
        threads=os_thread_count(),
    )


def print_sample(sample: Sample, counters: Counters) -> None:
    print(
        f"t={sample.seconds:6.0f} s  rounds {counters.rounds:7,}  completed {counters.completed:7,}  "
        f"failed {counters.failed:6,}  cancelled {counters.cancelled:6,}  "
        f"rss {sample.rss_bytes / 2**20:7.1f} MiB  tasks {sample.live_tasks}  "
        f"greenlets {sample.greenlets}  threads {sample.threads}",
        flush=True,
    )


def growth(first: Sample, last: Sample, rss_slack: int) -> List[str]:
    """Return a message for each count that grew from ``first`` to ``last``."""
    problems = []
    for name in ("live_tasks", "greenlets", "threads"):
        before, after = getattr(first, name), getattr(last, name)
        if after > before:
            problems.append(f"{name} grew from {before} to {after}")
    allowed = max(rss_slack, first.rss_bytes // 10)
    if last.rss_bytes - first.rss_bytes > allowed:
        problems.append(
            f"RSS grew from {first.rss_bytes / 2**20:.1f} MiB to "
            f"{last.rss_bytes / 2**20:.1f} MiB (allowed {allowed / 2**20:.1f} MiB)"
        )
    return problems


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="run time in seconds (default 600)")
    parser.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random plans (default 0)")
    parser.add_argument(
        "--rss-slack-mib", type=float, default=16.0,
        help="RSS growth always allowed, in MiB, besides 10 %% (default 16)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.interval <= 0 or args.threads < 1:
        parser.error("--seconds and --interval must be > 0 and --threads >= 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    counters = Counters()
    samples: List[Sample] = []
    print(
        f"soak: {args.seconds:.0f} s, {args.threads} threads, sample every {args.interval:.0f} s, "
        f"seed {args.seed}, pid {os.getpid()}",
        flush=True,
    )

    started = time.monotonic()
    next_sample = started + args.interval
    with greenpipe.Executor(args.threads, name="soak") as executor:
        while True:
            counters.rounds += 1
            if counters.rounds % 4:
                plan = draw_channel_plan(rng)
                outcome, error = None, None
                try:
                    outcome = executor.run(channel_round, plan, name=f"round-{counters.rounds}")
                except BaseException as exc:  # noqa: BLE001 - every outcome is checked
                    error = exc
                check_channel_round(plan, outcome, error, counters)
            else:
                pipeline_round(rng, args.threads, counters)

            now = time.monotonic()
            if now >= next_sample:
                sample = take_sample(started, executor)
                samples.append(sample)
                print_sample(sample, counters)
                next_sample += args.interval
            if counters.broken or now - started >= args.seconds:
                break

    for message in counters.broken[:10]:
        print(f"BROKEN: {message}")
    problems = growth(samples[0], samples[-1], int(args.rss_slack_mib * 2**20)) if len(samples) > 1 else []
    for message in problems:
        print(f"GREW: {message}")
    if len(samples) < 2:
        print("note: fewer than two samples, so growth was not checked; run longer than two intervals")
    ok = not counters.broken and not problems
    print(
        f"soak {'passed' if ok else 'FAILED'}: {counters.rounds:,} rounds, {counters.items:,} items, "
        f"{counters.failed:,} failed and {counters.cancelled:,} cancelled as planned"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
