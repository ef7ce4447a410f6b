"""AsyncGenerator: a generator body that runs ahead of its consumer."""

from __future__ import annotations

import itertools
from typing import Any, Callable, Generic, Iterator, TypeVar

from ._channel import Channel
from ._scope import CoroScope, SpawnFuture, current_scope

T = TypeVar("T")
U = TypeVar("U")

__all__ = ["AsyncGenerator"]


class _NoneItem:
    """Stands for a yielded ``None``, which a channel cannot carry."""

    __slots__ = ()


_NONE = _NoneItem()


class AsyncGenerator(Generic[T]):
    """Run the generator ``genfn(*args)`` as a task ahead of its consumer.

    The body yields values and may block (channels, futures, sleeps); it
    runs in its own task and stays at most ``buffer`` values ahead. Consume
    with ``for v in agen`` or ``agen.next()``. An exception of the body
    reaches the consumer after the values produced before it. Leaving the
    loop early, or :meth:`close`, cancels the body and waits for it, so its
    ``finally`` blocks run and nothing is left behind.

    The body task is spawned in ``scope`` (default: the calling task's
    current scope), so it must be created inside a task.

    Raises:
        ValueError: ``buffer`` is below 1.
        RuntimeError: No scope was given and the caller is not a task.
    """

    def __init__(
        self,
        genfn: Callable[..., Iterator[T]],
        *args: Any,
        buffer: int = 1,
        scope: CoroScope | None = None,
    ) -> None:
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be an int >= 1, not {buffer!r}")
        if not callable(genfn):
            raise TypeError(f"AsyncGenerator needs a generator function, not {genfn!r}")
        owner = scope if scope is not None else current_scope()
        if owner is None:
            raise RuntimeError(
                "AsyncGenerator must be created inside a greenpipe task or be "
                "given scope="
            )
        self._channel: Channel[Any] = Channel(buffer)
        self._name = getattr(genfn, "__qualname__", repr(genfn))
        self._future: SpawnFuture[None] = owner.spawn(
            self._produce, genfn, args, name=f"AsyncGenerator({self._name})"
        )
        self._finished = False

    def __repr__(self) -> str:
        return f"<AsyncGenerator {self._name}>"

    def _produce(self, scope: CoroScope, genfn: Any, args: tuple[Any, ...]) -> None:
        channel = self._channel
        try:
            for value in genfn(*args):
                if not channel.send(_NONE if value is None else value):
                    return
        finally:
            channel.close()

    def next(self, default: Any = None) -> T | Any:
        """Return the next value, or ``default`` once the body has ended.

        Blocking: parks until the body yields. Cancellation: a cancellation
        point.

        Raises:
            BaseException: The body's exception, after its earlier values.
        """
        if self._finished:
            return default
        item = self._channel.receive()
        if item is None:
            self._finished = True
            self._raise_body_error()
            return default
        return None if item is _NONE else item

    def _raise_body_error(self) -> None:
        future = self._future
        future._wait_done(None)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            raise error

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                item = self._channel.receive()
                if item is None:
                    self._finished = True
                    self._raise_body_error()
                    return
                yield None if item is _NONE else item
        finally:
            if not self._finished:
                self.close()

    def close(self) -> None:
        """Stop the body and wait for it to end; safe to call again.

        Blocking: waits for the body's ``finally`` blocks.
        """
        self._finished = True
        self._channel.close()
        future = self._future
        if not future.done():
            future.cancel()
        try:
            future._wait_done(None)
        finally:
            future._retrieved = True

    def map(self, fn: Callable[[T], U], *, buffer: int = 1) -> AsyncGenerator[U]:
        """Return a generator of ``fn(v)`` for each value ``v``."""
        return AsyncGenerator(_mapped, self, fn, buffer=buffer, scope=current_scope())

    def filter(self, predicate: Callable[[T], bool], *, buffer: int = 1) -> AsyncGenerator[T]:
        """Return a generator of the values for which ``predicate`` is true."""
        return AsyncGenerator(
            _filtered, self, predicate, buffer=buffer, scope=current_scope()
        )

    def take(self, n: int, *, buffer: int = 1) -> AsyncGenerator[T]:
        """Return a generator of the first ``n`` values; the rest are not produced."""
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n!r}")
        return AsyncGenerator(_taken, self, n, buffer=buffer, scope=current_scope())


def _mapped(source: AsyncGenerator[Any], fn: Callable[[Any], Any]) -> Iterator[Any]:
    for value in source:
        yield fn(value)


def _filtered(source: AsyncGenerator[Any], predicate: Callable[[Any], bool]) -> Iterator[Any]:
    for value in source:
        if predicate(value):
            yield value


def _taken(source: AsyncGenerator[Any], n: int) -> Iterator[Any]:
    try:
        for value in itertools.islice(iter(source), n):
            yield value
    finally:
        source.close()
