"""Errors: a failing pipeline task, and a failing spawned task.

A task that raises stops the pipeline (the default fail-fast policy):
``execute()`` re-raises the original exception with a note naming the
task, and the tasks after it are skipped. A spawned task's exception goes
to the task that awaits its future, which may handle it.
"""

from __future__ import annotations

import greenpipe
from greenpipe.pipeline import Pipeline, PipelineConfig, make_task


def parse_config(scope) -> dict:
    return {"path": "/data/input.pfw", "workers": "four"}


def validate(scope, settings: dict) -> int:
    return int(settings["workers"])


def pipeline_failure() -> None:
    parse = make_task(parse_config, name="parse_config")
    check = make_task(validate, name="validate").depends_on(parse)
    report = check.then(lambda scope, workers: f"{workers} workers", name="report")
    pipeline = Pipeline(PipelineConfig().with_name("setup").with_compute_threads(2))
    pipeline.set_source(parse).set_destination(report)
    try:
        pipeline.execute()
    except ValueError as error:
        print(f"execute() raised {type(error).__name__}: {error}")
        for note in error.__notes__:
            print(f"  note: {note}")
    print(f"report task: {report.state.value}")


def flaky_download(scope, name: str) -> bytes:
    if name.endswith(".missing"):
        raise FileNotFoundError(name)
    return name.encode()


def spawned_failure(scope) -> None:
    futures = {
        name: scope.spawn(flaky_download, name)
        for name in ("a.pfw", "b.missing", "c.pfw")
    }
    for name, future in futures.items():
        try:
            print(f"{name}: {len(future.result())} bytes")
        except FileNotFoundError as error:
            print(f"{name}: handled FileNotFoundError({error})")


if __name__ == "__main__":
    pipeline_failure()
    greenpipe.run(spawned_failure, threads=2)
