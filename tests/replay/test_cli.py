"""The greenpipe command, run in-process and as python -m greenpipe."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenpipe.cli import main

DATA = Path(__file__).resolve().parent.parent / "data"
SMALL = DATA / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw.gz"
REPO = Path(__file__).resolve().parents[2]


def run_cli(*argv: str):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_replay_prints_summary(tmp_path: Path) -> None:
    code, out, err = run_cli("replay", str(SMALL), "--root", str(tmp_path / "r"))

    assert code == 0
    assert "replayed 1,012, failed 0, skipped 0" in out
    assert "read 131,072,000, written 3,276,800" in out
    assert err == ""


def test_cli_json_has_summary_fields(tmp_path: Path) -> None:
    target = tmp_path / "s.json"

    code, out, _ = run_cli("replay", str(SMALL), "--root", str(tmp_path / "r"), "--json", str(target), "--quiet")

    data = json.loads(target.read_text())
    assert code == 0
    assert out == ""
    assert data["events_replayed"] == 1012
    assert data["exit_code"] == 0
    assert data["latency"]["read"]["count"] == 1000
    assert data["calls"]["read"] == 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", str(SMALL)], "greenpipe replay: The option --root DIR is required unless --dry-run is given. Run 'greenpipe replay --help' for the options.\n"),
        (["replay", str(SMALL), "--dry-run", "--threads", "0"], "greenpipe replay: Argument --threads: 0 is not allowed; give 1 or more. Run 'greenpipe replay --help' for the options.\n"),
        (["replay", str(SMALL), "--dry-run", "--timing", "fast"], "greenpipe replay: Argument --timing: 'fast' is not 'asap', 'original', 'think' or a speed factor such as 2. Run 'greenpipe replay --help' for the options.\n"),
        (["replay", str(SMALL), "--dry-run", "--sample", "2"], "greenpipe replay: Argument --sample: the sample rate must be between 0 and 1, not 2. Run 'greenpipe replay --help' for the options.\n"),
        (["replay", str(SMALL), "--dry-run", "--pid", "x"], "greenpipe replay: Argument --pid: 'x' is not a valid process id. Run 'greenpipe replay --help' for the options.\n"),
        (["replay", str(SMALL), "--dry-run", "--start", "10", "--end", "5"], "greenpipe replay: --end (5) must be greater than --start (10). Run 'greenpipe replay --help' for the options.\n"),
        (["frobnicate"], None),
    ],
)
def test_cli_bad_arguments_one_line(argv, message) -> None:
    code, out, err = run_cli(*argv)

    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "Traceback" not in err
    if message is not None:
        assert err == message


def test_cli_missing_input_named(tmp_path: Path) -> None:
    code, _, err = run_cli("replay", str(tmp_path / "nope.pfw"), "--root", str(tmp_path / "r"))

    assert code == 1
    assert err == (
        f"greenpipe replay: No trace files to replay: {tmp_path / 'nope.pfw'}: no such file "
        "or folder. Pass .pfw or .pfw.gz files or folders holding them.\n"
    )


def test_cli_non_trace_input_reported(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pfw"
    junk.write_bytes(b"\x00\x01 not json\nstill not json\n")

    code, out, _ = run_cli("replay", str(junk), "--root", str(tmp_path / "r"))

    assert code == 1
    assert f"problem  {junk}: no events decoded, 2 unusable lines; is it a DFTracer trace?" in out


def test_cli_rejects_non_empty_root(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir()
    (root / "precious.txt").write_text("keep")

    code, _, err = run_cli("replay", str(SMALL), "--root", str(root))

    assert code == 1
    assert "is not empty and was not created by a replay" in err
    assert (root / "precious.txt").read_text() == "keep"


def test_cli_free_space_check(tmp_path: Path, monkeypatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 1000))

    code, _, err = run_cli("replay", str(SMALL), "--root", str(tmp_path / "r"))
    forced, _, _ = run_cli("replay", str(SMALL), "--root", str(tmp_path / "r"), "--force")

    assert code == 1
    assert "would write about 3,276,800 bytes but only 1,000 bytes are free" in err
    assert forced == 0


def test_cli_failed_calls_exit_two(tmp_path: Path) -> None:
    trace = tmp_path / "t.pfw"
    trace.write_text(
        '{"name":"mkdir","cat":"POSIX","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X","args":{"fname":"/d"}}\n'
        '{"name":"mkdir","cat":"POSIX","pid":1,"tid":1,"ts":2,"dur":1,"ph":"X","args":{"fname":"/d"}}\n'
    )

    code, out, _ = run_cli("replay", str(trace), "--root", str(tmp_path / "r"))

    assert code == 2
    assert "replayed 1, failed 1" in out
    assert "File exists" in out


def test_cli_filters_and_dry_run(tmp_path: Path) -> None:
    code, out, _ = run_cli("replay", str(SMALL), "--dry-run", "--function", "read,open", "--exclude-function", "open")

    assert code == 0
    assert "seen 1,012, filtered 12" in out


def test_cli_interrupt_gives_partial_summary(tmp_path: Path) -> None:
    from greenpipe.replay import Replayer

    original_run = Replayer.run

    def cancelling_run(self):
        self.cancel()
        return original_run(self)

    Replayer.run = cancelling_run
    try:
        code, out, _ = run_cli("replay", str(SMALL), "--root", str(tmp_path / "r"))
    finally:
        Replayer.run = original_run

    assert code == 130
    assert "(interrupted)" in out


def test_python_m_greenpipe(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "greenpipe", "replay", str(SMALL), "--root", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )

    assert result.returncode == 0
    assert "replayed 1,012" in result.stdout
    assert result.stderr == ""


def test_sigint_exits_130(tmp_path: Path) -> None:
    import signal
    import time

    # Original timing stretches this trace over its traced 180 s, so the
    # signal always arrives while calls are being replayed.
    big = DATA / "anku94_dftracer" / "examples" / "dfanalyzer" / "test-trace.pfw.gz"
    root = tmp_path / "r"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "greenpipe", "replay", str(big),
            "--root", str(root), "--timing", "original",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + 60
    # The replay has started once the preparation step has made files.
    while len(list(root.glob("*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 130
    assert "(interrupted)" in out
    assert "Traceback" not in err


def test_example_script_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "examples/replay_trace.py", "examples/traces/dfanalyzer-test.pfw.gz", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )

    assert result.returncode == 0
    assert "1012 replayed, 0 failed" in result.stdout


def test_summary_escapes_control_characters_from_trace(tmp_path):
    trace = tmp_path / "crafted.pfw"
    crafted = r'"/nope\n  calls    replayed 1,000,000\u001b[31mFAKE"'
    # Making the same folder twice fails, and the failure message names it.
    trace.write_text(
        "".join(
            '{"name":"mkdir","cat":"POSIX","pid":1,"tid":1,"ts":%d,"dur":1,"ph":"X",'
            '"args":{"fname":%s,"mode":493}}\n' % (ts, crafted)
            for ts in (5, 10)
        )
    )
    out, err = io.StringIO(), io.StringIO()

    code = main(["replay", str(trace), "--root", str(tmp_path / "root")], stdout=out, stderr=err)

    text = out.getvalue()
    assert code == 2
    assert "\x1b" not in text
    assert sum(1 for line in text.splitlines() if line.lstrip().startswith("calls")) == 1
    assert "\\n  calls    replayed 1,000,000\\x1b[31mFAKE" in text


def test_file_size_limit_reports_short_writes(tmp_path):
    import resource

    trace = tmp_path / "big.pfw"
    trace.write_text(
        '{"name":"open64","cat":"POSIX","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X",'
        '"args":{"fname":"/big","flags":66,"mode":420,"ret":3}}\n'
        '{"name":"pwrite64","cat":"POSIX","pid":1,"tid":1,"ts":5,"dur":1,"ph":"X",'
        '"args":{"fname":"/big","fd":3,"count":4000000,"offset":0,"ret":4000000}}\n'
        '{"name":"close","cat":"POSIX","pid":1,"tid":1,"ts":9,"dur":1,"ph":"X",'
        '"args":{"fname":"/big","fd":3,"ret":0}}\n'
    )
    root = tmp_path / "root"
    limit = 1_000_000

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    completed = subprocess.run(
        [sys.executable, "-m", "greenpipe", "replay", str(trace), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size,
    )

    assert completed.returncode == 0, completed.stderr
    assert "short writes 1" in completed.stdout
    assert (root / "big").stat().st_size == limit


def test_summary_counts_unusable_lines(tmp_path):
    trace = tmp_path / "mixed.pfw"
    trace.write_text(
        '{"name":"open64","cat":"POSIX","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X",'
        '"args":{"fname":"/a","flags":66,"mode":420,"ret":3}}\n'
        "garbage line here\n"
        "{bad json\n"
    )
    out, err = io.StringIO(), io.StringIO()
    json_path = tmp_path / "summary.json"

    code = main(
        ["replay", str(trace), "--dry-run", "--json", str(json_path)], stdout=out, stderr=err
    )

    assert code == 0
    assert "unusable lines 2" in out.getvalue()
    assert json.loads(json_path.read_text())["bad_lines"] == 2


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "replay"])
def test_summary_counts_name_not_string(tmp_path, dry_run):
    # The decode stage looks names and categories up in sets, where a list
    # raises TypeError, so the reader must count such lines as bad.
    trace = tmp_path / "typed.pfw"
    trace.write_text(
        '{"name":"open64","cat":"POSIX","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X",'
        '"args":{"fname":"/a","flags":66,"mode":420,"ret":3}}\n'
        '{"name":["read"],"cat":"POSIX","pid":1,"tid":1,"ts":2,"dur":1,"ph":"X"}\n'
        '{"name":"read","cat":["POSIX"],"pid":1,"tid":1,"ts":3,"dur":1,"ph":"X"}\n'
    )
    json_path = tmp_path / "summary.json"
    mode = ["--dry-run"] if dry_run else ["--root", str(tmp_path / "root")]

    code, out, err = run_cli("replay", str(trace), *mode, "--json", str(json_path))

    summary = json.loads(json_path.read_text())
    assert code == 0, err
    assert "unusable lines 2" in out
    assert summary["bad_lines"] == 2
    assert summary["events_seen"] == 1


def test_unlistable_folder_reports_permission(tmp_path):
    from greenpipe.replay import find_trace_files

    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "a.pfw").write_text("")
    folder.chmod(0)
    try:
        if os.access(folder, os.R_OK):
            pytest.skip("running with a user that ignores permissions")
        files, problems = find_trace_files([str(folder)])
    finally:
        folder.chmod(0o755)

    assert files == []
    assert problems == [f"{folder}: permission denied; the folder cannot be listed"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "replay"])
def test_pipe_input_reported_not_opened(tmp_path: Path, dry_run: bool) -> None:
    # A replay reads each trace file more than once, and a pipe only once.
    # Opening the pipe would block, since nothing writes to it.
    pipe = tmp_path / "pipe.pfw"
    os.mkfifo(pipe)
    trace = tmp_path / "test.pfw.gz"
    trace.write_bytes(SMALL.read_bytes())
    json_path = tmp_path / "summary.json"
    mode = ["--dry-run"] if dry_run else ["--root", str(tmp_path / "root")]

    code, _, err = run_cli("replay", str(pipe), str(trace), *mode, "--json", str(json_path))

    summary = json.loads(json_path.read_text())
    assert summary["input_problems"] == [
        f"{pipe}: not a regular file (a pipe?); a replay reads each trace file "
        "more than once, so save the trace to a file first"
    ]
    assert summary["events_seen"] == 1012
    # As for a missing input, the other inputs are replayed.
    assert code == 0, err


@pytest.mark.timeout(60)
def test_json_output_onto_pipe_input_rejected(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.pfw"
    os.mkfifo(pipe)
    trace = tmp_path / "test.pfw.gz"
    trace.write_bytes(SMALL.read_bytes())

    code, _, err = run_cli("replay", str(pipe), str(trace), "--dry-run", "--json", str(pipe))

    assert code == 1, err
    assert "is the input trace" in err


@pytest.mark.parametrize("option", ["--json", "--emit-trace"])
def test_cli_output_onto_input_trace_rejected(tmp_path: Path, option: str) -> None:
    folder = tmp_path / "traces"
    folder.mkdir()
    trace = folder / "test.pfw.gz"
    trace.write_bytes(SMALL.read_bytes())
    original = trace.read_bytes()

    for given in (str(trace), str(folder)):
        code, out, err = run_cli("replay", given, "--root", str(tmp_path / "r"), option, str(trace))

        assert code == 1
        assert out == ""
        assert err.count("\n") == 1
        assert f"The {option} output '{trace}' is the input trace {trace}" in err
        assert trace.read_bytes() == original
        assert not (tmp_path / "r").exists()

