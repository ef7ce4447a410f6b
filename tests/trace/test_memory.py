"""Peak memory of a read stays within the budget, whatever the file size."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import pytest

from greenpipe.trace import TraceReader

EVENT = (
    b'{"id":%d,"name":"pread64","cat":"POSIX","pid":7,"tid":8,"ts":%d,"dur":5,'
    b'"ph":"X","args":{"fhash":"00000000000000ff","size":4096,"offset":%d}}\n'
)
META = (
    b'{"id":0,"name":"FH","cat":"dftracer","pid":7,"tid":8,"ph":"M",'
    b'"args":{"name":"/data/a","value":"00000000000000ff"}}\n'
)
BUDGET = 256 * 1024
#: The inflater's own state and buffers, which the budget does not cover:
#: up to about 70 KB for zlib and 150 KB for isal 1.9.1 (measured with
#: tracemalloc).
INFLATER_STATE = 192 * 1024
#: Events in the synthetic file: about 6 MB inflated, 24 times the budget.
EVENTS = 45_000


@pytest.fixture(scope="module")
def large_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = META + b"".join(EVENT % (i, i, i * 4096) for i in range(EVENTS))
    assert len(text) > 20 * BUDGET
    path = tmp_path_factory.mktemp("memory") / "large.pfw.gz"
    # Several members, as writers that flush per buffer produce.
    third = len(text) // 3
    cuts = [text.rfind(b"\n", 0, third) + 1, text.rfind(b"\n", 0, 2 * third) + 1]
    parts = [text[: cuts[0]], text[cuts[0] : cuts[1]], text[cuts[1] :]]
    path.write_bytes(b"".join(gzip.compress(part, 1) for part in parts))
    return path


def peak_growth(read: Callable[[], int]) -> tuple:
    """Run ``read`` under tracemalloc; return its result and peak growth."""
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        result = read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - start


@pytest.mark.parametrize("prefetch", [False, True], ids=["inline", "prefetch"])
@pytest.mark.parametrize("method", ["iter_events", "iter_lines_json", "iter_raw"])
def test_read_peak_memory_within_budget(
    large_trace: Path, prefetch: bool, method: str
) -> None:
    reader = TraceReader(large_trace, memory_budget=BUDGET, prefetch=prefetch)

    def read() -> int:
        items = 0
        for _ in getattr(reader, method)():
            items += 1
        return items

    items, growth = peak_growth(read)
    stats = reader.statistics().files[0]

    assert stats.complete
    assert stats.bad_lines == 0
    assert stats.gzip_members == 3
    assert stats.bytes_inflated > 20 * BUDGET
    if method != "iter_raw":
        assert items == EVENTS + (method == "iter_lines_json")
    assert growth < BUDGET + INFLATER_STATE, f"peak growth {growth} bytes"
