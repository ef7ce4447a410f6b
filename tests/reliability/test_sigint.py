"""SIGINT during ``greenpipe.run``, ``Executor.run`` and ``Pipeline.execute``.

Each test runs a script in a subprocess through ``sh``, so the exit status
is the one a shell reports. The script starts tasks that would run
forever, waits until every task is parked, prints ``ready``, and is then
interrupted: by SIGINT from the parent, by SIGINT that a worker's I/O
thread raises in its own thread, or by ``_thread.interrupt_main()``.

The script catches the ``KeyboardInterrupt`` only to print which
``finally`` blocks had run by then, and re-raises it. Expected: every
task's ``finally`` block ran before the exception reached the caller, the
traceback ends in ``KeyboardInterrupt``, and the shell reports exit status
130 (128 + SIGINT), all within the timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

# Seconds of real time that the child may take, from start-up to exit.
CHILD_TIMEOUT = 30.0

PRELUDE = """
import _thread
import os
import signal
import sys

import greenpipe
from greenpipe.testing import wait_all_blocked

INTERRUPT = sys.argv[1]
entered = []
finalized = []


def forever(scope, name):
    entered.append(name)
    try:
        while True:
            greenpipe.sleep(0.01)
    finally:
        finalized.append(name)


def announce_and_interrupt():
    # Runs in a task once every other task is parked.
    print("ready", os.getpid(), flush=True)
    if INTERRUPT == "io_thread":
        # signal.raise_signal() sends SIGINT to the calling thread only:
        # here an I/O thread, not the main thread that waits in run().
        greenpipe.current_scope().spawn_io(signal.raise_signal, signal.SIGINT)
    elif INTERRUPT == "interrupt_main":
        greenpipe.current_scope().spawn_io(_thread.interrupt_main)


def report():
    print("entered:", " ".join(sorted(entered)), flush=True)
    print("finalized:", " ".join(sorted(finalized)), flush=True)
"""

RUN_SCRIPT = """
def receive_forever(scope, name, channel):
    entered.append(name)
    try:
        for _ in channel:
            pass
    finally:
        finalized.append(name)


def root(scope):
    channel = greenpipe.make_channel(1)
    with channel.producer():
        for index in range(3):
            scope.spawn(receive_forever, f"receiver-{index}", channel, name=f"receiver-{index}")
        scope.spawn(forever, "ticker", name="ticker")
        wait_all_blocked()
        announce_and_interrupt()
        forever(scope, "root")


try:
    greenpipe.run(root, threads=2)
except KeyboardInterrupt:
    report()
    raise
"""

EXECUTOR_SCRIPT = """
def root(scope):
    scope.spawn(forever, "child", name="child")
    wait_all_blocked()
    announce_and_interrupt()
    forever(scope, "root")


with greenpipe.Executor(2) as executor:
    try:
        executor.run(root)
    except KeyboardInterrupt:
        # Still inside the with block: run() itself has stopped the tasks.
        report()
        raise
"""

PIPELINE_SCRIPT = """
from greenpipe import JoinHandle, Pipeline, PipelineConfig, make_task

started = JoinHandle(2)


def stage(name):
    def body(scope):
        started.done()
        started.wait()
        if name == "consumer":
            announce_and_interrupt()
        forever(scope, name)

    return make_task(body, name)


producer = stage("producer")
consumer = stage("consumer")
after = make_task(lambda scope, value: value, "after").depends_on(consumer)
config = PipelineConfig().with_name("endless").with_compute_threads(2).with_watchdog(False)
pipeline = Pipeline(config).set_source([producer, consumer]).set_destination(after)
try:
    pipeline.execute()
except KeyboardInterrupt:
    report()
    for task in pipeline.tasks():
        print("state:", task.name, task.state.value, flush=True)
    raise
"""


def run_interrupted(tmp_path, body: str, interrupt: str) -> tuple[int, list[str], str]:
    """Run a script until it exits; return its shell exit status, output lines and errors."""
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent(PRELUDE) + textwrap.dedent(body))
    # Python runs in the foreground of the shell, so it keeps the default
    # SIGINT handler (a shell without job control makes background jobs
    # ignore SIGINT). The signal goes to the Python process alone.
    command = '"$0" "$1" "$2"; echo "status $?"'
    process = subprocess.Popen(
        ["sh", "-c", command, sys.executable, str(script), interrupt],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A process group of its own, so a hung script dies with its shell.
        start_new_session=True,
    )
    try:
        ready = process.stdout.readline().split()
        assert ready[:1] == ["ready"], f"the script did not get ready: {ready!r}"
        if interrupt == "parent":
            os.kill(int(ready[1]), signal.SIGINT)
        out, err = process.communicate(timeout=CHILD_TIMEOUT)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the script hung or failed to start; stdout {out!r}, stderr {err!r}")
    lines = out.splitlines()
    status_line = lines[-1].split()
    assert status_line[0] == "status", lines
    return int(status_line[1]), lines[:-1], err


def field(lines: list[str], name: str) -> list[str]:
    """Return the words after ``name:`` on the line that starts with it."""
    for line in lines:
        if line.startswith(f"{name}:"):
            return line.split()[1:]
    raise AssertionError(f"no {name!r} line in {lines!r}")


INTERRUPTS = ["parent", "io_thread", "interrupt_main"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_sigint_during_run_cancels_tasks(tmp_path, interrupt):
    status, lines, err = run_interrupted(tmp_path, RUN_SCRIPT, interrupt)

    assert status == 128 + signal.SIGINT, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    expected = ["receiver-0", "receiver-1", "receiver-2", "root", "ticker"]
    assert field(lines, "entered") == expected
    assert field(lines, "finalized") == expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize("interrupt", ["parent"])
def test_sigint_during_run_from_gevent_caller(tmp_path, interrupt):
    """The caller waits in its gevent hub, not on a lock.

    Only a SIGINT that reaches the main thread is covered: see the note in
    ``GeventWaiter.park``.
    """
    body = "import gevent\ngevent.get_hub()\n" + textwrap.dedent(RUN_SCRIPT)
    status, lines, err = run_interrupted(tmp_path, body, interrupt)

    assert status == 128 + signal.SIGINT, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    expected = ["receiver-0", "receiver-1", "receiver-2", "root", "ticker"]
    assert field(lines, "finalized") == expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize("interrupt", ["parent", "io_thread"])
def test_sigint_during_executor_run_stops_root(tmp_path, interrupt):
    status, lines, err = run_interrupted(tmp_path, EXECUTOR_SCRIPT, interrupt)

    assert status == 128 + signal.SIGINT, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    assert field(lines, "finalized") == ["child", "root"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("interrupt", ["parent", "io_thread"])
def test_sigint_during_pipeline_cancels_tasks(tmp_path, interrupt):
    status, lines, err = run_interrupted(tmp_path, PIPELINE_SCRIPT, interrupt)

    assert status == 128 + signal.SIGINT, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    assert field(lines, "finalized") == ["consumer", "producer"]
    states = {line.split()[1]: line.split()[2] for line in lines if line.startswith("state:")}
    assert states == {"producer": "cancelled", "consumer": "cancelled", "after": "skipped"}
