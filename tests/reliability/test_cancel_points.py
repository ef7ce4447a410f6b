"""Cancellation at every blocking point of a multi-stage pipeline.

A hook counts the switches that tasks make into their hub: every park at
a blocking call and every ``sleep(0)``. Run ``k`` cancels at the ``k``-th
switch, from inside the switching task, for ``k = 1, 2, ...`` until a run
ends before its ``k``-th switch. With one worker and a seeded scheduler,
switch ``k`` is the same point of the program in every run, so together
the runs place the cancellation at each blocking point once.

After each run, the run has stopped (the per-test timeout and the
deadlock check catch a hang) and every ``finally`` block that started has
run. Every channel has ended with no sender or receiver parked on it, and
no item was duplicated or appeared from nowhere.
"""

from __future__ import annotations

import pytest
from .fuzz_support import run_fuzzed
from greenlet import getcurrent, greenlet
from .squares_pipeline import (
    EXPECTED,
    ITEMS,
    PIPELINE_NAME,
    Ledger,
    check_ledger,
    new_channels,
    run_pipeline,
    scope_pipeline,
)

from greenpipe import Cancelled, TaskState, _hub

# Far more runs than the pipeline has switches: reaching it means that the
# hook fired in every run, so the loop would never end.
MAX_RUNS = 500
FINAL_STATES = {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED}


def root_task(task):
    """Return the task above ``task`` that runs directly under a detached scope."""
    while task._parent_scope._task is not None:
        task = task._parent_scope._task
    return task


class CancelAtSwitch:
    """Stands in for the hub's switch: counts task switches, cancels at one.

    Only switches out of task greenlets count, so a runner greenlet going
    idle between two tasks is not a blocking point. ``mode`` picks what is
    cancelled: ``"root"`` cancels the root task, as a pipeline's timeout
    does, and ``"task"`` cancels only the task that is switching.
    """

    def __init__(self) -> None:
        self.target = 0
        self.count = 0
        self.fired = False
        self.mode = "root"
        self.cancelled_name = ""

    def arm(self, target: int, mode: str = "root") -> None:
        self.target = target
        self.mode = mode
        self.count = 0
        self.fired = False
        self.cancelled_name = ""

    def count_only(self) -> None:
        self.arm(0)

    def __call__(self, hub, *args):
        task = getattr(getcurrent(), "gp_task", None)
        if task is not None and not self.fired:
            self.count += 1
            if self.count == self.target:
                self.fired = True
                victim = root_task(task) if self.mode == "root" else task
                self.cancelled_name = victim.name
                victim.cancel()
        return greenlet.switch(hub, *args)


@pytest.fixture
def cancel_hook(monkeypatch):
    hook = CancelAtSwitch()
    monkeypatch.setattr(_hub, "_raw_switch", hook)
    return hook


def run_scopes(seed: int):
    ledger = Ledger()
    channels = new_channels()
    value, error = run_fuzzed(scope_pipeline, ledger, channels, seed=seed, threads=1)
    return ledger, channels, value, error


def test_scope_pipeline_switch_count_repeats(cancel_hook):
    totals = []
    for _ in range(2):
        cancel_hook.count_only()
        _, _, value, error = run_scopes(seed=11)
        assert error is None
        assert value == EXPECTED
        totals.append(cancel_hook.count)
    assert totals[0] == totals[1]
    assert totals[0] >= 2 * len(ITEMS), "the pipeline blocked less often than expected"


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_scope_pipeline_cancel_at_every_switch(cancel_hook, seed):
    cancel_hook.count_only()
    run_scopes(seed)
    total = cancel_hook.count

    for k in range(1, total + 2):
        cancel_hook.arm(k)
        ledger, channels, value, error = run_scopes(seed)
        assert cancel_hook.fired == (k <= total), f"switch {k} of {total}"
        check_ledger(ledger, channels)
        if error is not None:
            assert isinstance(error, Cancelled), f"cancelled at switch {k}: {error!r}"
        else:
            # The cancellation came after the last stage had delivered.
            assert value == EXPECTED


@pytest.mark.parametrize("mode", ["root", "task"])
def test_pipeline_cancel_at_every_switch(cancel_hook, mode):
    fired_runs = 0
    for k in range(1, MAX_RUNS + 1):
        cancel_hook.arm(k, mode)
        ledger = Ledger()
        channels = new_channels()
        value, error, pipeline = run_pipeline(ledger, channels, seed=5)
        check_ledger(ledger, channels)
        states = {task.name: task.state for task in pipeline.tasks()}
        assert set(states.values()) <= FINAL_STATES, f"tasks left unfinished: {states}"
        for name in ledger.returned:
            assert states[name] is TaskState.SUCCEEDED, f"switch {k}: {name} returned: {states}"
        if not cancel_hook.fired:
            assert error is None
            assert value == sum(EXPECTED)
            break
        fired_runs += 1
        if error is None:
            assert value == sum(EXPECTED)
            continue
        assert isinstance(error, Cancelled), f"cancelled at switch {k}: {error!r}"
        failed = [name for name, state in states.items() if state is TaskState.FAILED]
        stage = cancel_hook.cancelled_name
        if stage in states:
            # A stage that nothing in the pipeline cancelled counts as
            # failed, and the note names it; its siblings count as cancelled.
            assert failed == [stage]
            assert error.__notes__ == [f"raised by task {stage!r} of pipeline {PIPELINE_NAME!r}"]
        elif stage == "square-1-child":
            # The cancellation of a stage's child reaches the stage, which
            # then ends with it as if cancelled itself.
            assert failed == ["square-1"]
        else:
            # The scheduler was cancelled: the run stopped and no stage failed.
            assert failed == [], f"switch {k}: {states}"
    else:
        pytest.fail("the cancellation fired in every run")
    assert fired_runs >= 2 * len(ITEMS), "the pipeline blocked less often than expected"
