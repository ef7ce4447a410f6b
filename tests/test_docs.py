"""Run the code blocks of the README and docs that are marked as runnable."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "<!-- run by tests/test_docs.py -->"
BLOCK = re.compile(re.escape(MARK) + r"\s*```python\n(.*?)```", re.DOTALL)


def _blocks(relative_path: str) -> list[str]:
    with open(os.path.join(ROOT, relative_path), encoding="utf-8") as stream:
        return BLOCK.findall(stream.read())


@pytest.mark.parametrize("document", ["README.md", "docs/runtime.md"])
def test_marked_code_blocks_run(document):
    blocks = _blocks(document)
    assert blocks, f"{document} has no runnable block"

    for code in blocks:
        completed = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr


def test_readme_first_example_prints_documented_value():
    code = _blocks("README.md")[0]

    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )

    assert completed.stdout.strip() == "285"


def test_readme_main_command_replays_examples(tmp_path):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as stream:
        readme = stream.read()
    install_line = next(line for line in readme.splitlines() if line.startswith("pip install -e . && "))
    command = install_line.split("&& ", 1)[1].split()
    root = tmp_path / "replay-root"
    command[command.index("--root") + 1] = str(root)
    assert command[:2] == ["greenpipe", "replay"]
    executable = shutil.which("greenpipe")
    argv = [executable, *command[1:]] if executable else [sys.executable, "-m", "greenpipe", *command[1:]]

    completed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr
    calls = re.search(r"replayed ([\d,]+), failed (\d+), skipped ([\d,]+)", completed.stdout)
    assert calls is not None, completed.stdout
    replayed, failed, skipped = (int(group.replace(",", "")) for group in calls.groups())
    # Streams of one process share descriptors across threads, so the split
    # between replayed and skipped can move by a call or two between runs.
    assert failed == 0
    assert replayed + skipped == 9_540
    assert replayed >= 9_300
    assert root.is_dir()
