from __future__ import annotations

import os
import subprocess
import sys
import time

import gevent
import gevent.socket
import pytest

import greenpipe
from greenpipe import Cancelled, Executor
from greenpipe.testing import wait_all_blocked


def test_gevent_sleep_parks_only_calling_task():
    def body(scope):
        started = time.monotonic()
        for _ in range(10):
            scope.spawn(lambda s: gevent.sleep(0.2))
        scope.join_all()
        return time.monotonic() - started

    elapsed = greenpipe.run(body, threads=1)

    # Ten sleeps of 0.2 s in sequence would take 2 s.
    assert 0.2 <= elapsed < 1.0


def test_gevent_socket_echo_over_loopback():
    def server(scope, listener, clients):
        def serve(s, connection):
            with connection:
                while True:
                    data = connection.recv(1024)
                    if not data:
                        return
                    connection.sendall(data)

        for _ in range(clients):
            connection, _ = listener.accept()
            scope.spawn(serve, connection)

    def client(scope, port, index):
        with gevent.socket.create_connection(("127.0.0.1", port)) as sock:
            message = f"hello {index}".encode()
            sock.sendall(message)
            received = b""
            while len(received) < len(message):
                received += sock.recv(1024)
            return received.decode()

    def body(scope):
        listener = gevent.socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        with listener:
            scope.spawn(server, listener, 5)
            futures = [scope.spawn(client, port, index) for index in range(5)]
            return [future.result() for future in futures]

    assert greenpipe.run(body, threads=1) == [f"hello {index}" for index in range(5)]


def test_cancel_task_parked_in_gevent_sleep():
    log = []

    def sleeper(scope):
        try:
            gevent.sleep(3600)
        except Cancelled:
            log.append("cancelled in gevent.sleep")
            raise

    def body(scope):
        future = scope.spawn(sleeper)
        greenpipe.sleep(0.05)
        future.cancel()
        scope.join_all()
        return future.cancelled()

    assert greenpipe.run(body, threads=2) is True
    assert log == ["cancelled in gevent.sleep"]


def test_future_awaited_from_plain_gevent_greenlet_is_cooperative():
    ticks = []

    def task(scope):
        greenpipe.sleep(0.2)
        return "task result"

    with Executor(2) as executor:
        future = executor.submit(task)

        def ticker():
            while not future.done():
                ticks.append(1)
                gevent.sleep(0.01)

        waiter = gevent.spawn(future.result)
        ticking = gevent.spawn(ticker)
        gevent.joinall([waiter, ticking], timeout=10)

    assert waiter.value == "task result"
    assert len(ticks) >= 5


def test_scope_from_plain_gevent_greenlet():
    def work(scope, index):
        greenpipe.sleep(0.01)
        return index * index

    with Executor(2) as executor:

        def user():
            with executor.open_scope() as scope:
                futures = [scope.spawn(work, index) for index in range(8)]
            return [future.result() for future in futures]

        greenlet = gevent.spawn(user)
        greenlet.join(timeout=10)

    assert greenlet.value == [index * index for index in range(8)]


def test_run_from_gevent_main_thread_keeps_other_greenlets_running():
    ticks = []
    stop = []

    def ticker():
        while not stop:
            ticks.append(1)
            gevent.sleep(0.01)

    def body(scope):
        greenpipe.sleep(0.2)
        return "done"

    ticking = gevent.spawn(ticker)
    gevent.sleep(0)
    result = greenpipe.run(body, threads=1)
    stop.append(True)
    ticking.join(timeout=5)

    assert result == "done"
    assert len(ticks) >= 5


def test_gevent_greenlet_inside_task_uses_greenpipe_future():
    def child(scope):
        greenpipe.sleep(0.01)
        return "from child"

    def body(scope):
        future = scope.spawn(child)
        helper = gevent.spawn(future.result)
        return helper.get(timeout=10)

    assert greenpipe.run(body, threads=2) == "from child"


def test_deadlock_report_while_gevent_greenlet_waits_in_task():
    def body(scope):
        wait_all_blocked()
        return "settled"

    assert greenpipe.run(body, threads=1) == "settled"


@pytest.mark.timeout(300)
def test_core_suite_passes_after_monkey_patch_all():
    """Run the core tests in a subprocess patched before anything imports."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import sys, threading, pytest\n"
        "assert monkey.is_module_patched('threading')\n"
        "sys.exit(pytest.main(sys.argv[1:]))\n"
    )
    files = [
        os.path.join(tests_dir, name)
        for name in (
            "test_executor.py",
            "test_scope.py",
            "test_coroutines.py",
            "test_deadlock.py",
            "test_testing_tools.py",
        )
    ]
    completed = subprocess.run(
        [sys.executable, "-c", script, "-q", "-p", "no:cacheprovider", *files],
        capture_output=True,
        text=True,
        timeout=280,
    )

    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    assert " passed" in completed.stdout


#: A module for gevent's ``format_context`` setting, which the first hub
#: that gevent creates imports. The import takes long enough that every
#: worker thread of a new executor arrives while the first one imports it.
SLOW_FORMAT_MODULE = """
from gevent import monkey

monkey.get_original("time", "sleep")(0.5)

from pprint import saferepr
"""


@pytest.mark.timeout(60)
def test_workers_start_while_hub_imports(tmp_path):
    """Start four workers after patch_all, with a slow hub import, in a subprocess.

    Patched, the import system's module locks are gevent locks. A worker
    that finds the module's lock held creates a hub to wait on it, and
    that hub imports the same module.
    """
    (tmp_path / "slow_format.py").write_text(SLOW_FORMAT_MODULE)
    script = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import greenpipe\n"
        "print(greenpipe.run(lambda scope: 'started', threads=4))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "GEVENT_FORMAT_CONTEXT": "slow_format.saferepr",
    }
    try:
        completed = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=env,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the executor's workers did not start within 20 s")

    assert completed.returncode == 0, completed.stderr[-4000:]
    assert completed.stdout.strip() == "started"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("patch_first", [True, False])
def test_runtime_keeps_real_threads_whatever_the_import_order(patch_first):
    """The runtime takes unpatched primitives, and imports gevent only if the program did."""
    script = (
        "import _thread, sys, time\n"
        "real_lock, real_sleep = _thread.allocate_lock, time.sleep\n"
        + ("from gevent import monkey; monkey.patch_all()\n" if patch_first else "")
        + "import greenpipe, greenpipe.cli\n"
        "from greenpipe import _compat\n"
        + ("" if patch_first else "assert 'gevent' not in sys.modules, 'gevent imported'\n")
        + "from gevent import monkey; monkey.patch_all()\n"
        "assert _thread.allocate_lock is not real_lock\n"
        "assert _compat.allocate_lock is real_lock, 'patched lock'\n"
        "assert _compat.real_sleep is real_sleep, 'patched sleep'\n"
        "print(greenpipe.run(lambda scope: 'ran', threads=2))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=50
    )

    assert completed.returncode == 0, completed.stderr[-4000:]
    assert completed.stdout.strip() == "ran"
