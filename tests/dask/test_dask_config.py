"""Choosing the backend, and what loads Dask and when."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

import greenpipe.dask
from greenpipe.pipeline import Pipeline, PipelineConfig, make_task
from greenpipe.testing import VirtualClock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeClient:
    def submit(self, *args):
        raise AssertionError("a config must not contact the cluster")


def test_backend_defaults_to_local():
    config = PipelineConfig()

    assert config.backend == "local"
    assert config.dask is None


def test_dask_backend_stores_options():
    client = FakeClient()

    config = PipelineConfig().with_backend(
        "dask", client=client, task_threads=2, cancel_grace=timedelta(seconds=3)
    )

    assert config.backend == "dask"
    assert config.dask is not None
    assert config.dask.client is client
    assert config.dask.address is None
    assert config.dask.task_threads == 2
    assert config.dask.cancel_grace == 3.0
    assert repr(config) == "<PipelineConfig 'pipeline' threads={} policy=fail_fast backend=dask>".format(
        config.threads
    )


def test_scheduler_file_accepts_path():
    config = PipelineConfig().with_backend("dask", scheduler_file=Path("/shared/scheduler.json"))

    assert config.dask is not None
    assert config.dask.scheduler_file == "/shared/scheduler.json"


def test_back_to_local_clears_options():
    config = PipelineConfig().with_backend("dask", address="tcp://127.0.0.1:8786")

    config.with_backend("local")

    assert config.backend == "local"
    assert config.dask is None


def test_unknown_backend_rejected():
    with pytest.raises(ValueError, match=r"^backend must be one of 'local', 'dask', not 'spark'$"):
        PipelineConfig().with_backend("spark")


def test_local_backend_rejects_options():
    with pytest.raises(
        ValueError,
        match=r"^the local backend takes no options; remove address, task_threads "
        r"or use with_backend\('dask', \.\.\.\)$",
    ):
        PipelineConfig().with_backend("local", address="tcp://127.0.0.1:8786", task_threads=2)


def test_several_connections_rejected():
    with pytest.raises(
        ValueError,
        match=r"^give at most one of address, scheduler_file and client, not address and client$",
    ):
        PipelineConfig().with_backend("dask", address="tcp://127.0.0.1:8786", client=FakeClient())


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"address": 8786}, TypeError, r"^address must be a non-empty string, not 8786$"),
        ({"address": ""}, TypeError, r"^address must be a non-empty string, not ''$"),
        (
            {"scheduler_file": 3},
            TypeError,
            r"^scheduler_file must be a path \(str or os.PathLike\), not 3$",
        ),
        ({"client": "tcp://x"}, TypeError, r"^client must be a distributed.Client, not 'tcp://x'$"),
        ({"task_threads": 0}, ValueError, r"^task_threads must be >= 1, not 0$"),
        ({"task_threads": 1.5}, TypeError, r"^task_threads must be an int, not 1.5$"),
        ({"cancel_grace": 0}, ValueError, r"^cancel_grace must be > 0 seconds, not 0$"),
    ],
)
def test_dask_options_checked(options, error, message):
    with pytest.raises(error, match=message):
        PipelineConfig().with_backend("dask", **options)


def test_virtual_clock_rejected_on_dask():
    config = PipelineConfig().with_backend("dask", client=FakeClient()).with_clock(VirtualClock())

    with pytest.raises(ValueError, match=r"^with_clock\(\) works only with the local backend"):
        Pipeline(config)


def test_dask_execute_rejects_destination_for_pipeline():
    task = make_task(lambda scope: 1, name="only")
    pipeline = Pipeline().set_destination(task)

    with pytest.raises(ValueError, match=r"^destination applies to task graphs; call set_destination"):
        greenpipe.dask.execute(pipeline, client=FakeClient(), destination=task)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def test_local_run_never_imports_dask():
    completed = run_python(
        """
        import sys

        import greenpipe
        import greenpipe.dask
        from greenpipe.graph import TaskGraph, split_every
        from greenpipe.pipeline import PipelineConfig

        graph = TaskGraph.builder("local")
        leaves = graph.parallel(4, lambda scope, i: i)
        total = graph.reduce(leaves, split_every(2), lambda scope, *values: sum(values))
        print(graph.execute(PipelineConfig().with_compute_threads(2), destination=total.task()))
        PipelineConfig().with_backend("dask", address="tcp://127.0.0.1:8786")
        loaded = sorted(
            name
            for name in sys.modules
            if name.partition(".")[0] in ("dask", "distributed", "cloudpickle", "tblib")
        )
        print(loaded)
        """
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["6", "[]"]


def test_no_client_found_is_explained():
    completed = run_python(
        """
        from greenpipe.pipeline import Pipeline, PipelineConfig, make_task

        task = make_task(lambda scope: 1, name="only")
        try:
            Pipeline(PipelineConfig().with_backend("dask")).set_destination(task).execute()
        except ValueError as error:
            print(error)
        """
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        "the dask backend found no Dask client; pass address=, scheduler_file= or client= "
        "to with_backend('dask', ...), or create a distributed.Client before execute()"
    ]


def test_gevent_patched_process_gets_clear_error():
    completed = run_python(
        """
        from gevent import monkey

        monkey.patch_all()

        import sys

        from greenpipe.dask import GeventPatchedError
        from greenpipe.pipeline import Pipeline, PipelineConfig, make_task

        task = make_task(lambda scope: 1, name="only")
        config = PipelineConfig().with_backend("dask", address="tcp://127.0.0.1:8786")
        try:
            Pipeline(config).set_destination(task).execute()
        except GeventPatchedError as error:
            print(error)
            print(sorted(error.modules))
        print(any(name.partition(".")[0] == "distributed" for name in sys.modules))
        """
    )

    assert completed.returncode == 0, completed.stderr
    message, modules, loaded = completed.stdout.splitlines()
    assert message.startswith(
        "the dask backend cannot run in a process patched by gevent.monkey (patched: socket, "
    )
    assert message.endswith(
        "run the pipeline from a process that does not call gevent.monkey.patch_all(), "
        "for example a subprocess, and keep gevent in the task bodies, which run on the "
        "Dask workers"
    )
    assert "'socket'" in modules
    assert "'threading'" in modules
    assert loaded == "False"


def test_dask_module_names_match_all():
    public = {name for name in dir(greenpipe.dask) if not name.startswith("_")}

    assert set(greenpipe.dask.__all__) == {
        "GeventPatchedError",
        "RemoteTaskError",
        "check_unpatched",
        "execute",
    }
    assert set(greenpipe.dask.__all__) <= public


def test_dask_timeouts_need_no_watchdog():
    config = (
        PipelineConfig()
        .with_backend("dask", client=FakeClient())
        .with_watchdog(False)
        .with_global_timeout(5)
        .with_task_timeout(1)
    )

    Pipeline(config)
    with pytest.raises(ValueError, match=r"^global_timeout needs the watchdog, which is off"):
        Pipeline(config.with_backend("local"))
