"""Fan out N spawned tasks and fan their results back in.

The first version keeps the futures and reads each result. The second runs
the workers in a child scope, which joins them before it returns, and
merges their partial results into one dictionary under a lock, because
the workers run on several OS threads.
"""

from __future__ import annotations

import threading
from collections import Counter

import greenpipe

WORDS = "the quick brown fox jumps over the lazy dog the end".split()


def square(scope: greenpipe.CoroScope, value: int) -> int:
    return value * value


def count_words(scope: greenpipe.CoroScope, part: list[str], totals: Counter, lock: threading.Lock) -> None:
    local = Counter(part)
    # Only plain dictionary updates happen under the lock: a blocking
    # greenpipe call inside it could park while other threads wait.
    with lock:
        totals.update(local)


def main(scope: greenpipe.CoroScope) -> None:
    futures = [scope.spawn(square, n, name=f"square-{n}") for n in range(10)]
    squares = [future.result() for future in futures]
    print(f"squares: {squares}")
    print(f"sum of squares: {sum(squares)}")

    totals: Counter = Counter()
    lock = threading.Lock()

    def fan_out(child: greenpipe.CoroScope) -> None:
        for start in range(0, len(WORDS), 3):
            child.spawn(count_words, WORDS[start : start + 3], totals, lock)

    scope.scope(fan_out)
    print(f"word counts: {sorted(totals.items())}")


if __name__ == "__main__":
    greenpipe.run(main, threads=2)
