"""Helpers shared by the reliability tests: seeds, fuzzed runs, error leaves."""

from __future__ import annotations

import os
import random
import time
from typing import Any, Callable

from greenpipe import Executor
from greenpipe._errors import BaseExceptionGroup

SEEDS_VARIABLE = "GREENPIPE_STRESS_SEEDS"

# Seeds run when GREENPIPE_STRESS_SEEDS is unset: enough to catch a
# regression in CI, few enough to keep the suite fast.
DEFAULT_SEED_COUNT = 3


def stress_seeds() -> list[int]:
    """Return the seeds named by ``GREENPIPE_STRESS_SEEDS``.

    ``N`` selects seeds ``0 .. N-1`` and ``A:B`` selects ``A .. B-1``, so
    a soak can be split into shards and one failing seed can be rerun
    alone. Unset, it selects the first :data:`DEFAULT_SEED_COUNT` seeds.
    """
    text = os.environ.get(SEEDS_VARIABLE, "").strip()
    if not text:
        return list(range(DEFAULT_SEED_COUNT))
    try:
        if ":" in text:
            start, stop = (int(part) for part in text.split(":", 1))
        else:
            start, stop = 0, int(text)
    except ValueError:
        raise ValueError(
            f"{SEEDS_VARIABLE} must be a count N or a range A:B of integers, not {text!r}"
        ) from None
    if start < 0 or stop <= start:
        raise ValueError(
            f"{SEEDS_VARIABLE} must select at least one seed >= 0, not {text!r}"
        )
    return list(range(start, stop))


def run_fuzzed(
    body: Callable[..., Any],
    *args: Any,
    seed: int,
    threads: int,
    clock: Any = None,
) -> tuple[Any, BaseException | None]:
    """Run ``body(scope, *args)`` with randomized scheduling from ``seed``.

    Returns the value and the exception of the root task (one of them is
    ``None``). Before the executor shuts down, asserts that every task has
    ended and that no task, timer or offloaded call is left behind.
    """
    with Executor(
        threads,
        rng=random.Random(seed),
        randomize=True,
        clock=clock,
        deadlock_grace=0.5,
        name=f"fuzz-seed-{seed}",
    ) as executor:
        value = None
        error = None
        try:
            value = executor.run(body, *args)
        except BaseException as raised:  # noqa: BLE001 - the caller checks it
            error = raised
        stats = wait_for_no_live_tasks(executor)
        assert stats["live_tasks"] == 0, f"tasks still alive after the run: {stats}"
        assert stats["blocked_tasks"] == 0, f"tasks left parked: {stats}"
        assert stats["pending_timers"] == 0, f"timers left pending: {stats}"
        assert stats["io_in_flight"] == 0, f"offloaded calls left running: {stats}"
    return value, error


def wait_for_no_live_tasks(executor: Executor, timeout: float = 5.0) -> dict[str, Any]:
    """Return the executor's statistics once no task is alive, or at ``timeout``.

    The root task's future completes a moment before the task leaves the
    executor's books, so the caller of ``run()`` can see it alive briefly.
    """
    deadline = time.monotonic() + timeout
    while True:
        stats = executor.statistics()
        if stats["live_tasks"] == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.001)


def error_leaves(error: BaseException | None) -> list[BaseException]:
    """Return the exceptions inside ``error``, with groups flattened."""
    if error is None:
        return []
    if isinstance(error, BaseExceptionGroup):
        leaves: list[BaseException] = []
        for inner in error.exceptions:
            leaves.extend(error_leaves(inner))
        return leaves
    return [error]
