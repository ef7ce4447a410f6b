"""A small streaming pipeline, built twice: with scopes and with Pipeline.

Stages: ``source`` sends the numbers of :data:`ITEMS` into a channel, two
``square`` stages move their squares into a second channel, and ``sink``
collects them. The Pipeline version adds a ``total`` task that depends on
the sink. ``square-1`` computes each square in a child task of its own, so
a failure can also start below a stage.

A :class:`Ledger` records what each stage did, and can make one stage
raise :class:`StageError` after it has handled a given number of items.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Callable

import greenpipe
from greenpipe import Pipeline, PipelineConfig, make_channel, make_task

ITEMS = list(range(1, 7))
EXPECTED = sorted(n * n for n in ITEMS)
STAGES = ("source", "square-0", "square-1", "sink")
PIPELINE_NAME = "squares"


class StageError(Exception):
    """The planned failure of one stage."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"stage {stage} failed")
        self.stage = stage


def new_channels() -> dict[str, greenpipe.Channel]:
    return {"numbers": make_channel(2), "squares": make_channel(1)}


class Ledger:
    """What the stages of one run did; optionally fails one stage.

    Args:
        fail_stage: The stage that raises, or ``None``.
        fail_after: How many items that stage handles before it raises.
        make_error: Builds the exception from the stage name.
    """

    def __init__(
        self,
        fail_stage: str | None = None,
        fail_after: int = 0,
        make_error: Callable[[str], BaseException] = StageError,
    ) -> None:
        self.fail_stage = fail_stage
        self.fail_after = fail_after
        self.make_error = make_error
        self.raised: list[BaseException] = []
        self.entered: list[str] = []
        self.finalized: list[str] = []
        self.sent: dict[str, list[int]] = {"numbers": [], "squares": []}
        self.received: dict[str, list[int]] = {"numbers": [], "squares": []}
        self.collected: list[int] = []
        self.returned: list[str] = []

    def _check_failure(self, stage: str, handled: int) -> None:
        if stage == self.fail_stage and handled == self.fail_after:
            error = self.make_error(stage)
            self.raised.append(error)
            raise error

    def _check_failure_at_end(self, stage: str) -> None:
        # The two square stages share the items, so one of them may get too
        # few to reach its planned failure. It then fails when its input ends.
        if stage == self.fail_stage and not self.raised:
            self._check_failure(stage, self.fail_after)

    def source(self, scope, numbers) -> None:
        self.entered.append("source")
        try:
            with numbers:
                for handled, n in enumerate(ITEMS):
                    self._check_failure("source", handled)
                    if not numbers.send(n):
                        return
                    self.sent["numbers"].append(n)
        finally:
            self.finalized.append("source")

    def square(self, scope, name, numbers, squares) -> None:
        self.entered.append(name)
        try:
            with squares:
                handled = 0
                while (n := numbers.receive()) is not None:
                    self.received["numbers"].append(n)
                    if name == "square-1":
                        value = scope.spawn(self._square_child, n, handled, name="square-1-child")
                        value = value.result()
                    else:
                        self._check_failure(name, handled)
                        value = n * n
                    if not squares.send(value):
                        return
                    self.sent["squares"].append(value)
                    handled += 1
                self._check_failure_at_end(name)
        finally:
            self.finalized.append(name)

    def _square_child(self, scope, n: int, handled: int) -> int:
        self._check_failure("square-1", handled)
        return n * n

    def sink(self, scope, squares) -> list[int]:
        self.entered.append("sink")
        try:
            handled = 0
            while (value := squares.receive()) is not None:
                self.received["squares"].append(value)
                self._check_failure("sink", handled)
                self.collected.append(value)
                greenpipe.sleep(0)
                handled += 1
            return sorted(self.collected)
        finally:
            self.finalized.append("sink")

    def total(self, scope, values: list[int]) -> int:
        self.entered.append("total")
        try:
            greenpipe.sleep(0)
            self._check_failure("total", 0)
            return sum(values)
        finally:
            self.finalized.append("total")


def check_ledger(ledger: Ledger, channels: dict[str, Any]) -> None:
    """Assert that finally blocks ran, channels ended and items add up."""
    assert Counter(ledger.entered) == Counter(ledger.finalized), "a finally block did not run"
    for name, channel in channels.items():
        stats = channel.statistics()
        assert stats.ended, f"channel {name} did not end"
        assert stats.producers == 0, f"channel {name} kept a producer slot"
        assert stats.parked_senders == 0, f"a sender is still parked on {name}"
        assert stats.parked_receivers == 0, f"a receiver is still parked on {name}"
        leftover = []
        while (item := channel.try_receive()) is not None:
            leftover.append(item)
        received = ledger.received[name]
        assert len(set(received)) == len(received), f"an item of {name} was received twice"
        assert Counter(received) + Counter(leftover) == Counter(ledger.sent[name]), (
            f"channel {name} lost or invented items"
        )
    assert set(ledger.collected) <= set(EXPECTED)


def scope_pipeline(scope, ledger: Ledger, channels: dict[str, Any]) -> list[int]:
    """Run the stages as tasks of one fail-fast scope; return the sink's list."""
    numbers = channels["numbers"]
    squares = channels["squares"]

    def stages(region):
        # Every slot is registered before any stage runs and released when
        # its task ends, even a task cancelled before its body started.
        source_slot = numbers.producer()
        square_slots = [squares.producer() for _ in range(2)]
        future = region.spawn(ledger.source, source_slot, name="source")
        future.add_done_callback(lambda _future: source_slot.release())
        for index, slot in enumerate(square_slots):
            name = f"square-{index}"
            future = region.spawn(ledger.square, name, numbers, slot, name=name)
            future.add_done_callback(lambda _future, slot=slot: slot.release())
        return region.spawn(ledger.sink, squares, name="sink").result()

    return scope.scope(stages, fail_fast=True)


def build_pipeline(
    ledger: Ledger, channels: dict[str, Any], *, threads: int = 1, seed: int = 0
) -> tuple[Pipeline, list[greenpipe.ChannelProducer]]:
    """Build the stages as a Pipeline; return it and the producer slots."""
    numbers = channels["numbers"]
    squares = channels["squares"]
    slots = [numbers.producer(), squares.producer(), squares.producer()]

    def stage(name, fn, *args):
        # Records the stages whose body returned, which must end SUCCEEDED.
        def body(scope, *values):
            value = fn(scope, *args, *values)
            ledger.returned.append(name)
            return value

        return make_task(body, name)

    source = stage("source", ledger.source, slots[0])
    squarers = [
        stage(f"square-{i}", ledger.square, f"square-{i}", numbers, slots[1 + i])
        for i in range(2)
    ]
    sink = stage("sink", ledger.sink, squares)
    total = stage("total", ledger.total).depends_on(sink)
    config = (
        PipelineConfig()
        .with_name(PIPELINE_NAME)
        .with_compute_threads(threads)
        .with_rng(random.Random(seed))
        .with_watchdog(False)
    )
    pipeline = Pipeline(config).set_source([source, *squarers, sink]).set_destination(total)
    return pipeline, slots


def run_pipeline(
    ledger: Ledger, channels: dict[str, Any], *, threads: int = 1, seed: int = 0
) -> tuple[Any, BaseException | None, Pipeline]:
    """Execute the Pipeline version; return its value, its error and the pipeline."""
    pipeline, slots = build_pipeline(ledger, channels, threads=threads, seed=seed)
    try:
        return pipeline.execute(), None, pipeline
    except BaseException as error:  # noqa: BLE001 - the caller checks it
        return None, error, pipeline
    finally:
        # A stage that never started never released its slot, so the code
        # that registered the slots releases them once the run is over.
        for slot in slots:
            slot.release()
