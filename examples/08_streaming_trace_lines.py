"""Stream the lines of a ``.pfw.gz`` trace lazily.

A plain generator reads the compressed file line by line, holding one line
at a time. An :class:`greenpipe.AsyncGenerator` runs a generator body as a
task ahead of its consumer, a few events at most, here decoding events
with :class:`greenpipe.trace.TraceReader`.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import tempfile
from collections import Counter
from typing import Iterator

import greenpipe
from greenpipe.trace import TraceReader


def write_trace(path: str, events: int) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.write("[\n")
        for index in range(events):
            event = {
                "id": index,
                "name": ("open64", "read", "write", "close")[index % 4],
                "cat": "POSIX" if index % 5 else "STDIO",
                "pid": 100,
                "tid": 100 + index % 2,
                "ts": 1000 + index * 10,
                "dur": 5,
                "ph": "X",
                "args": {"size": 4096} if index % 4 in (1, 2) else {},
            }
            file.write(json.dumps(event) + "\n")
        file.write("]\n")


def gzip_lines(path: str) -> Iterator[str]:
    """Yield the lines of a gzip file; nothing is read before the first next()."""
    with gzip.open(path, "rt", encoding="utf-8") as file:
        for line in file:
            yield line.rstrip("\n")


def decoded_events(path: str) -> Iterator[dict]:
    yield from TraceReader(path).iter_lines_json()


def count_with_async_generator(scope, path: str) -> None:
    events = greenpipe.AsyncGenerator(decoded_events, path, buffer=8)
    by_category: Counter = Counter()
    bytes_moved = 0
    for event in events:
        by_category[event["cat"]] += 1
        bytes_moved += event.get("args", {}).get("size", 0)
    print(f"async generator: {sum(by_category.values())} events {dict(sorted(by_category.items()))}")
    print(f"async generator: {bytes_moved} bytes read or written")

    # take() stops the body after three values; the rest is never decoded.
    names = [event["name"] for event in greenpipe.AsyncGenerator(decoded_events, path).take(3)]
    print(f"first three calls: {names}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "app-100.pfw.gz")
        write_trace(path, 200)
        first = list(itertools.islice(gzip_lines(path), 3))
        print(f"lazy generator: first lines {first[0]!r} and {first[1][:24]!r}...")
        print(f"lazy generator: {sum(1 for _ in gzip_lines(path))} lines in total")
        greenpipe.run(count_with_async_generator, path, threads=2)
