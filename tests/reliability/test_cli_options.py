"""Every option of ``greenpipe replay`` rejects bad values in one line.

The table below has at least one invalid value for each option that the
parser defines, and ``test_table_covers_every_option`` fails when an option
is added without one. Each case must exit with code 1, print nothing on
standard output, print one line on standard error that names the bad value,
and print no traceback.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import List, Tuple

import pytest

from greenpipe.cli import build_parser, main

DATA = Path(__file__).resolve().parent.parent / "data"
TRACE = str(DATA / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw.gz")

#: (option, extra arguments, text the error must contain). ``{dir}`` is a
#: scratch folder holding a file ``afile``, a non-empty folder ``full`` and
#: an empty folder ``empty``. Cases without ``--root`` add ``--dry-run``.
CASES: List[Tuple[str, List[str], str]] = [
    ("traces", ["{dir}/missing.pfw"], "missing.pfw: no such file or folder"),
    ("traces", ["{dir}/empty"], "empty: no trace files"),
    ("traces", ["/dev/zero"], "/dev/zero: no trace files"),
    ("--root", ["--root", "{dir}/afile"], "'{dir}/afile' exists and is not a folder"),
    ("--root", ["--root", "{dir}/afile/sub"], "'{dir}/afile/sub': Not a directory"),
    ("--root", ["--root", "{dir}/full"], "'{dir}/full' is not empty"),
    ("--root", ["--root", "/"], "cannot be '/'"),
    ("--root", ["--root", ""], "empty folder name ''"),
    ("--timing", ["--timing", "fast"], "'fast'"),
    ("--timing", ["--timing", "0"], "not 0"),
    ("--timing", ["--timing", "-2"], "not -2"),
    ("--timing", ["--timing", "nan"], "not nan"),
    ("--timing", ["--timing", "inf"], "not inf"),
    ("--timing", ["--timing", "1e10"], "not 1e10"),
    ("--order", ["--order", "fifo"], "'fifo' is not an order mode"),
    ("--order", ["--order", ""], "'' is not an order mode"),
    ("--speed", ["--speed", "fast"], "'fast'"),
    ("--speed", ["--speed", "0"], "not 0"),
    ("--speed", ["--speed", "nan"], "not nan"),
    ("--speed", ["--timing", "original", "--speed", "1e10"], "not 1e10"),
    ("--speed", ["--timing", "2", "--speed", "3"], "--timing 2 and --speed 3"),
    ("--speed", ["--speed", "2"], "--speed 2 needs --timing original or --timing think"),
    ("--dry-run", ["--dry-run=yes"], "'yes'"),
    ("--threads", ["--threads", "0"], "0 is not allowed"),
    ("--threads", ["--threads", "-3"], "-3 is not allowed"),
    ("--threads", ["--threads", "two"], "'two'"),
    ("--threads", ["--threads", "1.5"], "'1.5'"),
    ("--threads", ["--threads", "100000"], "100000 threads"),
    ("--processes", ["--processes", "0"], "0 is not allowed"),
    ("--processes", ["--processes", "many"], "'many'"),
    ("--processes", ["--processes", "100000"], "100000 processes"),
    ("--force", ["--force=1"], "'1'"),
    ("--dask", ["--dask", ""], "''"),
    ("--dask", ["--dask", "nonsense://x"], "'nonsense://x'"),
    ("--dask", ["--dask", "127.0.0.1"], "'127.0.0.1'"),
    ("--dask", ["--dask", "tcp://127.0.0.1:1", "--processes", "2"], "--processes (2)"),
    ("--scheduler-file", ["--scheduler-file", "{dir}/missing.json"], "'{dir}/missing.json' was not found"),
    ("--scheduler-file", ["--scheduler-file", "{dir}/afile", "--dask", "tcp://127.0.0.1:1"], "not allowed with argument --scheduler-file"),
    ("--pid", ["--pid", "12,x"], "'x'"),
    ("--pid", ["--pid", ","], "','"),
    ("--exclude-pid", ["--exclude-pid", "1.5"], "'1.5'"),
    ("--tid", ["--tid", "abc"], "'abc'"),
    ("--exclude-tid", ["--exclude-tid", ""], "''"),
    ("--category", ["--category", " , "], "' , '"),
    ("--exclude-category", ["--exclude-category", ""], "''"),
    ("--function", ["--function", ","], "','"),
    ("--exclude-function", ["--exclude-function", ",,"], "',,'"),
    ("--start", ["--start", "-1"], "'-1'"),
    ("--start", ["--start", "soon"], "'soon'"),
    ("--end", ["--end", "1.5"], "'1.5'"),
    ("--end", ["--start", "10", "--end", "10"], "--end (10)"),
    ("--min-size", ["--min-size", "-5"], "'-5'"),
    ("--max-size", ["--max-size", "1k"], "'1k'"),
    ("--max-size", ["--min-size", "10", "--max-size", "5"], "--max-size (5)"),
    ("--sample", ["--sample", "half"], "'half'"),
    ("--sample", ["--sample", "1.5"], "not 1.5"),
    ("--sample", ["--sample", "-0.1"], "not -0.1"),
    ("--sample", ["--sample", "nan"], "not nan"),
    ("--seed", ["--seed", "x"], "'x'"),
    ("--sample-by", ["--sample-by", "host", "--sample", "0.5"], "'host'"),
    ("--sample-by", ["--sample-by", "file"], "--sample-by file needs a rate"),
    ("--ranks", ["--ranks", "1-x"], "'1-x'"),
    ("--ranks", ["--ranks", "5-2"], "'5-2'"),
    ("--ranks", ["--ranks", "-1"], "'-1'"),
    ("--ranks", ["--ranks", ","], "','"),
    ("--ranks", ["--ranks", "0,3"], "names rank 3"),
    ("--data", ["--data", "ones"], "'ones'"),
    ("--data", ["--data", "random:x"], "'random:x'"),
    ("--data", ["--data", "random:1", "--verify"], "--data random:1"),
    ("--data", ["--data", "zero", "--verify"], "--data zero"),
    ("--verify", ["--verify=1"], "'1'"),
    ("--size-scale", ["--size-scale", "0"], "not 0"),
    ("--size-scale", ["--size-scale", "big"], "'big'"),
    ("--size-scale", ["--size-scale", "nan"], "not nan"),
    ("--size-scale", ["--size-scale", "1e9"], "not 1e9"),
    ("--align", ["--align", "0"], "0 is not allowed"),
    ("--align", ["--align", "4k"], "'4k'"),
    ("--copies", ["--copies", "0"], "0 is not allowed"),
    ("--copies", ["--copies", "5000"], "5000 copies"),
    ("--max-events", ["--max-events", "-1"], "'-1'"),
    ("--max-bytes", ["--max-bytes", "10MB"], "'10MB'"),
    ("--json", ["--json", "{dir}/full"], "{dir}/full: Is a directory"),
    ("--json", ["--json", "{dir}/nowhere/s.json"], "{dir}/nowhere/s.json: No such file"),
    ("--json", ["--json", ""], "empty file name ''"),
    ("--report", ["--report", ""], "empty folder name ''"),
    ("--report", ["--report", "{dir}/afile"], "{dir}/afile exists and is not a folder"),
    ("--report", ["--root", "{dir}/root", "--report", "{dir}/root/report"], "is inside --root"),
    ("--emit-trace", ["--emit-trace", ""], "empty file name ''"),
    ("--emit-trace", ["--emit-trace", "{dir}/out.pfw"], "--emit-trace needs a replay"),
    ("--emit-trace", ["--root", "{dir}/root", "--emit-trace", "{dir}/root/t.pfw"], "is inside --root"),
    ("--emit-trace", ["--root", "{dir}/root", "--emit-trace", "{dir}/full"], "{dir}/full: Is a directory"),
    ("--emit-trace", ["--root", "{dir}/root", "--emit-trace", "{dir}/nowhere/t.pfw"], "{dir}/nowhere/t.pfw: No such file"),
    (
        "--emit-trace",
        ["--root", "{dir}/root", "--emit-trace", "{dir}/t.pfw", "--dask", "tcp://127.0.0.1:1"],
        "not supported with --dask",
    ),
    ("--quiet", ["--quiet=1"], "'1'"),
    ("--verbose", ["--verbose=2"], "'2'"),
    ("--help", ["--help=x"], "'x'"),
    ("unknown", ["--frobnicate"], "--frobnicate"),
    ("missing value", ["--threads"], "--threads: expected one argument"),
]


def _replay_options() -> set:
    parser = build_parser()
    commands = next(
        action
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    replay = commands.choices["replay"]
    found = set()
    for action in replay._actions:
        if action.option_strings:
            found.add(max(action.option_strings, key=len))
        else:
            found.add(action.dest)
    return found


def test_table_covers_every_option() -> None:
    covered = {option for option, _, _ in CASES}

    assert _replay_options() <= covered


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("y")
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("option", "extra", "named"),
    CASES,
    ids=[f"{option} {' '.join(extra)}" for option, extra, _ in CASES],
)
def test_invalid_value_one_line(scratch: Path, option: str, extra: List[str], named: str) -> None:
    extra = [value.replace("{dir}", str(scratch)) for value in extra]
    named = named.replace("{dir}", str(scratch))
    traces = [] if option == "traces" else [TRACE]
    dry_run = [] if "--root" in extra or "--dry-run=yes" in extra else ["--dry-run"]
    out, err = io.StringIO(), io.StringIO()

    code = main(["replay", *traces, *extra, *dry_run], stdout=out, stderr=err)

    message = err.getvalue()
    assert code == 1
    assert out.getvalue() == ""
    assert message.count("\n") == 1
    assert message.endswith(".\n")
    assert message.startswith("greenpipe replay: ")
    assert "Traceback" not in message
    assert named in message


def test_invalid_root_touches_nothing(scratch: Path) -> None:
    before = sorted(path.name for path in scratch.rglob("*"))

    for root in (scratch / "afile" / "sub", scratch / "full"):
        main(["replay", TRACE, "--root", str(root)], stdout=io.StringIO(), stderr=io.StringIO())

    assert sorted(path.name for path in scratch.rglob("*")) == before
    assert (scratch / "afile").read_text() == "x"
