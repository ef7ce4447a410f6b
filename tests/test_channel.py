from __future__ import annotations

import gc
import random

import pytest

import greenpipe
from greenpipe import Cancelled, ChannelClosedError, make_channel
from greenpipe.testing import VirtualClock, wait_all_blocked


def run(fn, *args, threads=1, **kwargs):
    return greenpipe.run(fn, *args, threads=threads, **kwargs)


def test_send_and_receive_in_order():
    def body(scope):
        channel = make_channel(0)
        for item in range(5):
            assert channel.send(item + 1)
        channel.close()
        return list(channel)

    assert run(body) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("capacity", [-1, -10])
def test_negative_capacity_rejected(capacity):
    with pytest.raises(ValueError, match=rf"^capacity must be >= 0 \(0 = unbounded\), not {capacity}$"):
        make_channel(capacity)


def test_send_none_rejected():
    channel = make_channel(1)
    with pytest.raises(TypeError, match="cannot send None"):
        channel.send(None)


def test_properties_and_statistics():
    channel = make_channel(3)
    producer = channel.producer()
    channel.try_send("a")
    channel.try_send("b")
    channel.try_receive()

    stats = channel.statistics()

    assert channel.capacity == 3
    assert len(channel) == 1
    assert channel.num_producers() == 1
    assert not channel.is_closed()
    assert stats.queued == 1
    assert stats.total_sent == 2
    assert stats.total_received == 1
    assert stats.producers == 1
    assert not stats.ended
    producer.release()
    assert channel.is_closed()


def test_bounded_send_parks_until_room():
    log = []

    def sender(scope, channel):
        for item in (1, 2, 3):
            channel.send(item)
            log.append(f"sent {item}")
        channel.close()

    def body(scope):
        channel = make_channel(1)
        scope.spawn(sender, channel)
        wait_all_blocked()
        log.append("settled")
        return list(channel)

    assert run(body) == [1, 2, 3]
    assert log[:2] == ["sent 1", "settled"]


def test_try_send_and_try_receive_never_block():
    channel = make_channel(1)

    assert channel.try_receive() is None
    assert channel.try_send("x") is True
    assert channel.try_send("y") is False
    assert channel.try_receive() == "x"
    channel.close()
    assert channel.try_send("z") is False


def test_queued_items_drain_after_close():
    channel = make_channel(0)
    channel.try_send(1)
    channel.try_send(2)
    channel.close()

    assert channel.receive() == 1
    assert channel.receive() == 2
    assert channel.receive() is None


def test_send_after_close_returns_false():
    channel = make_channel(4)
    channel.close()

    assert channel.send("late") is False
    assert len(channel) == 0


def test_close_wakes_parked_senders_and_receivers():
    def body(scope):
        full = make_channel(1)
        full.send("kept")
        empty = make_channel(1)
        sender = scope.spawn(lambda s: full.send("dropped"))
        receivers = [scope.spawn(lambda s: empty.receive()) for _ in range(3)]
        wait_all_blocked()
        full.close()
        empty.close()
        return sender.result(), [r.result() for r in receivers], list(full)

    assert run(body, threads=2) == (False, [None, None, None], ["kept"])


def test_last_producer_release_ends_channel():
    def body(scope):
        channel = make_channel(2)
        producers = [channel.producer() for _ in range(3)]

        def produce(s, producer, base):
            with producer.guard():
                for offset in range(4):
                    producer.send(base + offset)

        for index, producer in enumerate(producers):
            scope.spawn(produce, producer, index * 10)
        return sorted(channel)

    assert run(body, threads=2) == [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]


def test_raising_producer_still_releases_slot():
    def body(scope):
        channel = make_channel(1)
        producer = channel.producer()

        def produce(s):
            with producer.guard():
                producer.send("before failure")
                raise RuntimeError("producer failed")

        future = scope.spawn(produce)
        items = list(channel)
        with pytest.raises(RuntimeError, match="producer failed"):
            future.result()
        return items, channel.num_producers()

    assert run(body) == (["before failure"], 0)


def test_release_twice_counts_once():
    channel = make_channel(1)
    first = channel.producer()
    second = channel.producer()
    first.release()
    first.release()

    assert channel.num_producers() == 1
    assert not channel.is_closed()
    second.release()
    assert channel.is_closed()


def test_producer_on_ended_channel_raises():
    channel = make_channel(1)
    channel.close()

    with pytest.raises(ChannelClosedError, match="has ended"):
        channel.producer()


def test_send_through_released_producer_raises():
    channel = make_channel(1)
    producer = channel.producer()
    producer.release()

    with pytest.raises(RuntimeError, match="was released"):
        producer.send(1)


def test_unreleased_producer_warns_and_releases():
    channel = make_channel(1)
    producer = channel.producer()
    with pytest.warns(ResourceWarning, match="never released"):
        del producer
        gc.collect()

    assert channel.is_closed()


def test_receiver_without_producer_waits_and_deadlock_names_channel():
    def body(scope):
        channel = make_channel(1)
        scope.spawn(lambda s: channel.receive(), name="reader")

    with pytest.raises(greenpipe.DeadlockError, match=r"task 'reader' waits on <Channel capacity=1"):
        run(body)


def test_send_and_receive_timeouts_use_clock():
    clock = VirtualClock()

    def body(scope):
        channel = make_channel(1)
        with pytest.raises(TimeoutError, match="no item"):
            channel.receive(timeout=2)
        channel.send("x")
        with pytest.raises(TimeoutError, match="no room"):
            channel.send("y", timeout=3)
        return clock.now(), list_now(channel)

    assert run(body, clock=clock) == (5.0, ["x"])


def list_now(channel):
    items = []
    while (item := channel.try_receive()) is not None:
        items.append(item)
    return items


def test_cancelled_sender_leaves_item_untaken():
    def body(scope):
        channel = make_channel(1)
        channel.send("first")
        sender = scope.spawn(lambda s: channel.send("second"))
        wait_all_blocked()
        sender.cancel()
        scope.join_all()
        return sender.cancelled(), list_now(channel), channel.statistics().total_sent

    assert run(body) == (True, ["first"], 1)


def test_cancelled_receiver_takes_nothing():
    def body(scope):
        channel = make_channel(1)
        receiver = scope.spawn(lambda s: channel.receive())
        other = scope.spawn(lambda s: channel.receive())
        wait_all_blocked()
        receiver.cancel()
        channel.send("only")
        return other.result(), receiver.cancelled()

    assert run(body) == ("only", True)


def test_send_is_cancellation_point_even_with_room():
    def body(scope):
        channel = make_channel(0)
        scope.cancel()
        with pytest.raises(Cancelled):
            channel.send(1)
        return len(channel)

    run(body)


@pytest.mark.parametrize("threads", [1, 3])
def test_cancel_racing_sends_loses_nothing(threads):
    """Cancel blocked senders and receivers at random; count every item."""
    rng = random.Random(threads)

    def body(scope):
        channel = make_channel(2)
        senders = []
        for index in range(200):
            senders.append(scope.spawn(lambda s, i=index: channel.send(i)))
        receivers = [scope.spawn(lambda s: channel.receive()) for _ in range(150)]
        for future in rng.sample(senders + receivers, 120):
            future.cancel()
        wait_all_blocked()
        channel.close()
        scope.join_all()
        delivered = [f.result() for f in receivers if not f.cancelled()]
        delivered = [item for item in delivered if item is not None]
        delivered = [f.result() for f in receivers if not f.cancelled()]
        accepted = {i for i, f in enumerate(senders) if not f.cancelled() and f.result()}
        leftover = list_now(channel)
        return delivered, accepted, leftover

    delivered, accepted, leftover = run(body, threads=threads)

    assert sorted(delivered + leftover) == sorted(accepted)
    assert len(set(delivered)) == len(delivered)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("capacity", [1, 128])
def test_many_producers_and_consumers_across_workers(capacity):
    items_per_producer = 125_000
    producers = 8

    def produce(scope, producer, key):
        with producer.guard():
            for index in range(items_per_producer):
                producer.send((key, index))

    def consume(scope, channel):
        last: dict[int, int] = {}
        count = 0
        total = 0
        for key, index in channel:
            assert last.get(key, -1) < index, "per-producer order broken"
            last[key] = index
            count += 1
            total += index
        return count, total

    def body(scope):
        channel = make_channel(capacity)
        slots = [channel.producer() for _ in range(producers)]
        consumers = [scope.spawn(consume, channel) for _ in range(4)]
        for key, slot in enumerate(slots):
            scope.spawn(produce, slot, key)
        return [future.result() for future in consumers]

    results = greenpipe.run(body, threads=4)

    assert sum(count for count, _ in results) == producers * items_per_producer
    expected_sum = producers * items_per_producer * (items_per_producer - 1) // 2
    assert sum(total for _, total in results) == expected_sum


def test_scope_receive_is_channel_receive():
    def body(scope):
        channel = make_channel(1)
        scope.spawn(lambda s: channel.send("via scope"))
        return scope.receive(channel)

    assert run(body) == "via scope"
