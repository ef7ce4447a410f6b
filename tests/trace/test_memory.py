"""Peak memory of a read stays within the budget, whatever the file size."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, Callable, List

import pytest

from greenpipe import _memory
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
SMALL_TRACE = (
    Path(__file__).resolve().parent.parent
    / "data" / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw.gz"
)
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


#: Defines ``mapped_while_alive()``: how many more blocks glibc has mapped
#: on their own while a 2 MiB object is alive than after it is freed.
_MAPPED = """
import ctypes, sys

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
        "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info

def mapped_while_alive():
    block = bytearray(2 * 1024 * 1024)
    count = libc.mallinfo2().hblks
    del block
    return count - libc.mallinfo2().hblks
"""

#: Prints that count before and after the setting.
_MAPPED_AROUND_SETTING = _MAPPED + """
from greenpipe._memory import keep_large_blocks_in_heap
before = mapped_while_alive()
applied = keep_large_blocks_in_heap()
print(applied, before, mapped_while_alive())
"""

#: Runs the command with the arguments given, then prints that count.
_MAPPED_AFTER_COMMAND = _MAPPED + """
from greenpipe.cli import main
main(sys.argv[1:], fork_workers=True)
print(mapped_while_alive())
"""


def mapped_blocks(script: str, *argv: str) -> List[str]:
    """Run ``script`` in a process of its own; skip where glibc cannot tell."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            pytest.skip("not glibc")
    except (ValueError, OSError):
        pytest.skip("not glibc")
    completed = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120
    )
    if "mallinfo2" in completed.stderr:
        pytest.skip("glibc before 2.33 has no mallinfo2")
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.split()


def test_large_blocks_stay_in_the_heap_under_glibc() -> None:
    """In a process of its own, since the setting holds for the whole process."""
    assert mapped_blocks(_MAPPED_AROUND_SETTING) == ["True", "1", "0"]


@pytest.mark.parametrize("dry_run", [True, False])
def test_dry_run_keeps_large_blocks_in_heap(tmp_path: Path, dry_run: bool) -> None:
    mode = ["--dry-run"] if dry_run else ["--root", str(tmp_path / "r")]

    printed = mapped_blocks(_MAPPED_AFTER_COMMAND, "replay", str(SMALL_TRACE), *mode, "--quiet")

    assert printed[-1:] == ["0" if dry_run else "1"]


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_glibc(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(_memory.os, "confstr", no_glibc)

    assert _memory.keep_large_blocks_in_heap() is False
