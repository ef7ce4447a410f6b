"""Run the code blocks of the README and docs that are marked as runnable."""

from __future__ import annotations

import os
import re
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
