"""Replays that hit a file-size limit or a full disk.

A failed call is counted under its errno with a message naming the file,
and the replay goes on with the next call. Files that cannot be prepared
are listed. The command exits with code 2 and nothing outside the root
changes.

The file-size limit is ``RLIMIT_FSIZE`` in a subprocess, with ``SIGXFSZ``
ignored so that writes past it fail with ``EFBIG``. The full disk is a
small tmpfs mounted in a private mount namespace (``unshare``), which the
kernel removes when the subprocess exits, so no mount can outlive the
test. That test is skipped where namespaces are not allowed.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from replay.conftest import call, snapshot, write_trace

REPO = Path(__file__).resolve().parents[2]
RW_CREATE = os.O_RDWR | os.O_CREAT | os.O_TRUNC
FILE_SIZE_LIMIT = 1_000_000
MIB = 1024 * 1024

#: Replays in-process, then prints one JSON line with the exit code and the
#: apparent and allocated size of every file under the root, while the
#: root still exists.
_REPLAY_AND_LIST = """
import json, os, sys
from greenpipe.cli import main
root = sys.argv[sys.argv.index("--root") + 1]
code = main(sys.argv[1:])
sizes, allocated = {}, {}
for folder, _, names in os.walk(root):
    for name in names:
        info = os.stat(os.path.join(folder, name))
        relative = os.path.relpath(os.path.join(folder, name), root)
        sizes[relative] = info.st_size
        allocated[relative] = info.st_blocks * 512
print(json.dumps({"exit_code": code, "sizes": sizes, "allocated": allocated}))
"""


def _fault_trace(folder: Path) -> Path:
    """Return a trace that writes past 1 MB, reads a 3 MB file, and writes a small file."""
    return write_trace(
        folder / "faults.pfw",
        [
            call("open64", 1, fname="/out/big", flags=RW_CREATE, mode=0o644, ret=3),
            call("write", 2, fname="/out/big", fd=3, count=2 * MIB, ret=2 * MIB),
            call("write", 3, fname="/out/big", fd=3, count=MIB, ret=MIB),
            call("pwrite64", 4, fname="/out/big", fd=3, count=10, offset=5 * MIB, ret=10),
            call("close", 5, fname="/out/big", fd=3, ret=0),
            call("open64", 6, fname="/in/data", flags=os.O_RDONLY, ret=4),
            call("pread64", 7, fname="/in/data", fd=4, count=4096, offset=3 * MIB, ret=4096),
            call("close", 8, fname="/in/data", fd=4, ret=0),
            call("open64", 9, fname="/out/small", flags=RW_CREATE, mode=0o644, ret=5),
            call("write", 10, fname="/out/small", fd=5, count=1000, ret=1000),
            call("close", 11, fname="/out/small", fd=5, ret=0),
        ],
    )


def _outside(folder: Path) -> Path:
    outside = folder / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"original")
    return outside


def _result(stdout: str) -> Dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.timeout(120)
def test_file_size_limit_failures_reported(tmp_path: Path) -> None:
    trace = _fault_trace(tmp_path)
    outside = _outside(tmp_path)
    root = tmp_path / "root"
    before = snapshot(outside)

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))

    summary_file = tmp_path / "summary.json"
    completed = subprocess.run(
        [sys.executable, "-c", _REPLAY_AND_LIST, "replay", str(trace), "--root", str(root),
         "--threads", "1", "--json", str(summary_file)],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=REPO,
        preexec_fn=limit_file_size,
    )

    summary = json.loads(summary_file.read_text())
    result = _result(completed.stdout)
    assert completed.stderr == ""
    assert result["exit_code"] == 2
    assert "short reads 1, short writes 1" in completed.stdout
    assert "        2  EFBIG" in completed.stdout
    assert f"could not prepare {root}/in/data: File too large" in completed.stdout
    assert summary["exit_code"] == 2
    assert snapshot(outside) == before
    # The first write stops at the limit, and every later write to the file fails.
    assert summary["short_writes"] == 1
    assert summary["short_reads"] == 1
    assert summary["failed"] == {"EFBIG": 2}
    assert summary["failure_messages"]["EFBIG"] == [
        f"write {root}/out/big: File too large",
        f"pwrite64 {root}/out/big: File too large",
    ]
    assert summary["preparation"]["failures"] == [f"{root}/in/data: File too large"]
    assert summary["events_replayed"] == 9
    assert result["sizes"]["out/big"] == FILE_SIZE_LIMIT
    assert result["sizes"]["out/small"] == 1000
    assert max(result["sizes"].values()) <= FILE_SIZE_LIMIT


def _unshare_prefixes() -> List[List[str]]:
    """Return the ``unshare`` commands to try: a user namespace first, then root."""
    if shutil.which("unshare") is None:
        return []
    prefixes = [["unshare", "--user", "--map-root-user", "--mount"]]
    if os.geteuid() == 0:
        prefixes.append(["unshare", "--mount"])
    return prefixes


_MOUNT_FAILED = 97


def _run_on_small_disk(mount: Path, size_kib: int, argv: List[str]) -> subprocess.CompletedProcess:
    """Run ``argv`` with a ``size_kib`` tmpfs on ``mount``, private to the run."""
    script = (
        f'mount -t tmpfs -o size={size_kib}k greenpipe-test "$0" 2>/dev/null '
        f'|| exit {_MOUNT_FAILED}; exec "$@"'
    )
    for prefix in _unshare_prefixes():
        completed = subprocess.run(
            [*prefix, "sh", "-c", script, str(mount), *argv],
            capture_output=True,
            text=True,
            timeout=100,
            cwd=REPO,
        )
        unshare_failed = completed.returncode == 1 and completed.stderr.startswith("unshare:")
        if completed.returncode != _MOUNT_FAILED and not unshare_failed:
            return completed
    pytest.skip("a private tmpfs needs mount namespaces, which this system does not allow")


@pytest.mark.timeout(120)
def test_full_disk_failures_reported(tmp_path: Path) -> None:
    trace = _fault_trace(tmp_path)
    outside = _outside(tmp_path)
    mount = tmp_path / "disk"
    mount.mkdir()
    root = mount / "root"
    before = snapshot(outside)
    summary_file = tmp_path / "summary.json"
    command = [sys.executable, "-c", _REPLAY_AND_LIST, "replay", str(trace), "--root", str(root),
               "--threads", "1", "--json", str(summary_file)]

    rejected = _run_on_small_disk(mount, 1024, command)
    forced = _run_on_small_disk(mount, 1024, [*command, "--force"])

    assert _result(rejected.stdout)["exit_code"] == 1
    assert "bytes are free under" in rejected.stderr
    assert "--force to replay anyway" in rejected.stderr
    summary = json.loads(summary_file.read_text())
    result = _result(forced.stdout)
    assert forced.stderr == ""
    assert result["exit_code"] == 2
    assert "ENOSPC" in forced.stdout
    assert "No space left on device" in forced.stdout
    assert snapshot(outside) == before
    assert set(summary["failed"]) == {"ENOSPC"}
    assert summary["failed"]["ENOSPC"] >= 1
    assert all(
        message.endswith(": No space left on device")
        for message in summary["failure_messages"]["ENOSPC"]
    )
    assert summary["short_writes"] >= 1
    assert summary["events_replayed"] + summary["events_failed"] == 11
    assert sum(result["allocated"].values()) <= 1024 * 1024
    assert os.listdir(mount) == []
