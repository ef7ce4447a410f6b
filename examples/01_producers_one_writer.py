"""N producers read files into one channel; one writer drains it.

Each producer owns a producer slot of the channel. The slots are
registered before the producers start, so the channel cannot end early,
and each producer releases its slot with a guard, even when reading fails.
When the last slot is released the channel ends and the writer's loop
stops.
"""

from __future__ import annotations

import os
import tempfile

import greenpipe


def make_inputs(folder: str, files: int, lines: int) -> list[str]:
    paths = []
    for index in range(files):
        path = os.path.join(folder, f"input-{index}.txt")
        with open(path, "w", encoding="utf-8") as file:
            for line in range(lines):
                file.write(f"file {index} line {line}\n")
        paths.append(path)
    return paths


def read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as file:
        return file.readlines()


def producer(scope: greenpipe.CoroScope, slot: greenpipe.ChannelProducer, path: str) -> int:
    with slot.guard():
        # The read is a blocking call: offload it so the hub keeps running.
        lines = scope.spawn_io(read_lines, path).result()
        for line in lines:
            slot.send(line)
        return len(lines)


def writer(scope: greenpipe.CoroScope, channel: greenpipe.Channel, path: str) -> int:
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for line in channel:
            out.write(line)
            written += 1
    return written


def main(scope: greenpipe.CoroScope, folder: str) -> None:
    paths = make_inputs(folder, files=4, lines=250)
    channel = greenpipe.make_channel(16)
    slots = [channel.producer() for _ in paths]
    output = os.path.join(folder, "merged.txt")

    write = scope.spawn(writer, channel, output, name="writer")
    reads = [
        scope.spawn(producer, slot, path, name=f"producer-{i}")
        for i, (slot, path) in enumerate(zip(slots, paths))
    ]

    sent = sum(future.result() for future in reads)
    print(f"producers sent {sent} lines from {len(paths)} files")
    print(f"writer wrote {write.result()} lines")
    print(f"channel ended: {channel.is_closed()}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        greenpipe.run(main, folder, threads=2)
