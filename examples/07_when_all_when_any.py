"""Heterogeneous when_all and when_any.

``when_all(a, b, c)`` waits for computations of different kinds and
returns a tuple in argument order. ``when_any`` returns the first to end
with its index and cancels the others.
"""

from __future__ import annotations

import greenpipe
from greenpipe.testing import VirtualClock


@greenpipe.coroutine
def fetch_count(seconds: float) -> int:
    greenpipe.sleep(seconds)
    return 42


@greenpipe.coroutine
def fetch_name(seconds: float) -> str:
    greenpipe.sleep(seconds)
    return "trace-0.pfw.gz"


@greenpipe.coroutine
def fetch_sizes(seconds: float) -> list[int]:
    greenpipe.sleep(seconds)
    return [512, 2048, 128]


def spawned_total(scope, sizes: list[int]) -> int:
    return sum(sizes)


def main(scope, clock: VirtualClock) -> None:
    count, name, sizes = greenpipe.when_all(
        fetch_count(0.3), fetch_name(0.1), fetch_sizes(0.2)
    ).wait()
    print(f"when_all: count={count} name={name!r} sizes={sizes} after {clock.now():.1f} s")

    future = scope.spawn(spawned_total, sizes)
    total, doubled = greenpipe.when_all(future, fetch_count(0.1).then(lambda n: 2 * n)).wait()
    print(f"when_all with a future: total={total} doubled={doubled}")

    started = clock.now()
    first = greenpipe.when_any(fetch_count(0.5), fetch_name(0.2), fetch_sizes(0.3)).wait()
    print(
        f"when_any: index {first.index} won with {first.result!r} "
        f"after {clock.now() - started:.1f} s; the others were cancelled"
    )


if __name__ == "__main__":
    clock = VirtualClock()
    greenpipe.run(main, clock, threads=2, clock=clock)
