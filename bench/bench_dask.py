"""Time the Dask backend against local runs and against plain Dask tasks.

Run from the repository root::

    python bench/bench_dask.py [--tasks N] [--leaves N] [--repeat N] [--json PATH]

It starts a two-process ``LocalCluster`` (one thread per worker) on
127.0.0.1 and measures, as the best of ``--repeat`` runs:

* ``independent``: ``--tasks`` tasks that each return a number at once.
  They run as one pipeline on the local backend (2 threads), as the same
  pipeline on the Dask backend, and as plain Dask tasks of a function that
  does the same (``Client.get`` of a graph, then ``Client.gather``). The
  difference between the last two is what greenpipe adds per Dask task:
  pickling the body, an executor per body, and gathering every value to
  the client.
* ``tree``: a ``TaskGraph`` reduction of ``--leaves`` leaves with
  ``split_every(8)``, on the local backend and on the Dask backend.

Each time covers the whole ``execute()`` call, or the whole ``get`` and
``gather`` for plain Dask. The cluster is started once, before the first
timed run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from greenpipe.graph import TaskGraph, split_every  # noqa: E402
from greenpipe.pipeline import Pipeline, PipelineConfig, make_task  # noqa: E402


def number(scope: Any, i: int) -> int:
    return i


def plain_number(i: int) -> int:
    return i


def add_all(scope: Any, *values: int) -> int:
    return sum(values)


def independent_pipeline(config: PipelineConfig, tasks: int) -> int:
    graph = TaskGraph.builder("independent")
    group = graph.parallel(tasks, number)
    pipeline = Pipeline(config).set_source(graph)
    pipeline.execute()
    return sum(task.get() for task in group)


def tree_pipeline(config: PipelineConfig, leaves: int) -> int:
    graph = TaskGraph.builder("tree")
    group = graph.parallel(leaves, number)
    root = graph.reduce(group, split_every(8), add_all)
    result: int = graph.execute(config, destination=root.task())
    return result


def plain_dask(client: Any, tasks: int) -> int:
    graph = {f"plain-{i}": (plain_number, i) for i in range(tasks)}
    futures = client.get(graph, list(graph), sync=False)
    return sum(client.gather(futures))


def best_of(repeat: int, run: Callable[[], int], expected: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - started
        if result != expected:
            raise AssertionError(f"expected {expected}, got {result}")
        best = min(best, elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", type=int, default=500, help="number of independent tasks (default 500)"
    )
    parser.add_argument(
        "--leaves", type=int, default=1000, help="number of leaves of the tree (default 1000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per row; the fastest is kept (default 3)"
    )
    parser.add_argument("--json", help="path of a JSON file to write the results to as well")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    local = PipelineConfig().with_compute_threads(2).with_watchdog(False)
    load_before = os.getloadavg()
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster, Client(cluster, set_as_default=False) as client:
        on_dask = PipelineConfig().with_watchdog(False).with_backend("dask", client=client)
        tasks, leaves = args.tasks, args.leaves
        total = tasks * (tasks - 1) // 2
        tree_total = leaves * (leaves - 1) // 2
        rows = [
            ("independent", "greenpipe local, 2 threads", tasks,
             best_of(args.repeat, lambda: independent_pipeline(local, tasks), total)),
            ("independent", "greenpipe on Dask", tasks,
             best_of(args.repeat, lambda: independent_pipeline(on_dask, tasks), total)),
            ("independent", "plain Dask tasks", tasks,
             best_of(args.repeat, lambda: plain_dask(client, tasks), total)),
            ("tree", "greenpipe local, 2 threads", leaves,
             best_of(args.repeat, lambda: tree_pipeline(local, leaves), tree_total)),
            ("tree", "greenpipe on Dask", leaves,
             best_of(args.repeat, lambda: tree_pipeline(on_dask, leaves), tree_total)),
        ]
    load_after = os.getloadavg()

    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"CPython {platform.python_version()}, dask {metadata.version('dask')}, "
          f"distributed {metadata.version('distributed')}, {os.cpu_count()} CPUs")
    print()
    print("| benchmark | peer | tasks or leaves | total ms | ms per task |")
    print("|---|---|---:|---:|---:|")
    for name, peer, count, seconds in rows:
        print(f"| {name} | {peer} | {count:,} | {seconds * 1000:.1f} | {seconds * 1000 / count:.3f} |")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(
                {
                    "command": " ".join(sys.argv),
                    "load_average": [load_before, load_after],
                    "rows": [
                        {"benchmark": n, "peer": p, "count": c, "seconds": s}
                        for n, p, c, s in rows
                    ],
                },
                stream,
                indent=2,
            )


if __name__ == "__main__":
    main()
