"""Run every example script in a subprocess and check what it prints."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")

# Script name, extra arguments, lines that must appear in its output.
CASES = [
    (
        "01_producers_one_writer.py",
        [],
        [
            "producers sent 1000 lines from 4 files",
            "writer wrote 1000 lines",
            "channel ended: True",
        ],
    ),
    (
        "02_fan_out_fan_in.py",
        [],
        [
            "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
            "sum of squares: 285",
            "word counts: [('brown', 1), ('dog', 1), ('end', 1), ('fox', 1), ('jumps', 1), "
            "('lazy', 1), ('over', 1), ('quick', 1), ('the', 3)]",
        ],
    ),
    (
        "03_two_level_parallelism.py",
        [],
        [
            "log-0.txt: 300 lines, 1500 words, 5890 bytes",
            "log-1.txt: 1200 lines, 6000 words, 24090 bytes",
            "log-2.txt: 50 lines, 250 words, 940 bytes",
            "total: 1550 lines, 7750 words, 30920 bytes",
        ],
    ),
    (
        "04_three_stage_backpressure.py",
        [],
        [
            "writer wrote 24 items, sum of squares 4324",
            "virtual time: 12.0 s (24 items x 0.5 s)",
            "work channel peak 2 of capacity 2",
            "results channel peak 2 of capacity 2",
        ],
    ),
    (
        "05_error_handling.py",
        [],
        [
            "execute() raised ValueError: invalid literal for int() with base 10: 'four'",
            "  note: raised by task 'validate' of pipeline 'setup'",
            "report task: skipped",
            "a.pfw: 5 bytes",
            "b.missing: handled FileNotFoundError(b.missing)",
            "c.pfw: 5 bytes",
        ],
    ),
    (
        "06_timeouts_cancellation.py",
        [],
        [
            "global timeout: pipeline 'nightly' timed out after 30 s; "
            "running tasks: 'stuck_upload' (at 30 s)",
            "task timeout: task 'slow' of pipeline 'ingest' timed out after 5 s "
            "and was cancelled (at 7 s)",
            "  fast: succeeded, slow: failed",
            "checksum loop stopped after the cancel; ran at least 100 steps: True",
            "race a: cache won with 'a from cache' after 0.01 s",
            "race b: disk won with 'b from disk' after 0.20 s",
            "race c: timeout won with None after 1.00 s",
        ],
    ),
    (
        "07_when_all_when_any.py",
        [],
        [
            "when_all: count=42 name='trace-0.pfw.gz' sizes=[512, 2048, 128] after 0.3 s",
            "when_all with a future: total=2688 doubled=84",
            "when_any: index 1 won with 'trace-0.pfw.gz' after 0.2 s; the others were cancelled",
        ],
    ),
    (
        "08_streaming_trace_lines.py",
        [],
        [
            "lazy generator: 202 lines in total",
            "async generator: 200 events {'POSIX': 160, 'STDIO': 40}",
            "async generator: 409600 bytes read or written",
            "first three calls: ['open64', 'read', 'write']",
        ],
    ),
    (
        "09_task_graph.py",
        [],
        [
            "graph tasks: 11 (6 metadata, 5 reducers)",
            "chunk rank-0.log from line 0: 250 lines",
            "chunk rank-1.log from line 400: 400 lines",
            "extracted 2395 lines from 10 chunks",
        ],
    ),
    (
        "10_budgeted_channel.py",
        [str(8 * 1024 * 1024)],
        [
            "memory budget: 8 MiB",
            "per-file estimate: 64 MiB, files at once: 4",
            "channel capacity: 32 batches of 256 KiB",
            "workers received 2752512 bytes, expected 2752512",
        ],
    ),
]


def test_every_example_has_a_case():
    scripts = sorted(
        name for name in os.listdir(EXAMPLES) if name[:2].isdigit() and name.endswith(".py")
    )

    assert scripts == sorted(case[0] for case in CASES)


@pytest.mark.parametrize(("script", "args", "expected"), CASES, ids=[case[0] for case in CASES])
def test_example_runs_and_prints(script, args, expected):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    completed = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=EXAMPLES,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    lines = completed.stdout.splitlines()
    for line in expected:
        assert line in lines


def test_docs_code_blocks_run():
    with open(os.path.join(ROOT, "docs", "pipeline.md"), encoding="utf-8") as file:
        text = file.read()
    blocks = [block.split("\n", 1)[1] for block in text.split("```python")[1:]]
    blocks = [block.split("```", 1)[0] for block in blocks]

    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "docs/pipeline.md", "exec"), {})
