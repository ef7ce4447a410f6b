"""The pipeline examples print the same on Dask as with the local backend.

Each example runs in this process twice through ``runpy``: once as it is,
once with every ``PipelineConfig`` switched to the Dask backend. Examples
whose pipelines run on a virtual clock (04, 06, 07) stay local-only,
because the Dask backend measures time on the real clock.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys

import pytest

from greenpipe.pipeline import PipelineConfig

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = ["05_error_handling.py", "09_task_graph.py"]


def run_example(script: str, capsys) -> str:
    capsys.readouterr()
    runpy.run_path(os.path.join(ROOT, "examples", script), run_name="__main__")
    return capsys.readouterr().out


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_same_output_on_dask(dask_client, monkeypatch, capsys, script):
    local = run_example(script, capsys)
    created = []
    original_init = PipelineConfig.__init__

    def dask_init(self):
        original_init(self)
        self.with_backend("dask", client=dask_client)
        created.append(self)

    monkeypatch.setattr(PipelineConfig, "__init__", dask_init)

    on_dask = run_example(script, capsys)

    assert created, "the example built no PipelineConfig"
    assert on_dask == local
    assert local.count("\n") >= 3


def test_docs_pipeline_blocks_on_dask(dask_client, monkeypatch):
    with open(os.path.join(ROOT, "docs", "pipeline.md"), encoding="utf-8") as file:
        text = file.read()
    blocks = [block.split("\n", 1)[1].split("```", 1)[0] for block in text.split("```python")[1:]]
    original_init = PipelineConfig.__init__

    def dask_init(self):
        original_init(self)
        self.with_backend("dask", client=dask_client)

    monkeypatch.setattr(PipelineConfig, "__init__", dask_init)

    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "docs/pipeline.md", "exec"), {"__name__": "docs_pipeline"})


def test_docs_dask_block_runs():
    with open(os.path.join(ROOT, "docs", "dask.md"), encoding="utf-8") as file:
        text = file.read()
    marker = "<!-- run by tests/dask/test_dask_examples.py -->\n```python\n"
    blocks = [part.split("```", 1)[0] for part in text.split(marker)[1:]]
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")

    assert len(blocks) == 1
    completed = subprocess.run(
        [sys.executable, "-c", blocks[0]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "328350\n"
