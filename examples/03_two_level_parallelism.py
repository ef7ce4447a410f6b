"""Two-level parallelism: one task per file, one task per chunk of a file.

Each file task splits its file into byte ranges that end on line breaks
and spawns a chunk task for each. Chunk statistics merge into file
statistics, and file statistics into the total.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import greenpipe

CHUNK_BYTES = 4096


@dataclass
class Stats:
    lines: int = 0
    words: int = 0
    bytes: int = 0

    def merge(self, other: Stats) -> Stats:
        return Stats(self.lines + other.lines, self.words + other.words, self.bytes + other.bytes)


def make_inputs(folder: str) -> list[str]:
    paths = []
    for index, lines in enumerate((300, 1200, 50)):
        path = os.path.join(folder, f"log-{index}.txt")
        with open(path, "w", encoding="ascii") as file:
            for line in range(lines):
                file.write(f"event {line} of file {index}\n")
        paths.append(path)
    return paths


def line_aligned_ranges(data: bytes) -> list[tuple[int, int]]:
    ranges = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", min(start + CHUNK_BYTES, len(data)) - 1)
        end = len(data) if end < 0 else end + 1
        ranges.append((start, end))
        start = end
    return ranges


def chunk_stats(scope: greenpipe.CoroScope, data: bytes) -> Stats:
    return Stats(data.count(b"\n"), len(data.split()), len(data))


def file_stats(scope: greenpipe.CoroScope, path: str) -> Stats:
    with open(path, "rb") as file:
        data = file.read()
    futures = [
        scope.spawn(chunk_stats, data[start:end], name=f"{os.path.basename(path)}[{start}]")
        for start, end in line_aligned_ranges(data)
    ]
    total = Stats()
    for future in futures:
        total = total.merge(future.result())
    return total


def main(scope: greenpipe.CoroScope, folder: str) -> None:
    paths = make_inputs(folder)
    futures = {path: scope.spawn(file_stats, path) for path in paths}
    grand = Stats()
    for path, future in futures.items():
        stats = future.result()
        print(f"{os.path.basename(path)}: {stats.lines} lines, {stats.words} words, {stats.bytes} bytes")
        grand = grand.merge(stats)
    print(f"total: {grand.lines} lines, {grand.words} words, {grand.bytes} bytes")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        greenpipe.run(main, folder, threads=2)
