"""The compiled Event type against its pure-Python reference."""

from __future__ import annotations

import copy
import gc
import os
import pickle
import subprocess
import sys
import textwrap
import weakref
from typing import Any, List

import pytest

from greenpipe.trace import Decoder, Event
from greenpipe.trace import _decode
from greenpipe.trace._event import PyEvent

from block_growth import least_block_growth

compiled = pytest.mark.skipif(Event is PyEvent, reason="the compiled extension is not built")

FIELDS = ("pread", "POSIX", 7, 8, 1_700_000_000_000_000, 12, "X", {"fd": 3, "size": 4096})


class Marker:
    """An object whose death a weak reference can observe."""


@pytest.mark.parametrize("kind", [Event, PyEvent], ids=["compiled", "python"])
def test_fields_equality_and_pickling(kind: Any) -> None:
    event = kind(*FIELDS, path="/data/a", hostname="node1")

    assert event.name == "pread"
    assert event.ts == 1_700_000_000_000_000
    assert event.args == {"fd": 3, "size": 4096}
    assert (event.path, event.hostname) == ("/data/a", "node1")
    assert event == kind(*FIELDS, path="/data/a", hostname="node1")
    assert event != kind(*FIELDS, path="/data/b", hostname="node1")
    assert pickle.loads(pickle.dumps(event)) == event
    assert copy.deepcopy(event) == event
    with pytest.raises(TypeError):
        hash(event)


@compiled
def test_compiled_and_python_events_read_the_same() -> None:
    fast = Event(*FIELDS)
    slow = PyEvent(*FIELDS)

    assert repr(fast) == repr(slow)
    assert Event.__slots__ == PyEvent.__slots__
    assert [getattr(fast, name) for name in Event.__slots__] == [
        getattr(slow, name) for name in PyEvent.__slots__
    ]
    assert (fast == slow) is False  # different types never compare equal


@compiled
@pytest.mark.parametrize(
    "numbers",
    [("7", "8", "9", "1"), (7.5, True, None, b"x"), (-1, 2**70, 0, 3)],
    ids=["strings", "other-types", "ints"],
)
def test_repr_formats_numbers_like_python(numbers: Any) -> None:
    fields = ("read", "POSIX", *numbers, "X", {"fd": 3})

    assert repr(Event(*fields)) == repr(PyEvent(*fields))


@compiled
def test_constructor_names_missing_arguments() -> None:
    with pytest.raises(TypeError, match="Event"):
        Event("read", "POSIX")


def decoded(args: bytes = b'{"fd":3,"size":4096}') -> Event:
    """Return one event built by the compiled fast decoder."""
    line = (
        b'{"id":1,"name":"pread","cat":"POSIX","pid":7,"tid":8,"ts":10,"dur":2,'
        b'"ph":"X","args":' + args + b"}\n"
    )
    (event,) = Decoder("t.pfw").iter_events([line])
    return event


@compiled
def test_decoded_plain_event_is_untracked() -> None:
    plain = decoded()
    nested = decoded(b'{"fd":3,"tags":["a","b"]}')

    assert not gc.is_tracked(plain)
    assert gc.is_tracked(nested)


@compiled
def test_constructed_event_is_tracked() -> None:
    # The caller may still hold the args dict it passed in.
    event = Event(*FIELDS)

    assert gc.is_tracked(event)


@compiled
@pytest.mark.parametrize("name", ["args", "".join(["ar", "gs"])], ids=["interned", "built"])
def test_reading_args_tracks_the_event(name: str) -> None:
    event = decoded()
    assert not gc.is_tracked(event)

    assert event.ts == 10
    assert not gc.is_tracked(event)
    assert getattr(event, name) == {"fd": 3, "size": 4096}
    assert gc.is_tracked(event)


@compiled
def test_pickling_tracks_the_event() -> None:
    event = decoded()

    copied = copy.copy(event)

    assert gc.is_tracked(event)
    assert copied == event


@compiled
def test_assigning_a_container_tracks_the_event_again() -> None:
    event = decoded()
    assert not gc.is_tracked(event)

    event.hostname = "node2"
    assert not gc.is_tracked(event)
    event.path = ["not", "a", "string"]
    assert gc.is_tracked(event)


@compiled
def test_cycle_through_an_assigned_field_is_collected() -> None:
    event = decoded()
    marker = Marker()
    dead = weakref.ref(marker)
    event.path = [event, marker]
    del event, marker

    gc.collect()

    assert dead() is None


@pytest.mark.parametrize("make", [decoded, lambda: Event(*FIELDS[:7], {"fd": 3})], ids=["decoded", "built"])
def test_cycle_through_assigned_args_is_collected(make: Any) -> None:
    # The new dict contains no container when it is assigned, so the
    # collector does not track it yet. The caller fills it afterwards.
    event = make()
    marker = Marker()
    dead = weakref.ref(marker)
    args: dict = {"fd": 3}
    event.args = args
    args["owners"] = [event, marker]
    del event, marker, args

    gc.collect()

    assert dead() is None


@pytest.mark.parametrize("make", [decoded, lambda: Event(*FIELDS[:7], {"fd": 3})], ids=["decoded", "built"])
def test_cycle_through_mutated_args_is_collected(make: Any) -> None:
    event = make()
    marker = Marker()
    dead = weakref.ref(marker)
    event.args["owners"] = [event, marker]
    del event, marker

    gc.collect()

    assert dead() is None


@compiled
def test_decoded_events_are_untracked_and_freed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_decode, "PURE_PYTHON", False)
    line = (
        b'{"id":1,"name":"write","cat":"POSIX","pid":1,"tid":2,"ts":10,"dur":3,'
        b'"ph":"X","args":{"fd":4,"size":512,"ret":512}}'
    )
    chunk = b"\n".join([line] * 200) + b"\n"

    def decode() -> List[Event]:
        return list(Decoder("t.pfw").iter_events([chunk]))

    events = decode()
    assert len(events) == 200
    assert not any(gc.is_tracked(event) for event in events)
    assert events[0].args == {"fd": 4, "size": 512, "ret": 512}
    del events
    # The interpreter's caches and free lists grow for the first few
    # hundred runs, by about 200 blocks in all.
    for _ in range(1000):
        decode()

    # One block kept per run would show as 1000.
    assert least_block_growth(decode) < 100


#: Script that builds a chain of events, each held in the next one's
#: ``path``, on a thread with a small stack, then frees it from the head.
#: Freeing the links recursively takes a C stack frame per link.
CHAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    import threading

    from greenpipe.trace import Event

    def build_and_free():
        head = None
        for _ in range(int(sys.argv[1])):
            head = Event("read", "POSIX", 1, 2, 3, 4, "X", None, head)
        del head

    threading.stack_size(256 * 1024)
    worker = threading.Thread(target=build_and_free)
    worker.start()
    worker.join()
    print("freed")
    """
)


@pytest.mark.parametrize("kind", ["compiled", "python"])
def test_long_chain_frees_without_crash(kind: str) -> None:
    env = {**os.environ, "GREENPIPE_PURE_PYTHON": "1" if kind == "python" else "0"}
    result = subprocess.run(
        [sys.executable, "-c", CHAIN_SCRIPT, "100000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "freed"
