"""Producers, workers and a slow writer joined by two bounded channels.

The writer takes half a second per item, so the results channel fills,
the workers park in ``send``, the work channel fills in turn and the
producers park too: back-pressure. Neither channel ever contains more than
its capacity, and the run takes as long as the writer needs. A virtual
clock makes the half-second waits instant and the printed times exact.
"""

from __future__ import annotations

import greenpipe
from greenpipe.testing import VirtualClock

ITEMS_PER_PRODUCER = 12
PRODUCERS = 2
WORKERS = 2
CAPACITY = 2
WRITE_SECONDS = 0.5


def producer(scope, slot, first: int, peak: list[int]) -> None:
    with slot.guard():
        for item in range(first, first + ITEMS_PER_PRODUCER):
            slot.send(item)
            peak[0] = max(peak[0], len(slot.channel))


def worker(scope, work, slot, peak: list[int]) -> None:
    with slot.guard():
        for item in work:
            slot.send(item * item)
            peak[0] = max(peak[0], len(slot.channel))


def writer(scope, results, clock: VirtualClock) -> tuple[int, int]:
    written = 0
    total = 0
    for value in results:
        greenpipe.sleep(WRITE_SECONDS)
        written += 1
        total += value
    return written, total


def main(scope, clock: VirtualClock) -> None:
    work = greenpipe.make_channel(CAPACITY)
    results = greenpipe.make_channel(CAPACITY)
    work_slots = [work.producer() for _ in range(PRODUCERS)]
    result_slots = [results.producer() for _ in range(WORKERS)]
    work_peak = [0]
    result_peak = [0]

    for index, slot in enumerate(work_slots):
        scope.spawn(producer, slot, index * ITEMS_PER_PRODUCER, work_peak, name=f"producer-{index}")
    for index, slot in enumerate(result_slots):
        scope.spawn(worker, work, slot, result_peak, name=f"worker-{index}")
    written, total = scope.spawn(writer, results, clock, name="writer").result()

    print(f"writer wrote {written} items, sum of squares {total}")
    print(f"virtual time: {clock.now():.1f} s ({written} items x {WRITE_SECONDS} s)")
    print(f"work channel peak {work_peak[0]} of capacity {CAPACITY}")
    print(f"results channel peak {result_peak[0]} of capacity {CAPACITY}")


if __name__ == "__main__":
    clock = VirtualClock()
    greenpipe.run(main, clock, threads=2, clock=clock)
