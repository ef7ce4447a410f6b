from __future__ import annotations

import os
import random
from datetime import timedelta

import pytest

from greenpipe.pipeline import FailurePolicy, Pipeline, PipelineConfig
from greenpipe.testing import VirtualClock


def test_config_defaults():
    config = PipelineConfig()

    assert config.name == "pipeline"
    assert config.threads == (os.cpu_count() or 1)
    assert config.watchdog is True
    assert config.watchdog_interval == 1.0
    assert config.hold_threshold == 1.0
    assert config.global_timeout is None
    assert config.task_timeout is None
    assert config.idle_timeout == 300.0
    assert config.deadlock_timeout == 600.0
    assert config.failure_policy is FailurePolicy.FAIL_FAST
    assert config.error_handler is None
    assert config.clock is None


def test_config_builder_chains_and_stores():
    clock = VirtualClock()
    rng = random.Random(7)

    config = (
        PipelineConfig()
        .with_name("ingest")
        .with_compute_threads(3)
        .with_watchdog(interval=0.5, hold_threshold=timedelta(milliseconds=250))
        .with_global_timeout(timedelta(minutes=2))
        .with_task_timeout(30)
        .with_executor_idle_timeout(10)
        .with_executor_deadlock_timeout(timedelta(seconds=20))
        .with_failure_policy("continue")
        .with_clock(clock)
        .with_rng(rng)
    )

    assert config.name == "ingest"
    assert config.threads == 3
    assert config.watchdog_interval == 0.5
    assert config.hold_threshold == 0.25
    assert config.global_timeout == 120.0
    assert config.task_timeout == 30.0
    assert config.idle_timeout == 10.0
    assert config.deadlock_timeout == 20.0
    assert config.failure_policy is FailurePolicy.CONTINUE
    assert config.clock is clock
    assert config.rng is rng


def test_config_none_removes_limits():
    config = (
        PipelineConfig()
        .with_global_timeout(5)
        .with_global_timeout(None)
        .with_executor_idle_timeout(None)
        .with_executor_deadlock_timeout(None)
    )

    assert config.global_timeout is None
    assert config.idle_timeout is None
    assert config.deadlock_timeout is None


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("with_global_timeout", "global_timeout"),
        ("with_task_timeout", "task_timeout"),
        ("with_executor_idle_timeout", "idle_timeout"),
        ("with_executor_deadlock_timeout", "deadlock_timeout"),
    ],
)
@pytest.mark.parametrize("value", [-1, 0, -0.5, float("nan"), timedelta(seconds=-3)])
def test_config_rejects_non_positive_timeouts(method, name, value):
    config = PipelineConfig()

    with pytest.raises(ValueError, match=rf"^{name} must be > 0 seconds, not "):
        getattr(config, method)(value)


def test_config_rejects_timeout_of_wrong_type():
    with pytest.raises(TypeError, match=r"^global_timeout must be a number of seconds or a timedelta, not '5'$"):
        PipelineConfig().with_global_timeout("5")


@pytest.mark.parametrize("threads", [0, -2])
def test_config_rejects_threads_below_one(threads):
    with pytest.raises(ValueError, match=rf"^threads must be >= 1, not {threads}$"):
        PipelineConfig().with_compute_threads(threads)


def test_config_rejects_threads_of_wrong_type():
    with pytest.raises(TypeError, match=r"^threads must be an int, not 2.0$"):
        PipelineConfig().with_compute_threads(2.0)


def test_config_rejects_bad_watchdog_interval():
    with pytest.raises(ValueError, match=r"^interval must be > 0 seconds, not 0$"):
        PipelineConfig().with_watchdog(interval=0)
    with pytest.raises(ValueError, match=r"^hold_threshold must be > 0 seconds, not -1$"):
        PipelineConfig().with_watchdog(hold_threshold=-1)


def test_config_rejects_empty_name():
    with pytest.raises(ValueError, match=r"^name must be a non-empty string, not ''$"):
        PipelineConfig().with_name("")


def test_config_rejects_unknown_policy():
    with pytest.raises(
        ValueError, match=r"^policy must be one of 'fail_fast', 'continue', not 'retry'$"
    ):
        PipelineConfig().with_failure_policy("retry")


def test_config_rejects_uncallable_error_handler():
    with pytest.raises(TypeError, match=r"^on_error must be callable, not 3$"):
        PipelineConfig().with_failure_policy(FailurePolicy.CONTINUE, on_error=3)


def test_config_rejects_clock_without_now():
    with pytest.raises(TypeError, match=r"^clock must have a now\(\) method"):
        PipelineConfig().with_clock(object())


def test_pipeline_rejects_timeout_without_watchdog():
    config = PipelineConfig().with_task_timeout(5).with_watchdog(False)

    with pytest.raises(ValueError, match=r"^task_timeout needs the watchdog, which is off"):
        Pipeline(config)


def test_pipeline_copies_its_config():
    config = PipelineConfig().with_name("first")
    pipeline = Pipeline(config)

    config.with_name("second")

    assert pipeline.name == "first"
