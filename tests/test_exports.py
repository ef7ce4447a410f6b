from __future__ import annotations

import greenpipe
import greenpipe.testing


def test_public_names_match_all():
    expected = {
        "Cancelled",
        "CoroScope",
        "CoroTask",
        "DeadlockError",
        "Executor",
        "ExecutorShutdownError",
        "GreenpipeError",
        "IOFuture",
        "SpawnFuture",
        "coroutine",
        "current_scope",
        "run",
        "sleep",
    }

    public = {name for name in dir(greenpipe) if not name.startswith("_")}

    assert set(greenpipe.__all__) == expected
    assert expected <= public


def test_testing_names_match_all():
    assert set(greenpipe.testing.__all__) == {
        "Sequencer",
        "VirtualClock",
        "wait_all_blocked",
    }
