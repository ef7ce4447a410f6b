from __future__ import annotations

import gzip
import os
import tempfile
import tracemalloc
from typing import List, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenpipe.trace import MAX_BAD_LINES_KEPT, TraceReader

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
CM1 = os.path.join(
    DATA,
    "hariharan-devarajan_dftracer/examples/dfanalyzer/test-trace-distributed/"
    "cm1_1_48_20240926/cm1-DEFAULT-3537781-preload.pfw.gz",
)
OLD = os.path.join(DATA, "hariharan-devarajan_dftracer/.trace-0-of-2.pfw")

with open(CM1, "rb") as _stream:
    CM1_BYTES = _stream.read()
# A slice of the inflated file keeps each example fast.
CM1_PLAIN = gzip.decompress(CM1_BYTES)[:150_000]
with open(OLD, "rb") as _stream:
    OLD_BYTES = _stream.read()

MAX_EXAMPLES = 60
BUDGET = 64 * 1024
#: The inflater's own state and buffers, which the budget does not cover:
#: up to about 70 KB for zlib and 150 KB for isal 1.9.1 (measured with
#: tracemalloc).
INFLATER_STATE = 192 * 1024
#: What the JSON parser allocates while it rejects a bad line, which the
#: budget does not cover either. orjson 3.13 peaks at about 12 times the
#: text (measured with tracemalloc on a 100 KB line; orjson 3.8 needs about
#: 1 time), and a text tried while joining split lines is at most two
#: lines of a quarter of the budget each.
PARSER_ERROR_STATE = 16 * (BUDGET // 2)


def damage(data: bytes, cut: float, flips: List[Tuple[float, int]]) -> bytes:
    """Truncate ``data`` at fraction ``cut`` and XOR bytes at the flips."""
    damaged = bytearray(data[: int(len(data) * cut)])
    for position, mask in flips:
        if damaged:
            damaged[int(position * (len(damaged) - 1))] ^= mask
    return bytes(damaged)


def read_everything(content: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "t" + suffix)
        with open(path, "wb") as stream:
            stream.write(content)
        reader = TraceReader(path, memory_budget=BUDGET)
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            events = sum(1 for _ in reader.iter_events())
            dicts = sum(1 for _ in reader.iter_lines_json())
            raw_bytes = sum(len(chunk) for chunk in reader.iter_raw())
            end, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        stats = reader.statistics().files[0]

    # What is still allocated at the end (the file's hash tables, kept for
    # metadata()) is not in flight, so it is left out of the bound.
    in_flight = peak - max(start, end)
    assert in_flight < BUDGET + INFLATER_STATE + PARSER_ERROR_STATE, (
        f"peak bytes in flight {in_flight}"
    )
    assert stats.complete
    assert dicts >= events
    assert stats.lines >= stats.events + stats.metadata_events
    assert len(stats.first_bad_lines) <= MAX_BAD_LINES_KEPT
    assert stats.bytes_inflated >= raw_bytes


cuts = st.floats(min_value=0.0, max_value=1.0)
flips = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=1.0), st.integers(1, 255)),
    max_size=4,
)
robust = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@robust
@given(cut=cuts, flips=flips)
def test_damaged_gzip_trace_never_crashes(
    cut: float, flips: List[Tuple[float, int]]
) -> None:
    read_everything(damage(CM1_BYTES, cut, flips), ".pfw.gz")


@robust
@given(cut=cuts, flips=flips)
def test_damaged_plain_trace_never_crashes(
    cut: float, flips: List[Tuple[float, int]]
) -> None:
    read_everything(damage(CM1_PLAIN, cut, flips), ".pfw")


@robust
@given(cut=cuts, flips=flips)
def test_damaged_old_trace_never_crashes(
    cut: float, flips: List[Tuple[float, int]]
) -> None:
    read_everything(damage(OLD_BYTES, cut, flips), ".pfw")


@robust
@given(noise=st.binary(max_size=2000))
def test_random_bytes_never_crash(noise: bytes) -> None:
    read_everything(noise, ".pfw")
    read_everything(b"\x1f\x8b" + noise, ".pfw.gz")
