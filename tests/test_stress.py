from __future__ import annotations

import gc
import itertools
import random
from collections import Counter

import pytest
from greenlet import greenlet

import greenpipe
from greenpipe import Cancelled
from greenpipe._compat import os_thread_count

TOTAL_TASKS = 100_000


def _spawn_tree(seed: int, total: int, threads: int):
    """Spawn ``total`` tasks in nested scopes, cancelling some at random."""
    ids = itertools.count(1)
    entered: list[int] = []
    finalized: list[int] = []
    futures: dict[int, greenpipe.SpawnFuture] = {}

    def node(scope, node_id):
        entered.append(node_id)
        try:
            rng = random.Random(seed * 1_000_003 + node_id)
            fanout = rng.choice((2, 3, 8))

            def spawn_children(target):
                spawned = []
                for _ in range(fanout):
                    child_id = next(ids)
                    if child_id >= total:
                        break
                    future = target.spawn(node, child_id)
                    futures[child_id] = future
                    spawned.append(future)
                return spawned

            if rng.random() < 0.3:
                # Children in a nested scope that is sometimes cancelled whole.
                def nested(inner):
                    spawn_children(inner)
                    if rng.random() < 0.1:
                        inner.cancel()
                    greenpipe.sleep(0)

                scope.scope(nested)
            else:
                children = spawn_children(scope)
                for future in children:
                    if rng.random() < 0.05:
                        future.cancel()
                greenpipe.sleep(0)
        finally:
            finalized.append(node_id)

    def root(scope):
        futures[0] = scope.spawn(node, 0)

    greenpipe.run(root, threads=threads, rng=random.Random(seed))
    return entered, finalized, futures


def _live_greenlets() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet) and obj and not obj.dead)


@pytest.mark.stress
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [1, 2])
def test_nested_spawns_with_random_cancellation(seed):
    threads_before = os_thread_count()
    greenlets_before = _live_greenlets()

    entered, finalized, futures = _spawn_tree(seed, TOTAL_TASKS, threads=8)

    entered_counts = Counter(entered)
    assert len(futures) == TOTAL_TASKS
    assert all(count == 1 for count in entered_counts.values()), "a task body ran twice"
    assert Counter(finalized) == entered_counts, "a finally block did not run"
    never_started = [node_id for node_id in futures if node_id not in entered_counts]
    assert all(futures[node_id].cancelled() for node_id in never_started)
    assert all(future.done() for future in futures.values())
    assert any(future.cancelled() for future in futures.values())
    for future in futures.values():
        if not future.cancelled():
            with pytest.raises(Exception) if future.exception() else _nothing():
                future.result()
    assert os_thread_count() == threads_before
    assert _live_greenlets() <= greenlets_before


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def test_small_tree_all_tasks_accounted():
    entered, finalized, futures = _spawn_tree(7, 500, threads=3)

    assert Counter(entered) == Counter(finalized)
    assert set(entered) | {n for n, f in futures.items() if f.cancelled()} == set(futures)


def test_cancelled_counts_as_cancel_not_failure():
    assert issubclass(Cancelled, BaseException)
    assert not issubclass(Cancelled, Exception)
