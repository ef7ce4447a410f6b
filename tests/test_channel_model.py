"""A model-based test: random channel operations against a reference model."""

from __future__ import annotations

from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import greenpipe
from greenpipe import Cancelled, ChannelClosedError
from greenpipe.testing import wait_all_blocked


class ChannelModel(RuleBasedStateMachine):
    """Drive a real channel and a plain-Python model through the same steps.

    Blocking senders and receivers run as tasks of an executor; after each
    step the test waits until every task is parked, then compares.
    """

    def __init__(self) -> None:
        super().__init__()
        self.executor = greenpipe.Executor(2, deadlock_grace=None)
        self.channel = None
        self.capacity = 0
        # The model.
        self.queue: deque[int] = deque()
        self.parked_senders: deque[tuple[int, object]] = deque()
        self.parked_receivers: deque[object] = deque()
        self.ended = False
        self.producers: list[object] = []
        self.registered = 0
        # Outcomes the model predicts for finished tasks.
        self.expected: dict[object, object] = {}
        self.next_item = 1

    def teardown(self) -> None:
        if self.channel is not None:
            self.channel.close()
        for producer in self.producers:
            producer.release()
        self.settle()
        self.check_outcomes()
        self.executor.shutdown()

    # -- helpers -------------------------------------------------------------

    def settle(self) -> None:
        def body(scope):
            wait_all_blocked()

        self.executor.run(body)

    def check_outcomes(self) -> None:
        for future, outcome in list(self.expected.items()):
            assert future.done(), f"{future!r} should have finished"
            if outcome is Cancelled:
                assert future.cancelled()
            else:
                assert future.result() == outcome
            del self.expected[future]

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        while self.parked_receivers:
            self.expected[self.parked_receivers.popleft()] = None
        while self.parked_senders:
            _, future = self.parked_senders.popleft()
            self.expected[future] = False

    def take_item(self) -> int:
        item = self.queue.popleft()
        if self.parked_senders:
            moved, future = self.parked_senders.popleft()
            self.queue.append(moved)
            self.expected[future] = True
        return item

    def new_item(self) -> int:
        item = self.next_item
        self.next_item += 1
        return item

    # -- rules -----------------------------------------------------------------

    @initialize(capacity=st.integers(min_value=0, max_value=3))
    def create(self, capacity):
        self.capacity = capacity
        self.channel = greenpipe.make_channel(capacity)

    @precondition(lambda self: self.channel is not None)
    @rule()
    def try_send(self):
        item = self.new_item()
        accepted = self.channel.try_send(item)
        self.settle()
        if self.ended:
            assert accepted is False
        elif self.parked_receivers:
            assert accepted is True
            self.expected[self.parked_receivers.popleft()] = item
        elif self.capacity == 0 or len(self.queue) < self.capacity:
            assert accepted is True
            self.queue.append(item)
        else:
            assert accepted is False

    @precondition(lambda self: self.channel is not None)
    @rule()
    def try_receive(self):
        item = self.channel.try_receive()
        self.settle()
        if self.queue:
            assert item == self.take_item()
        else:
            assert item is None

    @precondition(lambda self: self.channel is not None)
    @rule()
    def blocking_send(self):
        item = self.new_item()
        channel = self.channel
        future = self.executor.submit(lambda scope: channel.send(item))
        self.settle()
        if self.ended:
            self.expected[future] = False
        elif self.parked_receivers:
            self.expected[self.parked_receivers.popleft()] = item
            self.expected[future] = True
        elif self.capacity == 0 or len(self.queue) < self.capacity:
            self.queue.append(item)
            self.expected[future] = True
        else:
            self.parked_senders.append((item, future))

    @precondition(lambda self: self.channel is not None)
    @rule()
    def blocking_receive(self):
        channel = self.channel
        future = self.executor.submit(lambda scope: channel.receive())
        self.settle()
        if self.queue:
            self.expected[future] = self.take_item()
        elif self.ended:
            self.expected[future] = None
        else:
            self.parked_receivers.append(future)

    @precondition(lambda self: self.parked_senders)
    @rule(data=st.data())
    def cancel_sender(self, data):
        index = data.draw(st.integers(0, len(self.parked_senders) - 1))
        item, future = self.parked_senders[index]
        del self.parked_senders[index]
        future.cancel()
        self.settle()
        self.expected[future] = Cancelled

    @precondition(lambda self: self.parked_receivers)
    @rule(data=st.data())
    def cancel_receiver(self, data):
        index = data.draw(st.integers(0, len(self.parked_receivers) - 1))
        future = self.parked_receivers[index]
        del self.parked_receivers[index]
        future.cancel()
        self.settle()
        self.expected[future] = Cancelled

    @precondition(lambda self: self.channel is not None)
    @rule()
    def close(self):
        self.channel.close()
        self.settle()
        self.end()

    @precondition(lambda self: self.channel is not None)
    @rule()
    def register_producer(self):
        if self.ended:
            try:
                self.channel.producer()
            except ChannelClosedError:
                return
            raise AssertionError("producer() on an ended channel must raise")
        self.producers.append(self.channel.producer())
        self.registered += 1

    @precondition(lambda self: self.producers)
    @rule(data=st.data())
    def release_producer(self, data):
        index = data.draw(st.integers(0, len(self.producers) - 1))
        producer = self.producers.pop(index)
        producer.release()
        self.settle()
        if not self.producers:
            self.end()

    # -- invariants ------------------------------------------------------------

    @invariant()
    def matches_model(self):
        if self.channel is None:
            return
        self.check_outcomes()
        stats = self.channel.statistics()
        assert stats.queued == len(self.queue)
        assert list(self.channel._items) == list(self.queue)
        assert stats.parked_senders == len(self.parked_senders)
        assert stats.parked_receivers == len(self.parked_receivers)
        assert stats.producers == len(self.producers)
        assert stats.ended == self.ended
        assert self.channel.is_closed() == self.ended


ChannelModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None
)
TestChannelModel = ChannelModel.TestCase
