"""Replay survives damaged and hostile traces and stays inside its root.

Each example writes a trace drawn from ``_corpus`` and replays it twice:
as ``greenpipe replay --dry-run`` through the command's entry point, and
for real into a fresh root that contains a symlink to a folder outside it.
Both must finish without a traceback. They must count exactly the events
and bad lines that the trace reader counts, and lose no event. The folder
outside the root must be left byte for byte as it was.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
import tracemalloc
from pathlib import Path
from typing import Tuple

import pytest
from hypothesis import HealthCheck, given, settings

from greenpipe.cli import main
from greenpipe.replay import ReplayOptions, replay
from greenpipe.replay._sandbox import ROOT_MARKER
from greenpipe.trace import TraceReader

from replay.conftest import snapshot
from ._corpus import examples, trace_files

BUDGET = 64 * 1024
#: Cap on the bytes a fuzzed replay moves, because a mutated size can
#: ask for exabytes.
MAX_BYTES = 4 * 1024 * 1024

fuzz = settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _expected(path: str, memory_budget: int) -> Tuple[int, int]:
    """Return the events and bad lines the reader counts in ``path``."""
    reader = TraceReader(path, memory_budget=memory_budget)
    events = sum(1 for _ in reader.iter_events())
    stats = reader.statistics()
    return events, stats.bad_lines


def _make_dirs(folder: str) -> Tuple[Path, Path]:
    outside = Path(folder) / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"original")
    (outside / "sub").mkdir()
    (outside / "sub" / "data.bin").write_bytes(bytes(range(256)))
    root = Path(folder) / "root"
    root.mkdir()
    (root / ROOT_MARKER).write_text("")
    (root / "link").symlink_to(outside)
    return root, outside


def _check_dry_run(path: str) -> None:
    events, bad_lines = _expected(path, 0)
    out, err = io.StringIO(), io.StringIO()

    code = main(["replay", path, "--dry-run", "--quiet", "--json", "-"], stdout=out, stderr=err)

    data = json.loads(out.getvalue())
    assert code == (0 if events else 1)
    assert err.getvalue() == ""
    assert data["exit_code"] == code
    assert data["events_seen"] == events
    assert data["bad_lines"] == bad_lines


def _check_real_replay(path: str, folder: str) -> None:
    events, bad_lines = _expected(path, BUDGET)
    root, outside = _make_dirs(folder)
    before = snapshot(outside)
    options = ReplayOptions(
        root=str(root), threads=2, max_bytes=MAX_BYTES, memory_budget=BUDGET
    )

    summary = replay([path], options)

    assert snapshot(outside) == before
    assert (root / "link").is_symlink()
    assert summary.events_seen == events
    assert summary.bad_lines == bad_lines
    assert summary.events_seen == (
        summary.events_filtered
        + summary.events_application
        + summary.events_replayed
        + summary.events_failed
        + summary.events_skipped
    )
    assert summary.bytes_read + summary.bytes_written <= MAX_BYTES
    assert summary.exit_code() in (0, 1, 2)
    assert not summary.interrupted


# A failing example is a whole trace file; print it even when it is long.
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@pytest.mark.timeout(120)
@fuzz
@given(trace_files(max_mutations=6))
def test_replay_of_mutated_trace(trace: Tuple[str, bytes]) -> None:
    suffix, content = trace
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace" + suffix)
        with open(path, "wb") as stream:
            stream.write(content)

        _check_dry_run(path)
        _check_real_replay(path, folder)


@pytest.mark.timeout(60)
def test_replay_huge_lines_memory_bounded(tmp_path: Path) -> None:
    good = (
        b'{"name":"open64","cat":"POSIX","pid":1,"tid":1,"ts":%d,"dur":1,"ph":"X",'
        b'"args":{"fname":"/a","flags":66,"mode":420,"ret":3}}\n'
    )
    content = (
        good % 1
        + b'{"name":"write","args":{"pad":"' + b"p" * (32 * 1024 * 1024) + b'"}}\n'
        + b"[" * (8 * 1024 * 1024) + b"\n"
        + good % 2
    )
    trace = tmp_path / "huge.pfw.gz"
    trace.write_bytes(gzip.compress(content, 1))
    del content
    options = ReplayOptions(root=str(tmp_path / "root"), threads=2, memory_budget=BUDGET)

    tracemalloc.start()
    try:
        summary = replay([str(trace)], options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert summary.events_replayed == 2
    assert summary.bad_lines == 2
    # The lines are 32 MiB and 8 MiB, so a replay that kept either in
    # memory would exceed this bound several times over.
    assert peak < 4 * 1024 * 1024, f"peak traced memory {peak}"
