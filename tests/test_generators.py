from __future__ import annotations

import gzip
import os

import orjson
import pytest

import greenpipe
from greenpipe import AsyncGenerator
from greenpipe.testing import VirtualClock, wait_all_blocked

DATA = os.path.join(os.path.dirname(__file__), "data")


def run(fn, *args, threads=2):
    return greenpipe.run(fn, *args, threads=threads, clock=VirtualClock())


def numbers(n):
    for index in range(n):
        yield index


def test_iterates_all_values():
    def body(scope):
        return list(AsyncGenerator(numbers, 5))

    assert run(body) == [0, 1, 2, 3, 4]


def test_none_values_pass_through():
    def body(scope):
        return list(AsyncGenerator(lambda: iter([None, 1, None])))

    assert run(body) == [None, 1, None]


def test_next_with_default():
    def body(scope):
        agen = AsyncGenerator(numbers, 2)
        return [agen.next(), agen.next(), agen.next("end"), agen.next("end")]

    assert run(body) == [0, 1, "end", "end"]


def test_body_runs_at_most_buffer_ahead():
    produced = []

    def body_gen():
        for index in range(10):
            produced.append(index)
            yield index

    def body(scope):
        agen = AsyncGenerator(body_gen, buffer=3)
        wait_all_blocked()
        ahead = len(produced)
        first = agen.next()
        wait_all_blocked()
        return ahead, first, len(produced), list(agen)

    ahead, first, later, rest = run(body)

    # The body holds ``buffer`` values queued plus the one it waits to send.
    assert ahead == 4
    assert first == 0
    assert later == 5
    assert rest == list(range(1, 10))


def test_exception_after_values():
    def failing():
        yield 1
        yield 2
        raise KeyError("generator broke")

    def body(scope):
        received = []
        with pytest.raises(KeyError, match="generator broke"):
            for value in AsyncGenerator(failing):
                received.append(value)
        return received

    assert run(body) == [1, 2]


def test_early_break_cancels_body_and_runs_finally():
    log = []

    def endless():
        try:
            index = 0
            while True:
                yield index
                index += 1
        finally:
            log.append("body finally")

    def body(scope):
        taken = []
        for value in AsyncGenerator(endless, buffer=2):
            taken.append(value)
            if value == 3:
                break
        return taken

    assert run(body) == [0, 1, 2, 3]
    assert log == ["body finally"]


def test_map_filter_take():
    def body(scope):
        agen = AsyncGenerator(numbers, 100)
        squares = agen.filter(lambda v: v % 2 == 0).map(lambda v: v * v).take(4)
        return list(squares)

    assert run(body) == [0, 4, 16, 36]


def test_body_can_block():
    def sleepy():
        for index in range(3):
            greenpipe.sleep(1)
            yield index

    def body(scope):
        return list(AsyncGenerator(sleepy))

    assert run(body) == [0, 1, 2]


def test_rejects_bad_buffer():
    def body(scope):
        AsyncGenerator(numbers, 1, buffer=0)

    with pytest.raises(ValueError, match=r"^buffer must be an int >= 1, not 0$"):
        run(body)


def test_outside_task_without_scope_raises():
    with pytest.raises(RuntimeError, match="inside a greenpipe task"):
        AsyncGenerator(numbers, 1)


def _gzip_lines(path):
    with gzip.open(path, "rb") as stream:
        for line in stream:
            yield line


def test_streams_lines_of_compressed_trace_while_consumer_parses():
    path = os.path.join(DATA, "hariharan-devarajan_dftracer", "dfanalyzer", "test.pfw.gz")
    expected = []
    with gzip.open(path, "rb") as stream:
        for line in stream:
            line = line.strip()
            if line.startswith(b"{"):
                expected.append(orjson.loads(line)["name"])

    def body(scope):
        names = []
        for line in AsyncGenerator(_gzip_lines, path, buffer=64):
            line = line.strip()
            if line.startswith(b"{"):
                names.append(orjson.loads(line)["name"])
        return names

    names = greenpipe.run(body, threads=2)

    assert names == expected
    assert len(names) == 1012
