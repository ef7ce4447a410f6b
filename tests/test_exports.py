from __future__ import annotations

import greenpipe
import greenpipe.testing


def test_public_names_match_all():
    expected = {
        "AsyncGenerator",
        "Cancelled",
        "Channel",
        "ChannelClosedError",
        "ChannelProducer",
        "ChannelStatistics",
        "CoroScope",
        "CoroTask",
        "DeadlockError",
        "Executor",
        "ExecutorShutdownError",
        "GreenpipeError",
        "IOFuture",
        "JoinHandle",
        "SpawnFuture",
        "WhenAnyResult",
        "coroutine",
        "current_scope",
        "fail_after",
        "make_channel",
        "move_on_after",
        "run",
        "shield",
        "sleep",
        "timeout",
        "when_all",
        "when_any",
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
