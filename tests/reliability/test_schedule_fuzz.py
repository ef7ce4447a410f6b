"""Schedule fuzzing of channels, scopes and combinators.

Every test runs under the executor's ``randomize`` mode, where each
scheduling step picks the next task at random from a seeded generator.
With one worker a seed repeats exactly; with three workers the seed also
varies victim choice and wake-ups, and real thread interleavings add
more. A plan generator, seeded separately, shapes the workload (counts,
capacities, where tasks yield, which tasks fail).

The seeds come from ``GREENPIPE_STRESS_SEEDS`` (see ``fuzz_support``):
a few by default, thousands in a soak run. Each test checks that no item
is lost or duplicated, no exception is lost, and, through ``run_fuzzed``,
that no task, timer or offloaded call is left behind. The autouse leak
check of ``tests/conftest.py`` catches leaked threads and greenlets.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
from .fuzz_support import error_leaves, run_fuzzed, stress_seeds

import greenpipe
from greenpipe import AsyncGenerator, Cancelled, make_channel
from greenpipe._errors import BaseExceptionGroup
from greenpipe.testing import VirtualClock

pytestmark = pytest.mark.stress

SEEDS = stress_seeds()
THREADS = (1, 3)

by_seed = pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{seed}" for seed in SEEDS])
by_threads = pytest.mark.parametrize("threads", THREADS, ids=[f"threads{n}" for n in THREADS])


class NodeError(Exception):
    """The planned failure of one task, identified by ``node_id``."""

    def __init__(self, node_id: int) -> None:
        super().__init__(f"node {node_id} failed")
        self.node_id = node_id


def failure_ids(errors: list[BaseException]) -> list[int]:
    """Return the node ids of ``errors``; anything but a NodeError fails the test."""
    ids = []
    for error in errors:
        assert isinstance(error, NodeError), f"unexpected error {error!r}"
        ids.append(error.node_id)
    return ids


def switch_points(plan: random.Random, count: int, rate: float = 0.3) -> set[int]:
    """Pick the steps after which a task switches with ``sleep(0)``."""
    return {step for step in range(count) if plan.random() < rate}


# -- channels ----------------------------------------------------------------


@by_seed
@by_threads
def test_channel_delivers_every_item_once(seed, threads):
    plan = random.Random(seed)
    capacity = plan.choice((0, 1, 2, 5))
    producer_count = plan.randint(1, 4)
    consumer_count = plan.randint(1, 4)
    counts = [plan.randint(0, 30) for _ in range(producer_count)]
    producer_yields = [switch_points(plan, count) for count in counts]
    consumer_yields = [switch_points(plan, sum(counts)) for _ in range(consumer_count)]
    channel = make_channel(capacity)
    received: list[list[tuple[int, int]]] = [[] for _ in range(consumer_count)]

    def produce(scope, slot, index):
        with slot:
            for number in range(counts[index]):
                assert slot.send((index, number))
                if number in producer_yields[index]:
                    greenpipe.sleep(0)

    def consume(scope, index):
        for step, item in enumerate(channel):
            received[index].append(item)
            if step in consumer_yields[index]:
                greenpipe.sleep(0)

    def root(scope):
        # Registered before any producer runs, so a fast producer that
        # releases its slot cannot end the channel for the others.
        slots = [channel.producer() for _ in range(producer_count)]
        starts = [("consume", i) for i in range(consumer_count)]
        starts += [("produce", i) for i in range(producer_count)]
        plan.shuffle(starts)
        for kind, index in starts:
            if kind == "consume":
                scope.spawn(consume, index, name=f"consumer-{index}")
            else:
                scope.spawn(produce, slots[index], index, name=f"producer-{index}")

    _, error = run_fuzzed(root, seed=seed, threads=threads)

    assert error is None
    expected = Counter((p, n) for p in range(producer_count) for n in range(counts[p]))
    delivered = Counter(item for items in received for item in items)
    assert delivered - expected == Counter(), "items delivered twice or never sent"
    assert expected - delivered == Counter(), "items lost"
    for items in received:
        for producer in range(producer_count):
            numbers = [n for p, n in items if p == producer]
            assert numbers == sorted(numbers), "one producer's items arrived out of order"
    stats = channel.statistics()
    assert stats.ended
    assert stats.producers == 0
    assert stats.queued == 0
    assert stats.parked_senders == 0
    assert stats.parked_receivers == 0
    assert stats.total_sent == sum(counts)
    assert stats.total_received == sum(counts)


def _drain(channel) -> list:
    leftover = []
    while (item := channel.try_receive()) is not None:
        leftover.append(item)
    return leftover


@by_seed
@by_threads
def test_channel_cancel_leaves_items_delivered_or_queued(seed, threads):
    """A cancelled send or receive either completed or left the channel untouched."""
    plan = random.Random(seed)
    capacity = plan.choice((1, 2, 5))
    producer_count = plan.randint(1, 4)
    consumer_count = plan.randint(1, 3)
    counts = [plan.randint(1, 25) for _ in range(producer_count)]
    consumer_yields = [switch_points(plan, sum(counts)) for _ in range(consumer_count)]
    cancel_after = plan.randint(0, 12)
    channel = make_channel(capacity)
    accepted: list[tuple[int, int]] = []
    received: list[tuple[int, int]] = []
    entered: list[str] = []
    finalized: list[str] = []

    def produce(scope, slot, index):
        entered.append(f"producer-{index}")
        try:
            with slot:
                for number in range(counts[index]):
                    if not slot.send((index, number)):
                        return
                    accepted.append((index, number))
        finally:
            finalized.append(f"producer-{index}")

    def consume(scope, index):
        entered.append(f"consumer-{index}")
        try:
            step = 0
            while (item := channel.receive()) is not None:
                received.append(item)
                if step in consumer_yields[index]:
                    greenpipe.sleep(0)
                step += 1
        finally:
            finalized.append(f"consumer-{index}")

    def cancel_later(scope, region):
        for _ in range(cancel_after):
            greenpipe.sleep(0)
        region.cancel()

    def work(region):
        slots = [channel.producer() for _ in range(producer_count)]
        for index in range(consumer_count):
            region.spawn(consume, index, name=f"consumer-{index}")
        for index, slot in enumerate(slots):
            future = region.spawn(produce, slot, index, name=f"producer-{index}")
            # A producer cancelled before it starts never runs its body, so
            # its slot is released when its task ends, or the channel
            # would never end.
            future.add_done_callback(lambda _future, slot=slot: slot.release())
        region.spawn(cancel_later, region, name="canceller")

    def root(scope):
        return scope.scope(work)

    _, error = run_fuzzed(root, seed=seed, threads=threads)

    assert error is None
    leftover = _drain(channel)
    assert len(set(received)) == len(received), "an item was received twice"
    assert Counter(received) + Counter(leftover) == Counter(accepted)
    assert Counter(entered) == Counter(finalized), "a finally block did not run"
    stats = channel.statistics()
    assert stats.ended
    assert stats.producers == 0
    assert stats.parked_senders == 0
    assert stats.parked_receivers == 0


@by_seed
@by_threads
def test_channel_close_drops_no_accepted_item(seed, threads):
    plan = random.Random(seed)
    capacity = plan.choice((0, 1, 3))
    producer_count = plan.randint(1, 3)
    consumer_count = plan.randint(1, 3)
    count = plan.randint(1, 25)
    close_after = plan.randint(0, 15)
    channel = make_channel(capacity)
    accepted: list[tuple[int, int]] = []
    rejected: list[tuple[int, int]] = []
    received: list[tuple[int, int]] = []

    def produce(scope, index):
        for number in range(count):
            if channel.send((index, number)):
                accepted.append((index, number))
            else:
                rejected.append((index, number))
                return

    def consume(scope):
        for item in channel:
            received.append(item)
            greenpipe.sleep(0)

    def close_later(scope):
        for _ in range(close_after):
            greenpipe.sleep(0)
        channel.close()

    def root(scope):
        for index in range(producer_count):
            scope.spawn(produce, index, name=f"producer-{index}")
        for index in range(consumer_count):
            scope.spawn(consume, name=f"consumer-{index}")
        scope.spawn(close_later, name="closer")

    _, error = run_fuzzed(root, seed=seed, threads=threads)

    assert error is None
    assert _drain(channel) == [], "consumers stopped before the queue was drained"
    assert Counter(received) == Counter(accepted)
    assert not set(rejected) & set(received), "a rejected item was delivered"
    stats = channel.statistics()
    assert stats.ended
    assert stats.parked_senders == 0
    assert stats.parked_receivers == 0


@by_seed
@by_threads
def test_channel_timeouts_lose_no_item(seed, threads):
    """A timed-out send or receive moves no item, and a completed one moves one."""
    plan = random.Random(seed)
    capacity = plan.choice((1, 2))
    producer_count = plan.randint(1, 3)
    consumer_count = plan.randint(1, 3)
    counts = [plan.randint(1, 15) for _ in range(producer_count)]
    # Virtual seconds: the time limits and pauses collide often, so a
    # timer often fires in the same instant as a hand-off.
    send_limits = [[plan.choice((None, 1, 2)) for _ in range(c)] for c in counts]
    send_pauses = [[plan.choice((0, 1, 2)) for _ in range(c)] for c in counts]
    receive_limits = [plan.choice((1, 2, 3)) for _ in range(consumer_count)]
    receive_pauses = [plan.choice((0, 1, 2)) for _ in range(consumer_count)]
    channel = make_channel(capacity)
    accepted: list[tuple[int, int]] = []
    timed_out_sends: list[tuple[int, int]] = []
    received: list[tuple[int, int]] = []
    receive_timeouts = [0]

    def produce(scope, slot, index):
        with slot:
            for number in range(counts[index]):
                item = (index, number)
                try:
                    assert slot.send(item, timeout=send_limits[index][number])
                except TimeoutError:
                    timed_out_sends.append(item)
                else:
                    accepted.append(item)
                greenpipe.sleep(send_pauses[index][number])

    def consume(scope, index):
        while True:
            try:
                item = channel.receive(timeout=receive_limits[index])
            except TimeoutError:
                receive_timeouts[0] += 1
                continue
            if item is None:
                return
            received.append(item)
            greenpipe.sleep(receive_pauses[index])

    def root(scope):
        slots = [channel.producer() for _ in range(producer_count)]
        for index in range(consumer_count):
            scope.spawn(consume, index, name=f"consumer-{index}")
        for index, slot in enumerate(slots):
            scope.spawn(produce, slot, index, name=f"producer-{index}")

    _, error = run_fuzzed(root, seed=seed, threads=threads, clock=VirtualClock())

    assert error is None
    assert _drain(channel) == []
    assert len(set(received)) == len(received), "an item was received twice"
    assert Counter(received) == Counter(accepted)
    assert not set(timed_out_sends) & set(received), "a timed-out send was delivered"
    assert len(accepted) + len(timed_out_sends) == sum(counts)


# -- scopes ------------------------------------------------------------------


@dataclass
class NodePlan:
    """One task of a planned tree."""

    node_id: int
    children: list[NodePlan] = field(default_factory=list)
    nested: bool = False
    awaited: list[int] = field(default_factory=list)
    yields: int = 0
    fails: bool = False
    generator: bool = False
    cancel_child: int | None = None
    cancel_scope: bool = False


def make_tree(
    plan: random.Random, max_nodes: int, cancels: bool = False
) -> tuple[NodePlan, int]:
    """Build a random task tree of at most ``max_nodes`` nodes.

    With ``cancels``, some nodes cancel one of their children or the scope
    in which they spawned their children.
    """
    counter = [0]

    def build(depth: int) -> NodePlan:
        node = NodePlan(counter[0])
        counter[0] += 1
        node.nested = plan.random() < 0.3
        node.yields = plan.randint(0, 3)
        node.fails = plan.random() < 0.3
        node.generator = plan.random() < 0.3
        if depth < 4:
            # The root always has children, or many plans would be one task.
            fanout = plan.choice((2, 3)) if depth == 0 else plan.choice((0, 1, 2, 3))
            for _ in range(fanout):
                if counter[0] >= max_nodes:
                    break
                node.children.append(build(depth + 1))
        node.awaited = [i for i in range(len(node.children)) if plan.random() < 0.4]
        if cancels and node.children and plan.random() < 0.25:
            node.cancel_child = plan.randrange(len(node.children))
        if cancels and plan.random() < 0.1:
            node.cancel_scope = True
        return node

    return build(0), counter[0]


class TreeRun:
    """Runs a planned tree and records what every node did."""

    def __init__(self) -> None:
        self.entered: list[int] = []
        self.finalized: list[int] = []
        self.raised: list[int] = []
        self.caught: list[BaseException] = []

    def catch(self, error: BaseException) -> None:
        # Cancellations are expected in a tree that cancels, so only
        # failures count.
        self.caught.extend(e for e in error_leaves(error) if not isinstance(e, Cancelled))

    @staticmethod
    def cancel_planned(scope, node: NodePlan, futures: list) -> None:
        if node.cancel_child is not None:
            greenpipe.sleep(0)
            futures[node.cancel_child].cancel()
        if node.cancel_scope:
            scope.cancel()

    def body(self, node: NodePlan):
        return self.generator_node if node.generator else self.plain_node

    def plain_node(self, scope, node: NodePlan) -> int:
        self.entered.append(node.node_id)
        try:
            if node.nested:
                try:
                    scope.scope(self.spawn_and_await, node)
                except (NodeError, BaseExceptionGroup) as error:
                    self.catch(error)
            else:
                self.spawn_and_await(scope, node)
            for _ in range(node.yields):
                greenpipe.sleep(0)
            if node.fails:
                # Joining first means that no child is running when the
                # failure cancels this scope, so every planned failure of a
                # child still happens.
                scope.join_all()
                self.raised.append(node.node_id)
                raise NodeError(node.node_id)
            return node.node_id
        finally:
            self.finalized.append(node.node_id)

    def spawn_and_await(self, scope, node: NodePlan) -> None:
        futures = [
            scope.spawn(self.body(child), child, name=f"node-{child.node_id}")
            for child in node.children
        ]
        self.cancel_planned(scope, node, futures)
        for index in node.awaited:
            try:
                assert futures[index].result() == node.children[index].node_id
            except (NodeError, BaseExceptionGroup) as error:
                self.catch(error)
            except Cancelled:
                # A child that was cancelled; if this task was cancelled too,
                # its next blocking call raises again.
                if not futures[index].cancelled():
                    raise

    def generator_node(self, scope, node: NodePlan):
        self.entered.append(node.node_id)
        try:
            futures = [
                scope.spawn(self.body(child), child, name=f"node-{child.node_id}")
                for child in node.children
            ]
            self.cancel_planned(scope, node, futures)
            for index in node.awaited:
                try:
                    value = yield futures[index]
                    assert value == node.children[index].node_id
                except (NodeError, BaseExceptionGroup) as error:
                    self.catch(error)
                except Cancelled:
                    if not futures[index].cancelled():
                        raise
            for _ in range(node.yields):
                yield greenpipe.timeout(0)
            if node.fails:
                scope.join_all()
                self.raised.append(node.node_id)
                raise NodeError(node.node_id)
            return node.node_id
        finally:
            self.finalized.append(node.node_id)


@by_seed
@by_threads
def test_scope_tree_loses_no_exception(seed, threads):
    plan = random.Random(seed)
    tree, size = make_tree(plan, max_nodes=40)
    run = TreeRun()

    _, error = run_fuzzed(run.body(tree), tree, seed=seed, threads=threads)

    # Nothing cancels in this tree, so every node runs to its end.
    assert sorted(run.entered) == list(range(size))
    assert sorted(run.finalized) == list(range(size))
    reported = failure_ids(run.caught) + failure_ids(error_leaves(error))
    assert Counter(reported) == Counter(run.raised), "a failure was lost or reported twice"


@by_seed
@by_threads
def test_scope_tree_with_cancels_loses_no_exception(seed, threads):
    """Failures that happen in a tree that also cancels are each reported once."""
    plan = random.Random(seed)
    tree, size = make_tree(plan, max_nodes=40, cancels=True)
    run = TreeRun()

    _, error = run_fuzzed(run.body(tree), tree, seed=seed, threads=threads)

    assert Counter(run.entered) == Counter(run.finalized), "a finally block did not run"
    assert set(run.entered) <= set(range(size))
    assert len(set(run.entered)) == len(run.entered), "a task body ran twice"
    leaves = [leaf for leaf in error_leaves(error) if not isinstance(leaf, Cancelled)]
    reported = failure_ids(run.caught) + failure_ids(leaves)
    assert Counter(reported) == Counter(run.raised), "a failure was lost or reported twice"


@by_seed
@by_threads
def test_fail_fast_scope_cancels_siblings(seed, threads):
    plan = random.Random(seed)
    count = plan.randint(2, 8)
    yields = [plan.randint(0, 4) for _ in range(count)]
    # Each child fails, returns, or waits on a channel that never gets an
    # item. At least one child fails, so the waiters can only end by
    # cancellation.
    kinds = [plan.choice(("fail", "return", "wait")) for _ in range(count)]
    kinds[plan.randrange(count)] = "fail"
    never = make_channel(1)
    entered: list[int] = []
    finalized: list[int] = []
    raised: list[int] = []
    futures: list[greenpipe.SpawnFuture] = []

    def child(scope, index):
        entered.append(index)
        try:
            for _ in range(yields[index]):
                greenpipe.sleep(0)
            if kinds[index] == "fail":
                raised.append(index)
                raise NodeError(index)
            if kinds[index] == "wait":
                never.receive()
                raise AssertionError("a channel without items delivered one")
            return index
        finally:
            finalized.append(index)

    def body(region):
        for index in range(count):
            futures.append(region.spawn(child, index, name=f"child-{index}"))

    def root(scope):
        scope.scope(body, fail_fast=True)

    _, error = run_fuzzed(root, seed=seed, threads=threads)

    assert raised, "no child failed"
    assert Counter(failure_ids(error_leaves(error))) == Counter(raised)
    assert Counter(entered) == Counter(finalized), "a finally block did not run"
    for index, future in enumerate(futures):
        assert future.done()
        if kinds[index] == "wait":
            assert future.cancelled(), f"waiting child {index} was not cancelled"
        if future.cancelled():
            assert isinstance(future.exception(), Cancelled)


# -- combinators ---------------------------------------------------------------


@greenpipe.coroutine
def sleep_then(index, seconds, fails, finalized):
    try:
        greenpipe.sleep(seconds)
        if fails:
            raise NodeError(index)
        return index
    finally:
        finalized.append(index)


@by_seed
@by_threads
def test_combinators_follow_virtual_time(seed, threads):
    plan = random.Random(seed)
    count = plan.randint(1, 6)
    # Distinct durations make completion order, and so every expected
    # outcome, a function of the plan alone.
    durations = plan.sample(range(1, 60), count)
    fails = [plan.random() < 0.3 for _ in range(count)]
    race_work, race_limit = plan.sample(range(1, 60), 2)
    deadline_work, deadline_limit = plan.sample(range(1, 60), 2)
    finalized_all: list[int] = []
    finalized_any: list[int] = []

    def outcome(fn):
        try:
            return ("value", fn())
        except NodeError as error:
            return ("error", error.node_id)

    def root(scope):
        inputs = [sleep_then(i, durations[i], fails[i], finalized_all) for i in range(count)]
        all_outcome = outcome(greenpipe.when_all(inputs).wait)
        inputs = [sleep_then(i, durations[i], fails[i], finalized_any) for i in range(count)]
        any_outcome = outcome(greenpipe.when_any(inputs).wait)
        race = greenpipe.when_any(
            sleep_then(0, race_work, False, []), greenpipe.timeout(race_limit)
        ).wait()
        with greenpipe.move_on_after(deadline_limit) as deadline:
            greenpipe.sleep(deadline_work)
        return all_outcome, any_outcome, race.index, deadline.cancelled_caught

    clock = VirtualClock()
    value, error = run_fuzzed(root, seed=seed, threads=threads, clock=clock)

    assert error is None
    all_outcome, any_outcome, race_index, deadline_caught = value
    failing = [i for i in range(count) if fails[i]]
    if failing:
        first_failure = min(failing, key=lambda i: durations[i])
        assert all_outcome == ("error", first_failure)
    else:
        assert all_outcome == ("value", list(range(count)))
    assert sorted(finalized_all) == list(range(count))
    winner = min(range(count), key=lambda i: durations[i])
    if fails[winner]:
        assert any_outcome == ("error", winner)
    else:
        assert any_outcome == ("value", greenpipe.WhenAnyResult(winner, winner))
    assert sorted(finalized_any) == list(range(count)), "a loser's finally did not run"
    assert race_index == (0 if race_work < race_limit else 1)
    assert deadline_caught == (deadline_limit < deadline_work)
    expected_end = sum(
        (
            max(durations),
            min(durations),
            min(race_work, race_limit),
            min(deadline_work, deadline_limit),
        )
    )
    assert clock.now() == expected_end


def count_up(n, fails, switch_after):
    for value in range(n):
        yield value
        if value in switch_after:
            greenpipe.sleep(0)
    if fails:
        raise NodeError(n)


@by_seed
@by_threads
def test_async_generator_keeps_order_and_error(seed, threads):
    plan = random.Random(seed)
    n = plan.randint(0, 20)
    fails = plan.random() < 0.5
    buffer = plan.randint(1, 4)
    producer_switches = switch_points(plan, n)
    consumer_switches = switch_points(plan, n)

    def root(scope):
        values = []
        try:
            for value in AsyncGenerator(count_up, n, fails, producer_switches, buffer=buffer):
                values.append(value)
                if value in consumer_switches:
                    greenpipe.sleep(0)
        except NodeError:
            return values, True
        return values, False

    value, error = run_fuzzed(root, seed=seed, threads=threads)

    assert error is None
    assert value == (list(range(n)), fails)
