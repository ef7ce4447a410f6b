"""Channels: first-in first-out queues between tasks, hubs and threads.

A channel holds a deque of items, a lot of parked receivers and a lot of
parked senders (each sender's waiter carries its item), all under one lock.
At most one of the two lots is non-empty at a time, apart from waiters that
lost a claim race and are dropped when popped.

Hand-off rules, all under the lock:

* ``send`` gives the item straight to the oldest parked receiver, or
  appends it when there is room, or parks with the item.
* ``receive`` takes the oldest item and, when a sender is parked, moves that
  sender's item into the freed slot, or parks.
* The end (``close()`` or the release of the last registered producer)
  wakes every parked receiver with ``None`` and every parked sender with
  ``False``. Queued items are still delivered first.

Cancellation relies on the waiter claim: a parked sender or receiver is
woken by whoever claims it first. If the cancellation wins, the channel
never sees the waiter again, so the sender's item was not taken and the
receiver got nothing; if the channel wins, the operation completed and the
cancellation surfaces at the next blocking call.

Blocking rule: ``send`` and ``receive`` are always cancellation points and
park only when they must wait. Unlike trio, they do not switch on every
call, which keeps item throughput high; a task that only ever sends to a
channel with room should call ``scope.maybe_yield()`` now and then.
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, Iterator, TypeVar

from ._compat import allocate_lock
from ._errors import Cancelled, GreenpipeError
from ._hub import TIMED_OUT, ParkingLot, current_task, make_waiter
from ._util import Duration, to_seconds

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "Channel",
    "ChannelClosedError",
    "ChannelProducer",
    "ChannelStatistics",
    "make_channel",
]


class ChannelClosedError(GreenpipeError):
    """Raised when a producer registers on a channel that has ended."""


@dataclass(frozen=True)
class ChannelStatistics:
    """A snapshot of a channel.

    Attributes:
        capacity: Maximum queued items, 0 for unbounded.
        queued: Items in the queue now.
        parked_senders: Senders waiting for room.
        parked_receivers: Receivers waiting for an item.
        producers: Producer slots registered and not yet released.
        total_sent: Items accepted since creation.
        total_received: Items delivered since creation.
        ended: Whether the channel was closed or lost its last producer.
    """

    capacity: int
    queued: int
    parked_senders: int
    parked_receivers: int
    producers: int
    total_sent: int
    total_received: int
    ended: bool


def make_channel(capacity: int = 0) -> Channel[Any]:
    """Create a channel holding at most ``capacity`` items (0 = unbounded).

    Raises:
        ValueError: ``capacity`` is negative.
    """
    return Channel(capacity)


class Channel(Generic[T]):
    """A multi-producer, multi-consumer FIFO channel; see :func:`make_channel`.

    Threads: every method is safe from any task, greenlet or thread. A send
    on one worker wakes a receiver parked on another. Waiters are served in
    arrival order and each item reaches exactly one receiver.

    ``None`` marks the end of the channel in :meth:`receive`, so it cannot
    be sent as an item.
    """

    def __init__(self, capacity: int = 0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, not {capacity!r}")
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0 (0 = unbounded), not {capacity!r}")
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._lock = allocate_lock()
        self._senders = ParkingLot()
        self._receivers = ParkingLot()
        self._closed = False
        self._ended = False
        self._producers = 0
        self._sent = 0
        self._received = 0

    def __repr__(self) -> str:
        state = "ended" if self._ended else "open"
        return (
            f"<Channel capacity={self._capacity} queued={len(self._items)} "
            f"producers={self._producers} {state}>"
        )

    def _describe_wait(self) -> str:
        return repr(self)

    # -- properties ----------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Maximum number of queued items; 0 means unbounded."""
        return self._capacity

    def __len__(self) -> int:
        return len(self._items)

    def is_closed(self) -> bool:
        """Return whether the channel has ended (closed or lost its producers)."""
        return self._ended

    def num_producers(self) -> int:
        """Return the number of registered producer slots not yet released."""
        return self._producers

    def statistics(self) -> ChannelStatistics:
        """Return a :class:`ChannelStatistics` snapshot; never blocks."""
        with self._lock:
            return ChannelStatistics(
                capacity=self._capacity,
                queued=len(self._items),
                parked_senders=len(self._senders.live_waiters()),
                parked_receivers=len(self._receivers.live_waiters()),
                producers=self._producers,
                total_sent=self._sent,
                total_received=self._received,
                ended=self._ended,
            )

    # -- sending -------------------------------------------------------------

    def send(self, item: T, timeout: Duration | None = None) -> bool:
        """Put ``item`` into the channel, waiting for room when it is full.

        Blocking: parks while the channel is full. Cancellation: always a
        cancellation point; a sender cancelled while parked leaves the
        channel as if it had never sent. Threads: safe from anywhere.

        Returns:
            ``True`` when the item was accepted, ``False`` when the channel
            has ended (the item is dropped).

        Raises:
            TypeError: ``item`` is ``None``.
            TimeoutError: ``timeout`` seconds passed without room.
            Cancelled: The calling task was cancelled.
        """
        if item is None:
            raise TypeError(
                "cannot send None: receive() returns None at the end of the "
                "channel; wrap the value, for example in a tuple"
            )
        task = current_task()
        if task is not None and task._cancel_flag and not task._shield_depth:
            raise Cancelled(task._cancel_message())
        with self._lock:
            if self._ended:
                return False
            receivers = self._receivers
            receiver = receivers.pop_claimed() if receivers._waiters else None
            if receiver is None:
                if self._capacity == 0 or len(self._items) < self._capacity:
                    self._items.append(item)
                    self._sent += 1
                    return True
                waiter = make_waiter(self)
                waiter.payload = item
                self._senders.add(waiter)
            else:
                self._sent += 1
                self._received += 1
        if receiver is not None:
            receiver.wake(item)
            return True
        outcome = waiter.park(None if timeout is None else to_seconds(timeout, "timeout"))
        if outcome is TIMED_OUT:
            raise TimeoutError(f"no room in {self!r} within {timeout} s")
        return outcome  # type: ignore[no-any-return]

    def try_send(self, item: T) -> bool:
        """Put ``item`` in if that needs no waiting; return whether it did.

        Never switches and is not a cancellation point. Returns ``False``
        when the channel is full or has ended.
        """
        if item is None:
            raise TypeError("cannot send None; wrap the value, for example in a tuple")
        with self._lock:
            if self._ended:
                return False
            receiver = self._receivers.pop_claimed()
            if receiver is None:
                if self._capacity == 0 or len(self._items) < self._capacity:
                    self._items.append(item)
                    self._sent += 1
                    return True
                return False
            self._sent += 1
            self._received += 1
        receiver.wake(item)
        return True

    # -- receiving -----------------------------------------------------------

    def receive(self, timeout: Duration | None = None) -> T | None:
        """Take the next item, waiting for one when the channel is empty.

        Blocking: parks while the channel is empty and has not ended.
        Cancellation: always a cancellation point; a receiver cancelled
        while parked takes no item. Threads: safe from anywhere.

        Returns:
            The oldest item, or ``None`` once the channel has ended and every
            queued item was delivered.

        Raises:
            TimeoutError: ``timeout`` seconds passed without an item.
            Cancelled: The calling task was cancelled.
        """
        task = current_task()
        if task is not None and task._cancel_flag and not task._shield_depth:
            raise Cancelled(task._cancel_message())
        with self._lock:
            if self._items:
                item = self._items.popleft()
                self._received += 1
                senders = self._senders
                sender = senders.pop_claimed() if senders._waiters else None
                if sender is not None:
                    self._items.append(sender.payload)
                    self._sent += 1
            elif self._ended:
                return None
            else:
                waiter = make_waiter(self)
                waiter.undo = self._give_back
                self._receivers.add(waiter)
                item = None
                sender = None
        if item is not None:
            if sender is not None:
                sender.wake(True)
            return item
        outcome = waiter.park(None if timeout is None else to_seconds(timeout, "timeout"))
        if outcome is TIMED_OUT:
            raise TimeoutError(f"no item from {self!r} within {timeout} s")
        return outcome  # type: ignore[no-any-return]

    def try_receive(self) -> T | None:
        """Take the next item if one is queued, else return ``None``.

        Never switches and is not a cancellation point.
        """
        with self._lock:
            if not self._items:
                return None
            item = self._items.popleft()
            self._received += 1
            sender = self._senders.pop_claimed()
            if sender is not None:
                self._items.append(sender.payload)
                self._sent += 1
        if sender is not None:
            sender.wake(True)
        return item

    def __iter__(self) -> Iterator[T]:
        """Receive items until the channel ends."""
        while True:
            item = self.receive()
            if item is None:
                return
            yield item

    def _give_back(self, item: T) -> None:
        # A receiver was handed ``item`` but died before it could use it.
        with self._lock:
            self._items.appendleft(item)
            self._received -= 1

    # -- ending ----------------------------------------------------------------

    def close(self) -> None:
        """End the channel; queued items are still delivered.

        Never blocks; safe from anywhere. Parked receivers beyond the queued
        items get ``None`` and parked senders get ``False``. Closing twice
        does nothing.
        """
        with self._lock:
            self._closed = True
            self._end_locked()

    def _end_locked(self) -> None:
        if self._ended:
            return
        self._ended = True
        receivers = self._receivers.take_all()
        senders = self._senders.take_all()
        for receiver in receivers:
            receiver.wake(None)
        for sender in senders:
            sender.wake(False)

    # -- producers -------------------------------------------------------------

    def producer(self) -> ChannelProducer[T]:
        """Register one producer slot and return its handle.

        Once producers were registered, the channel ends when the last slot
        is released. Never blocks.

        Raises:
            ChannelClosedError: The channel has already ended.
        """
        with self._lock:
            if self._ended:
                raise ChannelClosedError(
                    f"cannot register a producer on {self!r}: it has ended; "
                    "register producers before the last one is released"
                )
            self._producers += 1
        return ChannelProducer(self)

    def _release_producer(self) -> None:
        with self._lock:
            self._producers -= 1
            if self._producers == 0:
                self._end_locked()


class ChannelProducer(Generic[T]):
    """One registered producer slot of a channel.

    Release it with :meth:`release`, by leaving ``with producer:`` or
    ``with producer.guard():``; the last release ends the channel. A slot
    that is garbage-collected unreleased emits a :class:`ResourceWarning`
    and is released then.
    """

    def __init__(self, channel: Channel[T]) -> None:
        self._channel = channel
        self._released = False
        self._lock = allocate_lock()

    def __repr__(self) -> str:
        state = "released" if self._released else "active"
        return f"<ChannelProducer {state} of {self._channel!r}>"

    @property
    def channel(self) -> Channel[T]:
        """The channel this slot belongs to."""
        return self._channel

    def send(self, item: T, timeout: Duration | None = None) -> bool:
        """Same as :meth:`Channel.send`.

        Raises:
            RuntimeError: This slot was already released.
        """
        if self._released:
            raise RuntimeError(f"{self!r} was released; register a new producer to send")
        return self._channel.send(item, timeout)

    def release(self) -> None:
        """Release the slot; calling it again does nothing. Never blocks."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._channel._release_producer()

    def guard(self) -> ChannelProducer[T]:
        """Return a context manager that releases the slot on exit, even on error."""
        return self

    def __enter__(self) -> ChannelProducer[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        if not getattr(self, "_released", True):
            warnings.warn(
                f"{self!r} was never released; use 'with channel.producer():' "
                "or call release()",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )
            self.release()
