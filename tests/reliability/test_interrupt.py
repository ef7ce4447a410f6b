"""Ctrl-C during ``greenpipe replay``: a partial summary, exit 130, no open files.

The replay runs in a subprocess through the command's entry point, so that
the process can report which descriptors are still open when the command
returns. The signal is sent once the replay keeps every traced file open,
which the test checks in ``/proc/PID/fd``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List

import pytest

from replay.conftest import call, write_trace

REPO = Path(__file__).resolve().parents[2]
OPEN_FILES = 40
READS = 2000

#: Runs the command, then prints one JSON line with its exit code and the
#: descriptors still open on files under the root.
_RUN_AND_LIST_FDS = """
import json, os, sys
from greenpipe.cli import main
root = os.path.realpath(sys.argv[sys.argv.index("--root") + 1])
code = main(sys.argv[1:])
left_open = []
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target.startswith(root + "/"):
        left_open.append(target)
print(json.dumps({"exit_code": code, "left_open": left_open}))
sys.exit(code)
"""


def _slow_trace(folder: Path, name: str = "slow.pfw") -> Path:
    """Open every file at once, then read them 5 ms apart for 10 s of trace time."""
    events = [
        call("open64", number + 1, fname=f"/data/f{number}", flags=os.O_RDWR | os.O_CREAT, ret=10 + number)
        for number in range(OPEN_FILES)
    ]
    for number in range(READS):
        ts = 1000 + 5000 * number
        fd = 10 + number % OPEN_FILES
        events.append(call("pread64", ts, fname=f"/data/f{fd - 10}", fd=fd, count=16, offset=0, ret=16))
    events += [
        call("close", 10**8 + number, fname=f"/data/f{number}", fd=10 + number, ret=0)
        for number in range(OPEN_FILES)
    ]
    return write_trace(folder / name, events)


def _open_under(pid: int, root: Path) -> List[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root) + "/"):
            found.append(target)
    return found


@pytest.mark.timeout(120)
def test_sigint_closes_descriptors_and_summarises(tmp_path: Path) -> None:
    trace = _slow_trace(tmp_path)
    root = (tmp_path / "root").resolve()
    summary_file = tmp_path / "summary.json"
    process = subprocess.Popen(
        [sys.executable, "-c", _RUN_AND_LIST_FDS, "replay", str(trace), "--root", str(root),
         "--timing", "original", "--threads", "2", "--json", str(summary_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_open_under(process.pid, root)) < OPEN_FILES:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the replay never opened every file"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    result = json.loads(out.strip().splitlines()[-1])
    summary = json.loads(summary_file.read_text())
    assert process.returncode == 130
    assert result["exit_code"] == 130
    assert result["left_open"] == []
    assert "Traceback" not in err
    assert err.startswith("\nInterrupted: stopping the replay and closing descriptors")
    assert out.startswith("greenpipe replay (interrupted): 1 trace file(s)")
    assert summary["interrupted"] is True
    assert summary["exit_code"] == 130
    assert summary["calls"]["open64"] == OPEN_FILES
    assert 0 < summary["events_replayed"] < OPEN_FILES * 2 + READS
    assert summary["failed"] == {}


def _children(pid: int) -> List[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _start_two_worker_replay(tmp_path: Path, stdout: Any) -> "subprocess.Popen[str]":
    """Start the command on two slow traces with one worker process each."""
    traces = [_slow_trace(tmp_path, f"slow{number}.pfw") for number in range(2)]
    root = (tmp_path / "root").resolve()
    return subprocess.Popen(
        [sys.executable, "-m", "greenpipe", "replay", *map(str, traces), "--root", str(root),
         "--timing", "original", "--processes", "2", "--threads", "1"],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def _wait_for_open_files(process: "subprocess.Popen[str]", root: Path) -> List[int]:
    """Return the worker processes once they keep every traced file open."""
    deadline = time.monotonic() + 60
    workers: List[int] = []
    while sum(len(_open_under(pid, root)) for pid in workers) < 2 * OPEN_FILES:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the workers never opened every file"
        workers = _children(process.pid)
        time.sleep(0.01)
    return workers


@pytest.mark.timeout(120)
def test_sigint_stops_worker_processes(tmp_path: Path) -> None:
    process = _start_two_worker_replay(tmp_path, subprocess.PIPE)
    workers: List[int] = []
    try:
        workers = _wait_for_open_files(process, (tmp_path / "root").resolve())
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 130
    assert "Traceback" not in err
    assert out.startswith("greenpipe replay (interrupted): 2 trace file(s)")
    assert len(workers) == 2
    assert [pid for pid in workers if os.path.exists(f"/proc/{pid}")] == []


@pytest.mark.timeout(120)
def test_workers_exit_when_the_command_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves the parent no time to stop its workers, so they stop on their own."""
    process = _start_two_worker_replay(tmp_path, subprocess.DEVNULL)
    workers: List[int] = []
    try:
        workers = _wait_for_open_files(process, (tmp_path / "root").resolve())
        process.kill()
        process.communicate(timeout=60)
        deadline = time.monotonic() + 60
        while [pid for pid in workers if _is_running(pid)]:
            assert time.monotonic() < deadline, "a worker outlived its parent by 60 s"
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        for pid in workers:
            if _is_running(pid):
                os.kill(pid, signal.SIGKILL)

    assert len(workers) == 2


def _is_running(pid: int) -> bool:
    """Return whether ``pid`` runs and is not a zombie waiting for its reaper."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


#: Runs the command with forked workers, and sends SIGINT to every child
#: the moment it is forked, before it has replaced its parent's handler.
_SIGINT_AT_FORK = """
import os, signal, sys
from greenpipe.cli import main
os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGINT))
sys.exit(main(sys.argv[1:], fork_workers=True))
"""


@pytest.mark.timeout(120)
def test_sigint_at_fork_spares_worker(tmp_path: Path) -> None:
    """A worker ignores SIGINT from its first instruction: the parent alone handles it."""
    data = REPO / "tests" / "data"
    traces = [
        data / "anku94_dftracer" / "examples" / "dfanalyzer" / "test-trace.pfw.gz",
        data / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw.gz",
        data / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw",
    ]
    summary_file = tmp_path / "summary.json"
    completed = subprocess.run(
        [sys.executable, "-c", _SIGINT_AT_FORK, "replay", *map(str, traces), "--dry-run",
         "--processes", "3", "--quiet", "-vv", "--json", str(summary_file)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert "forked 2 worker process(es)" in completed.stderr
    assert "Interrupted" not in completed.stderr
    assert "Traceback" not in completed.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["interrupted"] is False
    assert summary["worker_failures"] == []


#: Runs the command with forked workers, and sends SIGINT to the command
#: once, just after it forked its first worker.
_SIGINT_BETWEEN_FORKS = """
import os, signal, sys
from greenpipe.cli import main
sent = []
def interrupt_once():
    if not sent:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGINT)
os.register_at_fork(after_in_parent=interrupt_once)
sys.exit(main(sys.argv[1:], fork_workers=True))
"""


@pytest.mark.timeout(120)
def test_sigint_between_forks_fails_no_worker(tmp_path: Path) -> None:
    """Ctrl-C closes the cancel pipe while workers are forked, and later ones start cleanly."""
    data = REPO / "tests" / "data"
    traces = [
        data / "anku94_dftracer" / "examples" / "dfanalyzer" / "test-trace.pfw.gz",
        data / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw.gz",
        data / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw",
        data / "hariharan-devarajan_dftracer" / ".trace-0-of-2.pfw",
    ]
    summary_file = tmp_path / "summary.json"
    completed = subprocess.run(
        [sys.executable, "-c", _SIGINT_BETWEEN_FORKS, "replay", *map(str, traces), "--dry-run",
         "--processes", "4", "--quiet", "--json", str(summary_file)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )

    assert completed.returncode == 130, completed.stderr
    assert "Traceback" not in completed.stderr
    assert completed.stderr.count("Interrupted:") == 1
    summary = json.loads(summary_file.read_text())
    assert summary["interrupted"] is True
    assert summary["worker_failures"] == []
