"""An exception raised in any stage of a pipeline reaches the caller.

Each stage of the squares pipeline raises in turn, on its first or its
second item. ``square-1`` raises in a child task that it spawned for the
item, one level below the stage. The caller must get the very exception
object that the stage raised, not a ``Cancelled`` of a sibling or a
group. Pipeline adds a note naming the failed task. A run built from
scopes adds no note, but the traceback leads to the stage's function.
Either way, the other stages are cancelled, their ``finally`` blocks run
and the channels end.
"""

from __future__ import annotations

import traceback

import pytest
from .fuzz_support import run_fuzzed
from .squares_pipeline import (
    PIPELINE_NAME,
    STAGES,
    Ledger,
    StageError,
    check_ledger,
    new_channels,
    run_pipeline,
    scope_pipeline,
)

from greenpipe import TaskState

# The functions in which each stage may raise. A square stage that got too
# few items raises in its own body when its input ends.
RAISING_FUNCTIONS = {
    "source": {"source"},
    "square-0": {"square"},
    "square-1": {"_square_child", "square"},
    "sink": {"sink"},
}


@pytest.mark.parametrize("fail_after", [0, 1])
@pytest.mark.parametrize("stage", [*STAGES, "total"])
@pytest.mark.parametrize("threads", [1, 2])
def test_pipeline_stage_error_names_task(threads, stage, fail_after):
    if stage == "total":
        # ``total`` handles no items: it can only fail at its start.
        fail_after = 0
    ledger = Ledger(stage, fail_after)
    channels = new_channels()

    value, error, pipeline = run_pipeline(ledger, channels, threads=threads, seed=3)

    assert value is None
    assert len(ledger.raised) == 1, f"stage {stage} did not raise"
    assert error is ledger.raised[0]
    assert isinstance(error, StageError)
    assert error.__notes__ == [f"raised by task {stage!r} of pipeline {PIPELINE_NAME!r}"]
    states = {task.name: task.state for task in pipeline.tasks()}
    assert [name for name, state in states.items() if state is TaskState.FAILED] == [stage]
    check_ledger(ledger, channels)


@pytest.mark.parametrize("fail_after", [0, 1])
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("threads", [1, 3])
def test_scope_stage_error_reaches_caller(threads, stage, fail_after):
    ledger = Ledger(stage, fail_after)
    channels = new_channels()

    value, error = run_fuzzed(scope_pipeline, ledger, channels, seed=3, threads=threads)

    assert value is None
    assert len(ledger.raised) == 1, f"stage {stage} did not raise"
    assert error is ledger.raised[0]
    frames = traceback.extract_tb(error.__traceback__)
    functions = [frame.name for frame in frames if not frame.name.startswith("_check")]
    assert functions[-1] in RAISING_FUNCTIONS[stage]
    check_ledger(ledger, channels)
