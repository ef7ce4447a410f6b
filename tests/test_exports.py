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
        "FailurePolicy",
        "GreenpipeError",
        "IOFuture",
        "JoinHandle",
        "Pipeline",
        "PipelineConfig",
        "PipelineTimeoutError",
        "SpawnFuture",
        "Task",
        "TaskGraph",
        "TaskGroup",
        "TaskState",
        "TaskTimeoutError",
        "WhenAnyResult",
        "available_memory",
        "compute_channel_capacity",
        "compute_file_batch_size",
        "compute_memory_budget",
        "coroutine",
        "current_scope",
        "estimate_per_file_bytes",
        "fail_after",
        "make_channel",
        "make_task",
        "move_on_after",
        "num_outputs",
        "run",
        "shield",
        "sleep",
        "split_every",
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
