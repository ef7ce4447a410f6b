"""Size a channel with the memory budget helpers.

Run it as ``python 10_budgeted_channel.py [BUDGET_BYTES]``; without an
argument the budget is computed for this machine.

The budget is half the memory this process may still use (cgroup limit or
``MemAvailable``), at least 64 MiB. The channel accepts as many batches as
fit in the budget, but never fewer than two per worker, so the readers can
run ahead of the workers without holding more than the budget.
"""

from __future__ import annotations

import os
import sys
import tempfile

import greenpipe
from greenpipe.pipeline import (
    compute_channel_capacity,
    compute_file_batch_size,
    compute_memory_budget,
    estimate_per_file_bytes,
)

MIB = 1024 * 1024
BATCH_BYTES = 256 * 1024
WORKERS = 2


def make_inputs(folder: str) -> list[str]:
    paths = []
    for index in range(6):
        path = os.path.join(folder, f"part-{index}.bin")
        with open(path, "wb") as file:
            file.write(bytes([index]) * (BATCH_BYTES * (index + 1) // 2))
        paths.append(path)
    return paths


def reader(scope, slot, paths: list[str]) -> None:
    with slot.guard():
        for path in paths:
            with open(path, "rb") as file:
                while True:
                    batch = file.read(BATCH_BYTES)
                    if not batch:
                        break
                    slot.send(batch)


def worker(scope, channel) -> int:
    return sum(len(batch) for batch in channel)


def main(scope, paths: list[str], budget: int) -> None:
    sizes = [os.path.getsize(path) for path in paths]
    per_file = estimate_per_file_bytes(sizes)
    files_at_once = compute_file_batch_size(budget, per_file)
    capacity = compute_channel_capacity(budget, BATCH_BYTES, WORKERS)
    print(f"per-file estimate: {per_file // MIB} MiB, files at once: {files_at_once}")
    print(f"channel capacity: {capacity} batches of {BATCH_BYTES // 1024} KiB")

    channel = greenpipe.make_channel(capacity)
    slot = channel.producer()
    scope.spawn(reader, slot, paths, name="reader")
    workers = [scope.spawn(worker, channel, name=f"worker-{i}") for i in range(WORKERS)]
    total = sum(future.result() for future in workers)
    print(f"workers received {total} bytes, expected {sum(sizes)}")


if __name__ == "__main__":
    budget = compute_memory_budget(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(f"memory budget: {budget // MIB} MiB")
    with tempfile.TemporaryDirectory() as folder:
        greenpipe.run(main, make_inputs(folder), budget, threads=WORKERS)
