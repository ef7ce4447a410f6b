"""Helpers for replay tests: small traces written on the fly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List

import orjson
import pytest


def write_trace(path: Path, events: List[Dict[str, Any]], metadata: List[Dict[str, Any]] = ()) -> Path:
    """Write ``events`` as a newest-generation style trace (one JSON per line)."""
    lines = [b"["]
    lines += [orjson.dumps(m) for m in metadata]
    lines += [orjson.dumps(e) for e in events]
    path.write_bytes(b"\n".join(lines) + b"\n]")
    return path


def call(name: str, ts: int, cat: str = "POSIX", pid: int = 1, tid: int = 1, **args: Any) -> Dict[str, Any]:
    """Return one complete event of a traced call."""
    return {"id": ts, "name": name, "cat": cat, "pid": pid, "tid": tid, "ts": ts, "dur": 1, "ph": "X", "args": args}


def file_hash(path: str, value: str, pid: int = 1) -> Dict[str, Any]:
    """Return an ``FH`` metadata event defining ``value`` as ``path``."""
    return {"id": 0, "name": "FH", "cat": "dftracer", "pid": pid, "tid": pid, "ph": "M", "args": {"name": path, "value": value}}


@pytest.fixture
def sandbox_dirs(tmp_path: Path):
    """A root and a sibling folder outside it that must stay untouched."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"original")
    return root, outside


def snapshot(folder: Path) -> Dict[str, Any]:
    """Return every path below ``folder`` with its type, size and content digest."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            info = os.lstat(full)
            content = None
            if os.path.isfile(full) and not os.path.islink(full):
                content = Path(full).read_bytes()
            found[os.path.relpath(full, folder)] = (info.st_mode, info.st_size, content)
    return found
