"""The compiled fast decoder against its pure-Python reference.

Both versions must give the same events, statistics and metadata on every
input; the pure one is the specification. When a C compiler is on the
machine, the install must have built the compiled one.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import pickle
import shutil
import sys
import sysconfig
import threading
from typing import Any, Dict, List, Tuple

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenpipe.trace import Decoder, Event, TraceReader
from greenpipe.trace import _decode
from greenpipe.trace._event import HashTable
from greenpipe.trace._stats import FileRecord

from block_growth import least_block_growth
from test_real_traces import PINNED, data_path

compiled = pytest.mark.skipif(
    _decode._speedups is None, reason="the compiled decoder is not built"
)


def event_fields(event: Event) -> Tuple[Any, ...]:
    return tuple(getattr(event, slot) for slot in Event.__slots__)


def decode_file(path: str, pure: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(_decode, "PURE_PYTHON", pure)
    reader = TraceReader(path, prefetch=False)
    events = [event_fields(e) for e in reader.iter_events(include_metadata=True)]
    return events, reader.statistics(), reader.metadata()


def decode_chunks(
    chunks: List[bytes], pure: bool, monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setattr(_decode, "PURE_PYTHON", pure)
    decoder = Decoder("synthetic.pfw", memory_budget=256 * 1024)
    events = [
        event_fields(e) for e in decoder.iter_events(chunks, include_metadata=True)
    ]
    return events, decoder.statistics(), decoder.metadata()


def test_compiled_decoder_is_built_where_a_compiler_exists() -> None:
    compiler = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(compiler.split()[0]) is None:
        pytest.skip(f"no C compiler ({compiler}) on this machine")
    assert _decode._speedups is not None, (
        "greenpipe/trace/_speedups.c was not compiled; reinstall with "
        "pip install -e . and read the build output"
    )


@compiled
@pytest.mark.parametrize("relative", [row[0] for row in PINNED])
def test_real_trace_decodes_the_same_both_ways(
    relative: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = data_path(relative)
    fast = decode_file(path, False, monkeypatch)
    pure = decode_file(path, True, monkeypatch)
    assert fast[0] == pure[0]
    assert fast[1] == pure[1]
    assert fast[2] == pure[2]
    assert len(fast[0]) > 0


numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(0, 10**18).map(str),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " 12 ", "1_000", "+5", "-0", "007", "1e3", "x", "12.5"]),
    st.booleans(),
    st.none(),
)
hashes = st.one_of(
    st.sampled_from(["00ff", "2dbbcec2c820dc4c", "17", 17, 255, "0x11"]),
    st.integers(-5, 2**64 + 5),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.none(),
)
texts = st.one_of(st.text(max_size=8), st.sampled_from(["M", "X", "C", "read"]))
#: Names and categories, mostly strings: other values make a bad line.
labels = st.one_of(texts, texts, st.none(), st.integers(0, 3), st.lists(st.integers(), max_size=1))
values = st.one_of(numbers, texts, st.dictionaries(st.text(max_size=3), numbers))


@st.composite
def events(draw: Any) -> Dict[str, Any]:
    event: Dict[str, Any] = {}
    for key in ("name", "cat", "pid", "tid", "ts", "dur", "ph"):
        if draw(st.integers(0, 9)) == 0:
            continue  # missing
        if key in ("pid", "tid", "ts", "dur"):
            event[key] = draw(numbers)
        elif key == "ph":
            event[key] = draw(st.sampled_from(["X", "M", "C", "", 1, None]))
        else:
            event[key] = draw(labels)
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return event
    if shape == 1:
        event["args"] = draw(st.one_of(st.none(), texts, st.lists(numbers), numbers))
        return event
    args: Dict[str, Any] = {}
    for key in ("fhash", "hhash", "fname", "path", "hostname", "name", "value"):
        if draw(st.booleans()):
            args[key] = draw(hashes if key.endswith("hash") or key == "value" else values)
    for key in ("size", "offset", "ret", "count", "fd", "mode", "level"):
        if draw(st.booleans()):
            args[key] = draw(numbers)
    event["args"] = args
    return event


def dumps(value: Any) -> bytes:
    # The standard library writes ints beyond 64 bits, and NaN as a bare
    # word that orjson rejects: both are inputs worth having.
    return json.dumps(value).encode()


@compiled
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(
        st.one_of(
            events().map(dumps),
            st.sampled_from(
                [
                    b'{"name":"FH","ph":"M","args":{"name":"/a","value":"00ff"}}',
                    b'{"name":"HH","ph":"M","args":{"name":"h","value":17}}',
                    b'{"name":"FH","cat":"x","pid":1,"tid":1,"ts":1,"dur":0,'
                    b'"ph":"M","args":{"name":"/b","value":255}}',
                    b"[",
                    b"]",
                    b"",
                    b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":1,"dur":2,'
                    b'"ph":"X","args":{"fhash":"00ff",},},',
                    b'{"name":"open","cat":"POSIX","pid":1,"tid":1,"ts":1,',
                    b'"dur":2,"ph":"X","args":{"fname":"/x"}}',
                ]
            ),
            st.binary(max_size=40),
        ),
        max_size=40,
    ),
    cuts=st.lists(st.integers(0, 40), max_size=3),
)
def test_arbitrary_lines_decode_the_same_both_ways(
    lines: List[bytes], cuts: List[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [line.replace(b"\n", b" ") for line in lines]
    # Split into line-aligned chunks at the drawn line indexes.
    chunks: List[bytes] = []
    start = 0
    for cut in sorted(set(cut for cut in cuts if 0 < cut < len(lines))):
        chunks.append(b"".join(line + b"\n" for line in lines[start:cut]))
        start = cut
    chunks.append(b"".join(line + b"\n" for line in lines[start:]))

    fast = decode_chunks(chunks, False, monkeypatch)
    pure = decode_chunks(chunks, True, monkeypatch)
    assert fast[0] == pure[0]
    assert fast[1] == pure[1]
    assert fast[2] == pure[2]


# -- counting instead of building ----------------------------------------------------

#: The categories that are not application events in the tallies below.
TALLY_CATEGORIES = frozenset(("POSIX", "STDIO", "X"))


def tally_chunks(chunks: List[bytes], pure: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Decode with a tally and return it with the listed events and the statistics."""
    monkeypatch.setattr(_decode, "PURE_PYTHON", pure)
    decoder = Decoder("synthetic.pfw", memory_budget=256 * 1024)
    tally = _decode.EventTally(TALLY_CATEGORIES)
    listed = [e for batch in decoder.iter_batches(chunks, tally) for e in batch]
    return tally, listed, decoder.statistics()


def expected_totals(events: List[Event]) -> Tuple[Any, ...]:
    """Return (events, application, first ts, last end) of built events."""
    application = sum(1 for e in events if e.category not in TALLY_CATEGORIES)
    first = min((e.ts for e in events), default=None)
    last = max((e.ts + e.dur for e in events), default=None)
    return len(events), application, first, last


def tally_totals(tally: Any, listed: List[Event]) -> Tuple[Any, ...]:
    """Return the totals of a tally and the events listed beside it."""
    events, application, first, last = expected_totals(listed)
    starts = [value for value in (first, tally.first_ts) if value is not None]
    ends = [value for value in (last, tally.last_end) if value is not None]
    return (
        events + tally.events,
        application + tally.application,
        min(starts, default=None),
        max(ends, default=None),
    )


def line_chunks(data: bytes, size: int = 100_000) -> List[bytes]:
    chunks = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start + size)
        end = len(data) if end < 0 else end + 1
        chunks.append(data[start:end])
        start = end
    return chunks


@compiled
@pytest.mark.parametrize("relative", [row[0] for row in PINNED])
def test_real_trace_tallies_the_same_both_ways(
    relative: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = data_path(relative)
    with open(path, "rb") as stream:
        data = stream.read()
    if path.endswith(".gz"):
        import gzip

        data = gzip.decompress(data)
    chunks = line_chunks(data)
    monkeypatch.setattr(_decode, "PURE_PYTHON", True)
    built = list(Decoder("synthetic.pfw", memory_budget=256 * 1024).iter_events(chunks))

    fast = tally_chunks(chunks, False, monkeypatch)
    pure = tally_chunks(chunks, True, monkeypatch)

    assert tally_totals(fast[0], fast[1]) == expected_totals(built)
    assert tally_totals(pure[0], pure[1]) == expected_totals(built)
    # Only slow-path events are built, the same in both versions.
    assert [event_fields(e) for e in fast[1]] == [event_fields(e) for e in pure[1]]
    assert fast[0].events > len(fast[1])
    assert fast[2] == pure[2]


@compiled
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(lines=st.lists(events().map(dumps), max_size=40))
def test_arbitrary_events_tally_like_built_ones(
    lines: List[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [b"".join(line.replace(b"\n", b" ") + b"\n" for line in lines)]
    built = decode_chunks(chunks, True, monkeypatch)
    expected = expected_totals(
        [e for e in Decoder("synthetic.pfw").iter_events(chunks)]
    )

    for pure in (False, True):
        tally, listed, statistics = tally_chunks(chunks, pure, monkeypatch)
        assert tally_totals(tally, listed) == expected
        assert statistics == built[1]


@compiled
def test_events_beyond_64_bits_are_built_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [
        b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":5,"dur":1,"ph":"X"}',
        b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":%d,"dur":0,"ph":"X"}' % 2**63,
        b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":%d,"dur":1,"ph":"X"}' % (2**63 - 1),
        b'{"name":"app","cat":"ai","pid":1,"tid":1,"ts":7,"dur":%d,"ph":"X"}' % -(2**64),
        b'{"name":"app","cat":"ai","pid":1,"tid":1,"ts":3,"dur":2,"ph":"X"}',
    ]
    chunks = [b"\n".join(lines) + b"\n"]

    tally, listed, _ = tally_chunks(chunks, False, monkeypatch)

    assert [e.ts for e in listed] == [2**63, 2**63 - 1, 7]
    assert (tally.events, tally.application, tally.first_ts, tally.last_end) == (2, 1, 3, 6)
    assert tally_totals(tally, listed) == (5, 2, 3, 2**63)


def test_count_events_rejects_a_list_of_categories() -> None:
    decoder = _decode.make_fast_decoder(HashTable(), FileRecord("t.pfw"))
    with pytest.raises(TypeError, match="set or frozenset of categories, not list"):
        decoder.count_events(["POSIX"])


class CategorySet(frozenset[str]):
    """A frozenset subclass, which could change how membership is tested."""


@pytest.mark.parametrize("pure", [False, True])
def test_count_events_rejects_a_set_subclass(pure: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not pure and _decode._speedups is None:
        pytest.skip("the compiled decoder is not built")
    monkeypatch.setattr(_decode, "PURE_PYTHON", pure)
    decoder = _decode.make_fast_decoder(HashTable(), FileRecord("t.pfw"))
    with pytest.raises(TypeError, match="set or frozenset of categories, not CategorySet"):
        decoder.count_events(CategorySet(["POSIX"]))


@compiled
def test_numbers_as_strings_are_converted_in_args(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = (
        b'{"name":"pread","cat":"POSIX","pid":"7","tid":"8","ts":"100",'
        b'"dur":"-3","ph":"X","args":{"ret":"512","offset":"1.5","count":"x",'
        b'"mode":"493","fd":4,"fname":"/d/f"}}\n'
    )
    monkeypatch.setattr(_decode, "PURE_PYTHON", False)
    (event,) = Decoder("t.pfw").iter_events([line])
    assert (event.pid, event.tid, event.ts, event.dur) == (7, 8, 100, -3)
    assert event.args == {
        "ret": 512,
        "offset": 2,
        "count": "x",
        "mode": "493",
        "fd": 4,
        "fname": "/d/f",
    }
    assert event.path == "/d/f"


STRING_NUMBERS_LINE = (
    b'{"name":"pread","cat":"POSIX","pid":"7","tid":"8","ts":"100",'
    b'"dur":"3","ph":"X","args":{"ret":"512","offset":"64","fname":"/d/f"}}\n'
)
CONVERTED_ARGS = {"ret": 512, "offset": 64, "fname": "/d/f"}


def string_numbers_event(monkeypatch: pytest.MonkeyPatch) -> Event:
    monkeypatch.setattr(_decode, "PURE_PYTHON", False)
    (event,) = Decoder("t.pfw").iter_events([STRING_NUMBERS_LINE])
    return event


@compiled
@pytest.mark.parametrize(
    "use",
    [
        lambda e: e.args,
        lambda e: pickle.loads(pickle.dumps(e)).args,
        lambda e: copy.copy(e).args,
        lambda e: copy.deepcopy(e).args,
        lambda e: eval(repr(e).replace("Event(", "dict(")).get("args"),
    ],
    ids=["read", "pickle", "copy", "deepcopy", "repr"],
)
def test_args_converted_on_every_access(
    use: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = string_numbers_event(monkeypatch)
    assert use(event) == CONVERTED_ARGS
    assert event.args == CONVERTED_ARGS


@compiled
def test_lazy_args_compare_converted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = string_numbers_event(monkeypatch)
    other = string_numbers_event(monkeypatch)
    built = Event("pread", "POSIX", 7, 8, 100, 3, "X", dict(CONVERTED_ARGS), "/d/f")
    assert event == built
    assert other == event
    assert not (other != built)


@compiled
def test_assigned_args_kept_as_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = string_numbers_event(monkeypatch)
    event.args = {"ret": "9"}
    assert event.args == {"ret": "9"}


def converters_of(event: Event) -> List[Any]:
    return [r for r in gc.get_referents(event) if type(r).__name__ == "ArgsConverter"]


@compiled
def test_event_keeps_converter_not_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    event = string_numbers_event(monkeypatch)
    referents = gc.get_referents(event)
    assert not [r for r in referents if type(r) is _decode._speedups.FastDecoder]
    assert len(converters_of(event)) == 1
    assert event.args == CONVERTED_ARGS
    assert converters_of(event) == []


@compiled
def test_args_converted_in_many_threads_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_decode, "PURE_PYTHON", False)
    lines = STRING_NUMBERS_LINE * 2000
    events = list(Decoder("t.pfw").iter_events([lines]))
    seen: List[Any] = []

    def read_all() -> None:
        seen.append([e.args for e in events])

    threads = [threading.Thread(target=read_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert len(seen) == 4
    for args in seen:
        assert all(value == CONVERTED_ARGS for value in args)


@compiled
def test_dicts_read_in_place_on_known_versions() -> None:
    known = (3, 11) <= sys.version_info[:2] <= (3, 13)
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    expected = known and not free_threaded
    assert bool(_decode._speedups.READS_DICTS_IN_PLACE) == expected


class AttributeHolder:
    """An object whose ``__dict__`` CPython stores as a split dict."""


def as_split_dict(value: Dict[str, Any]) -> Dict[str, Any]:
    holder = AttributeHolder()
    for key, item in value.items():
        setattr(holder, key, item)
    return holder.__dict__


def with_int_key(value: Dict[str, Any]) -> Dict[str, Any]:
    value[0] = "extra"
    return value


@compiled
@pytest.mark.parametrize("reshape", [as_split_dict, with_int_key], ids=["split", "int key"])
def test_dicts_of_other_kinds_decode_the_same(reshape: Any) -> None:
    # Split dicts are read through PyDict_Next, and a dict with a key that
    # is not a string keeps a hash in each entry.
    def reshaping_loads(text: Any) -> Any:
        value = orjson.loads(text)
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item.get("args"), dict):
                item["args"] = reshape(item["args"])
            items[index] = reshape(item)
        return items if isinstance(value, list) else items[0]

    lines = [event_line(n) for n in range(3)] + [
        event_line(3, b'{"hhash":"0a","fname":"/x","size":"8"}')
    ]
    data = b"\n".join(lines) + b"\n"
    results = []
    for loads in (orjson.loads, reshaping_loads):
        fast = _decode._speedups.FastDecoder(
            Event, loads, orjson.JSONDecodeError, {}, {"0a": "host"}, print, print,
            int, _decode.NUMERIC_ARGS,
        )
        out: List[Event] = []
        assert fast.decode(data, 0, 64, out) == (len(data), 4, None)
        results.append([(e.ts, e.path, e.hostname) for e in out])
    assert results[0] == results[1]
    assert results[0][3] == (3, "/x", "host")


@compiled
def test_repeated_hash_strings_resolve_after_redefinition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fast path remembers the last hash it resolved; a redefinition in
    # between must win.
    lines = [
        b'{"name":"FH","ph":"M","args":{"name":"/old","value":"aa"}}',
        b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X","args":{"fhash":"aa"}}',
        b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":2,"dur":1,"ph":"X","args":{"fhash":"aa"}}',
        b'{"name":"FH","ph":"M","args":{"name":"/new","value":"aa"}}',
        b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":3,"dur":1,"ph":"X","args":{"fhash":"aa"}}',
        b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":4,"dur":1,"ph":"X","args":{"fhash":"bb"}}',
    ]
    monkeypatch.setattr(_decode, "PURE_PYTHON", False)
    decoder = Decoder("t.pfw")
    paths = [e.path for e in decoder.iter_events([b"\n".join(lines) + b"\n"])]
    assert paths == ["/old", "/old", "/new", None]
    assert decoder.statistics().unresolved_hashes == 1


@compiled
def test_decoding_keeps_no_references(monkeypatch: pytest.MonkeyPatch) -> None:
    path = data_path(PINNED[0][0])
    monkeypatch.setattr(_decode, "PURE_PYTHON", False)
    raw = b"".join(TraceReader(path, prefetch=False).iter_raw())

    def run(table: HashTable) -> int:
        record = FileRecord("x")
        count = 0
        for _ in _decode.iter_events([raw], record, 1 << 30, table, False):
            count += 1
        return count

    run(HashTable())
    gc.collect()
    event_refs = sys.getrefcount(Event)
    allocated = sys.getallocatedblocks()
    table = HashTable()
    assert run(table) == 74362
    gc.collect()
    # Measured outside the asserts, whose rewriting holds references.
    files_refs = sys.getrefcount(table.files)
    some_path = next(iter(table.files.values()))
    path_refs = sys.getrefcount(some_path)
    # The path is held by the table's two indexes, the local name and the
    # call's argument.
    assert (sys.getrefcount(Event), files_refs, path_refs) == (event_refs, 2, 4)
    # A leaked event or dictionary per line would show as tens of
    # thousands of blocks; the new table holds a few hundred.
    del table, some_path
    gc.collect()
    assert sys.getallocatedblocks() - allocated < 2000


#: One line for each way out of the fast path, and for each resolution.
EVERY_BRANCH = [
    b"[1, 2]",
    b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":1,"ph":"X"}',
    b'{"name":"FH","cat":"x","pid":1,"tid":1,"ts":1,"dur":0,"ph":"M",'
    b'"args":{"name":"/m","value":"cc"}}',
    b'{"name":"r","cat":"c","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X","args":[1]}',
    b'{"name":"r","cat":"c","pid":"x","tid":1,"ts":1,"dur":1,"ph":"X"}',
    b'{"name":"r","cat":"c","pid":"1","tid":"2","ts":"1.5","dur":true,"ph":"X",'
    b'"args":{"ret":"9","offset":"x","size":null,"fd":"3","fhash":"cc"}}',
    b'{"name":"r","cat":"c","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X",'
    b'"args":{"fhash":[1]}}',
    b'{"name":"r","cat":"c","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X",'
    b'"args":{"fhash":"dd","hhash":12}}',
    b'{"name":"r","cat":"c","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X",'
    b'"args":{"fname":0,"path":"/p","hostname":"h"}}',
    b'{"name":"r","cat":"c","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X","args":{}}',
    b'{"name":"r","cat":"c","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X","args":null}',
    b'{"name":"r","cat":"c","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X",}',
    b'{"name":"r","cat":["c"],"pid":1,"tid":1,"ts":1,"dur":1,"ph":"X"}',
    b"not json }",
]


@compiled
def test_every_branch_releases_what_it_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_decode, "PURE_PYTHON", False)
    chunk = b"\n".join(EVERY_BRANCH) + b"\n"

    def run() -> int:
        decoder = Decoder("t.pfw")
        return sum(1 for _ in decoder.iter_events([chunk], include_metadata=True))

    expected = run()
    for _ in range(300):  # fills the interpreter's caches and free lists
        assert run() == expected

    # One block kept per run would show as 1000.
    assert least_block_growth(run) < 100


@compiled
def test_constructor_rejects_a_class_without_the_slots() -> None:
    class NotAnEvent:
        __slots__ = ("name",)

    with pytest.raises((TypeError, AttributeError)):
        _decode._speedups.FastDecoder(
            NotAnEvent,
            orjson.loads,
            orjson.JSONDecodeError,
            {},
            {},
            print,
            print,
            int,
            _decode.NUMERIC_ARGS,
        )


def compiled_decoder() -> Any:
    return _decode._speedups.FastDecoder(
        Event,
        orjson.loads,
        orjson.JSONDecodeError,
        {},
        {},
        print,
        print,
        int,
        _decode.NUMERIC_ARGS,
    )


@compiled
def test_decode_rejects_bad_arguments() -> None:
    fast = compiled_decoder()
    with pytest.raises(TypeError):
        fast.decode([b"{}"], 0, 1, [])
    with pytest.raises(TypeError):
        fast.decode(b"{}", 0, 1, ())
    with pytest.raises(ValueError):
        fast.decode(b"{}", -1, 1, [])
    with pytest.raises(ValueError):
        fast.decode(b"{}", 3, 1, [])
    with pytest.raises(TypeError):
        fast.decode(b"{}", 0, 1)


@pytest.mark.skipif(
    os.environ.get("GREENPIPE_PURE_PYTHON", "") not in ("", "0"),
    reason="forced pure-Python decoding",
)
def test_pure_flag_selects_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_decode, "PURE_PYTHON", True)
    fast = _decode.make_fast_decoder(HashTable(), FileRecord("x"))
    assert isinstance(fast, _decode.PyFastDecoder)


@compiled
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200_000), newlines=st.integers(0, 50))
def test_count_newlines_matches_bytes_count(data: bytes, newlines: int) -> None:
    text = data + b"\n" * newlines
    assert _decode._speedups.count_newlines(text) == text.count(b"\n")


@compiled
def test_count_newlines_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="needs bytes, not bytearray"):
        _decode._speedups.count_newlines(bytearray(b"\n"))


@pytest.mark.parametrize("pure", [False, True])
def test_flatten_walks_lists_and_closes_its_source(
    pure: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pure and _decode._speedups is None:
        pytest.skip("the compiled decoder is not built")
    monkeypatch.setattr(_decode, "PURE_PYTHON", pure)
    closed: List[bool] = []

    def batches() -> Any:
        try:
            yield [1, 2]
            yield []
            yield [3]
            yield [4]
        finally:
            closed.append(True)

    items = _decode.flatten(batches())
    assert [next(items), next(items), next(items)] == [1, 2, 3]
    assert closed == []
    items.close()
    assert closed == [True]
    assert list(items) == []
    assert list(_decode.flatten(iter([[1], [], [2, 3]]))) == [1, 2, 3]


@compiled
def test_flatten_rejects_items_that_are_not_lists() -> None:
    items = _decode._speedups.Flatten(iter([[1], (2,)]))
    assert next(items) == 1
    with pytest.raises(TypeError, match="needs lists, not tuple"):
        next(items)


def test_many_alternating_hashes_resolve_like_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # More hashes than the compiled cache has slots, used in turn, with
    # redefinitions between uses: every path must match the reference.
    values = [f"{(n * 2654435761) % 2**64:016x}" for n in range(40)]
    lines = [
        b'{"name":"FH","ph":"M","args":{"name":"/f%d","value":"%s"}}' % (n, v.encode())
        for n, v in enumerate(values)
    ]
    for step in range(600):
        value = values[(step * 7) % len(values)]
        if step == 300:
            lines.append(
                b'{"name":"FH","ph":"M","args":{"name":"/moved","value":"%s"}}' % value.encode()
            )
        lines.append(
            b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":%d,"dur":1,"ph":"X",'
            b'"args":{"fhash":"%s"}}' % (step, value.encode())
        )
    chunks = [b"\n".join(lines) + b"\n"]
    pure = decode_chunks(chunks, True, monkeypatch)
    fast = decode_chunks(chunks, False, monkeypatch)
    assert fast == pure
    paths = [fields[8] for fields in pure[0] if fields[6] == "X"]
    moved = (300 * 7) % len(values)
    for step, path in enumerate(paths):
        index = (step * 7) % len(values)
        expected = "/moved" if index == moved and step >= 300 else f"/f{index}"
        assert path == expected, step


def test_iter_batches_gives_the_events_of_iter_events() -> None:
    lines = [b'{"name":"FH","ph":"M","args":{"name":"/a","value":1}}']
    for step in range(200):
        lines.append(
            b'{"name":"write","cat":"POSIX","pid":1,"tid":%d,"ts":%d,"dur":2,"ph":"X",'
            b'"args":{"fhash":1}}' % (step % 3, step)
        )
        if step == 100:
            lines.append(b'{"name":"FH","ph":"M","args":{"name":"/b","value":1}}')
    chunks = [b"\n".join(lines) + b"\n"]
    batches = list(Decoder("t.pfw").iter_batches(chunks))
    assert all(isinstance(batch, list) and batch for batch in batches)
    flat = [event_fields(e) for batch in batches for e in batch]
    assert flat == [event_fields(e) for e in Decoder("t.pfw").iter_events(chunks)]
    paths = [e.path for batch in batches for e in batch]
    assert paths == ["/a"] * 101 + ["/b"] * 99


def make_event(name: str, category: str, ts: Any, dur: Any) -> Event:
    return Event(name, category, 1, 1, ts, dur, "X", {})


def scan_both(events: List[Event], span: List[Any]) -> Tuple[Any, ...]:
    categories = frozenset(("POSIX", "STDIO"))
    names = frozenset(("rename", "openat"))
    results = []
    for scan in (_decode.scan_events, _decode.make_scanner()):
        io_out: List[Event] = []
        named_out: List[Event] = []
        window = list(span)
        left_out = scan(events, categories, names, io_out, named_out, window)
        results.append((left_out, io_out, named_out, window))
    return tuple(results)


event_lists = st.lists(
    st.builds(
        make_event,
        st.sampled_from(["read", "rename", "openat", "step"]),
        st.sampled_from(["POSIX", "STDIO", "app", "dftracer"]),
        st.integers(-(2**40), 2**40) | st.integers(2**62, 2**64),
        st.integers(0, 10**6) | st.sampled_from([2**63 - 1]),
    ),
    max_size=80,
)


@given(
    events=event_lists,
    span=st.tuples(st.none() | st.integers(-(2**41), 2**41), st.none() | st.integers(0, 2**41)),
)
@settings(max_examples=300, deadline=None)
def test_scanner_sorts_events_like_the_reference(events: List[Event], span: Tuple[Any, Any]) -> None:
    reference, chosen = scan_both(events, list(span))
    assert chosen == reference
    left_out, io_out, named_out, window = reference
    assert left_out + len(io_out) == len(events)
    assert all(e.category in ("POSIX", "STDIO") for e in io_out)
    assert named_out == [e for e in io_out if e.name in ("rename", "openat")]
    if events:
        starts = [e.ts for e in events] + ([span[0]] if span[0] is not None else [])
        ends = [e.ts + e.dur for e in events] + ([span[1]] if span[1] is not None else [])
        assert window == [min(starts), max(ends)]
    else:
        assert window == list(span)


@compiled
def test_scanner_changes_nothing_when_an_event_needs_python() -> None:
    scan = _decode._speedups.Scanner(Event).scan
    events = [make_event("read", "POSIX", 5, 1), make_event("read", "POSIX", "6", 1)]
    io_out: List[Event] = []
    named_out: List[Event] = []
    span: List[Any] = [None, None]
    categories = frozenset(("POSIX",))
    assert scan(events, categories, frozenset(), io_out, named_out, span) is None
    assert io_out == []
    assert named_out == []
    assert span == [None, None]
    with pytest.raises(TypeError, match="scan needs lists"):
        scan((), categories, frozenset(), io_out, named_out, span)

    class Plain:
        ts = dur = category = name = None

    with pytest.raises(TypeError, match="not a slot"):
        _decode._speedups.Scanner(Plain)


def event_line(ts: int, args: bytes = b'{"fname":"/data/a","size":8}') -> bytes:
    return (
        b'{"name":"read","cat":"POSIX","pid":1,"tid":2,"ts":%d,"dur":3,"ph":"X",'
        b'"args":%s}' % (ts, args)
    )


META_LINE = b'{"name":"FH","ph":"M","args":{"name":"/data/b","value":"0b"}}'
BAD_LINE = b"not json }"
#: One event cut in two by a raw newline inside its path.
SPLIT_HEAD = (
    b'{"name":"read","cat":"POSIX","pid":1,"tid":2,"ts":2,"dur":3,"ph":"X",'
    b'"args":{"fname":"/data/split'
)
SPLIT_TAIL = b'name"}}'


@pytest.mark.parametrize("pure", [False, True])
def test_decode_reports_where_it_stopped(pure: bool) -> None:
    if pure:
        decode = _decode.PyFastDecoder({}, {}, print, print).decode
    elif _decode._speedups is None:
        pytest.skip("the compiled decoder is not built")
    else:
        decode = compiled_decoder().decode
    data = event_line(1) + b"\n" + META_LINE + b"\n\n" + event_line(2)
    after_first = len(event_line(1)) + 1
    blank = after_first + len(META_LINE) + 1
    out: List[Event] = []

    offset, count, value = decode(data, 0, 64, out)
    assert (offset, count) == (after_first, 1)
    assert value["name"] == "FH"
    assert [e.ts for e in out] == [1]

    assert decode(data, blank, 64, out) == (blank, 0, None)
    assert decode(data, blank + 1, 64, out) == (len(data), 1, None)
    assert [e.ts for e in out] == [1, 2]
    assert decode(data, len(data), 64, out) == (len(data), 0, None)

    two = event_line(1) + b"\n" + event_line(2) + b"\n"
    assert decode(two, 0, 1, out) == (after_first, 1, None)
    assert decode(two, 0, 0, out) == (0, 0, None)
    assert decode(two, after_first, 64, out) == (len(two), 1, None)
    assert [e.ts for e in out] == [1, 2, 1, 2]


#: Chunks, then the expected timestamps, bad line numbers, ignored lines
#: and joined lines.
EDGE_CASES = {
    "chunk ends without newline": (
        [event_line(1) + b"\n" + event_line(2), event_line(3) + b"\n"],
        [1, 2, 3],
        [],
        0,
        0,
    ),
    "empty lines": (
        [b"\n" + event_line(1) + b"\n\n\n" + event_line(2) + b"\n\n"],
        [1, 2],
        [],
        4,
        0,
    ),
    "slow lines in the middle": (
        [
            event_line(1) + b"\n" + BAD_LINE + b"\n" + META_LINE + b"\n"
            + event_line(2, b'{"fhash":"0b"}') + b"\n" + event_line(3) + b"\n"
        ],
        [1, 2, 3],
        [2],
        0,
        0,
    ),
    "split event across chunks": (
        [
            event_line(1) + b"\n" + SPLIT_HEAD + b"\n",
            SPLIT_TAIL + b"\n" + BAD_LINE + b"\n" + event_line(3) + b"\n",
        ],
        [1, 2, 3],
        [4],
        0,
        1,
    ),
    "split event across three chunks": (
        [
            event_line(1) + b"\n" + SPLIT_HEAD + b"\n",
            b"mid\n",
            b'dle"}}\n' + event_line(3) + b"\n" + BAD_LINE + b"\n",
        ],
        [1, 2, 3],
        [6],
        0,
        2,
    ),
    "split event unfinished in the last chunk": (
        [event_line(1) + b"\n", SPLIT_HEAD + b"\n" + BAD_LINE],
        [1],
        [2, 3],
        0,
        0,
    ),
    "last line without newline": (
        [event_line(1) + b"\n" + event_line(2)],
        [1, 2],
        [],
        0,
        0,
    ),
    "bad last line without newline": (
        [event_line(1) + b"\n" + BAD_LINE],
        [1],
        [2],
        0,
        0,
    ),
    "slow lines after full batches": (
        [
            b"".join(event_line(n) + b"\n" for n in range(64))
            + BAD_LINE + b"\n"
            + b"".join(event_line(n) + b"\n" for n in range(64, 128))
            + b"\n"
            + b"".join(event_line(n) + b"\n" for n in range(128, 130))
        ],
        list(range(130)),
        [65],
        1,
        0,
    ),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
@pytest.mark.parametrize("pure", [False, True])
def test_chunk_edge_cases_keep_line_numbers(
    case: str, pure: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pure and _decode._speedups is None:
        pytest.skip("the compiled decoder is not built")
    chunks, timestamps, bad_lines, ignored, joined = EDGE_CASES[case]
    events, stats, metadata = decode_chunks(chunks, pure, monkeypatch)
    assert [fields[4] for fields in events if fields[6] == "X"] == timestamps
    assert [bad.line for bad in stats.first_bad_lines] == bad_lines
    assert stats.ignored_lines == ignored
    assert stats.joined_lines == joined


def test_split_event_across_chunks_is_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = EDGE_CASES["split event across chunks"][0]
    events, _, _ = decode_chunks(chunks, False, monkeypatch)
    assert [fields[8] for fields in events] == ["/data/a", "/data/split\nname", "/data/a"]


def test_hash_defined_mid_chunk_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = EDGE_CASES["slow lines in the middle"][0]
    events, stats, _ = decode_chunks(chunks, False, monkeypatch)
    assert [fields[8] for fields in events if fields[6] == "X"] == [
        "/data/a",
        "/data/b",
        "/data/a",
    ]
    assert stats.metadata_events == 1


def decoder_with_loads(loads: Any) -> Any:
    """Return a compiled decoder that parses lines with ``loads``."""
    return _decode._speedups.FastDecoder(
        Event,
        loads,
        orjson.JSONDecodeError,
        {},
        {},
        print,
        print,
        int,
        _decode.NUMERIC_ARGS,
    )


@compiled
def test_views_kept_by_loads_keep_their_line() -> None:
    loads_inputs: List[Any] = []

    def keeping_loads(text: Any) -> Any:
        loads_inputs.append(text)
        return orjson.loads(text)

    fast = decoder_with_loads(keeping_loads)
    lines = [event_line(n) for n in range(5)]
    data = b"\n".join(lines) + b"\n"
    out: List[Event] = []
    assert fast.decode(data, 0, 64, out) == (len(data), 5, None)
    # Lines that start with "{" go to loads as one array.
    later = [event_line(n) for n in range(5, 8)]
    more = b"\n".join(later) + b"\n"
    assert fast.decode(more, 0, 64, out) == (len(more), 3, None)
    # A line with a leading space goes to loads alone.
    alone = b" " + event_line(8)
    assert fast.decode(alone, 0, 64, out) == (len(alone), 1, None)
    assert [e.ts for e in out] == list(range(9))
    # The first call is the constructor's check for memoryview support.
    assert all(isinstance(text, memoryview) for text in loads_inputs)
    assert [bytes(text) for text in loads_inputs[1:]] == [
        b"[" + b",\n".join(lines) + b"]",
        b"[" + b",\n".join(later) + b"]",
        alone,
    ]


@compiled
def test_loads_without_memoryview_gets_bytes() -> None:
    seen: List[type] = []

    def bytes_only_loads(text: Any) -> Any:
        if isinstance(text, memoryview):
            raise TypeError("memoryview not accepted")
        seen.append(type(text))
        return orjson.loads(text)

    fast = decoder_with_loads(bytes_only_loads)
    data = event_line(1) + b"\n" + META_LINE + b"\n" + event_line(2)
    out: List[Event] = []
    offset, count, value = fast.decode(data, 0, 64, out)
    assert (offset, count) == (len(event_line(1)) + 1, 1)
    assert value["name"] == "FH"
    assert fast.decode(data, offset + len(META_LINE) + 1, 64, out) == (len(data), 1, None)
    assert [e.ts for e in out] == [1, 2]
    assert seen == [bytes, bytes, bytes]


def counting_decoder() -> Tuple[Any, List[bytes]]:
    """Return a compiled decoder and the texts its loads was given."""
    texts: List[bytes] = []

    def loads(text: Any) -> Any:
        texts.append(bytes(text))
        return orjson.loads(text)

    fast = decoder_with_loads(loads)
    del texts[:]  # the constructor's memoryview check
    return fast, texts


@compiled
def test_lines_after_slow_line_parsed_once() -> None:
    fast, texts = counting_decoder()
    lines = [event_line(1), event_line(2), META_LINE, event_line(3), event_line(4), event_line(5)]
    data = b"\n".join(lines) + b"\n"
    starts = [sum(len(line) + 1 for line in lines[:i]) for i in range(len(lines) + 1)]
    out: List[Event] = []

    offset, count, value = fast.decode(data, 0, 64, out)
    assert (offset, count, value["name"]) == (starts[2], 2, "FH")
    # The caller handles the metadata line, then requests two events.
    assert fast.decode(data, starts[3], 2, out) == (starts[5], 2, None)
    assert fast.decode(data, starts[5], 64, out) == (len(data), 1, None)
    assert [e.ts for e in out] == [1, 2, 3, 4, 5]
    assert texts == [b"[" + b",\n".join(lines) + b"]"]


@compiled
def test_kept_lines_reused_for_same_chunk_only() -> None:
    fast, texts = counting_decoder()
    lines = [event_line(1), META_LINE, event_line(2), event_line(3)]
    data = b"\n".join(lines) + b"\n"
    out: List[Event] = []
    offset, count, _ = fast.decode(data, 0, 64, out)
    after_meta = offset + len(META_LINE) + 1

    # Another chunk of the same length: its own lines are parsed.
    other = data.replace(b'"ts":2,', b'"ts":7,').replace(b'"ts":3,', b'"ts":8,')
    assert len(other) == len(data)
    assert fast.decode(other, after_meta, 64, out) == (len(other), 2, None)
    # The same chunk from another line: parsed again, from that line.
    third = after_meta + len(lines[2]) + 1
    assert fast.decode(data, third, 64, out) == (len(data), 1, None)
    assert [e.ts for e in out] == [1, 7, 8, 3]
    assert texts[1:] == [
        b"[" + b",\n".join(other.split(b"\n")[2:4]) + b"]",
        lines[3],
    ]


@compiled
def test_line_with_two_objects_parsed_alone() -> None:
    two = event_line(5) + b"," + event_line(6)
    lines = [event_line(1), event_line(2), two, event_line(3)]
    data = b"\n".join(lines) + b"\n"
    fast, texts = counting_decoder()
    out: List[Event] = []
    offset, count, value = fast.decode(data, 0, 64, out)
    assert (count, value) == (2, None)
    assert offset == len(lines[0]) + len(lines[1]) + 2
    assert [e.ts for e in out] == [1, 2]
    # The array had one item too many, so each line went to loads alone.
    assert texts[1:] == lines[:3]


#: Runs of lines that each begin with "{" and end with "}" and are invalid
#: alone, but parse as an array with one item per line once joined by
#: commas. Each run starts with a line that contains two objects.
MERGING_LINES = {
    "nested": [b'{"a":1},{"b":2}', b'{"x":[{}', b'{}]}'],
    "string": [b'{"a":1},{"b":2}', b'{"a":"}', b'{"}'],
    "string only": [b'{"a":"}', b'{","b":"}', b'{"},{},{}'],
}


@compiled
@pytest.mark.parametrize("case", list(MERGING_LINES))
def test_lines_merged_by_group_are_bad(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    merging = MERGING_LINES[case]
    lines = [event_line(1), *merging, event_line(2)]
    chunks = [b"".join(line + b"\n" for line in lines)]
    events, stats, _ = decode_chunks(chunks, False, monkeypatch)
    assert [fields[4] for fields in events] == [1, 2]
    assert stats.bad_lines == len(merging)
    assert decode_chunks(chunks, True, monkeypatch) == (events, stats, _)


@compiled
def test_lines_with_arrays_parsed_as_group() -> None:
    # Brackets in strings and escaped quotes must not keep a line out.
    lines = [
        event_line(1, b'{"dims":[1,[2,{}]],"fname":"/a[0]"}'),
        event_line(2, b'{"fname":"/b]\\"[","list":[]}'),
        event_line(3),
    ]
    data = b"\n".join(lines) + b"\n"
    fast, texts = counting_decoder()
    out: List[Event] = []
    assert fast.decode(data, 0, 64, out) == (len(data), 3, None)
    assert [e.path for e in out] == ["/a[0]", '/b]"[', "/data/a"]
    assert texts == [b"[" + b",\n".join(lines) + b"]"]


@compiled
def test_groups_that_fail_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every line has a trailing comma, so no group parses. After a few
    # failed groups, lines go to loads one by one and none twice.
    lines = [event_line(n, b'{"fname":"/data/a","size":8,}') for n in range(1000)]
    fast, texts = counting_decoder()
    monkeypatch.setattr(_decode, "make_fast_decoder", lambda table, record: fast)
    chunks = [b"".join(line + b"\n" for line in lines)]
    events, stats, _ = decode_chunks(chunks, False, monkeypatch)
    assert [e[4] for e in events] == list(range(1000))
    groups = [text for text in texts if text.startswith(b"[")]
    assert 1 <= len(groups) <= 5
    assert len(texts) - len(groups) == 1000
    assert decode_chunks(chunks, True, monkeypatch)[1] == stats


@compiled
@pytest.mark.parametrize("size", [100_000, 300_000])
def test_long_lines_decode_the_same_both_ways(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_args = b'{"fname":"/data/%s","size":8}' % (b"x" * size)
    lines = [event_line(n, long_args if n % 3 else b"{}") for n in range(9)]
    chunks = [b"".join(line + b"\n" for line in lines)]
    monkeypatch.setattr(_decode, "PURE_PYTHON", False)
    decoder = Decoder("long.pfw", memory_budget=64 * 1024 * 1024)
    fast = [event_fields(e) for e in decoder.iter_events(chunks)]
    assert [fields[4] for fields in fast] == list(range(9))
    assert decode_chunks(chunks, True, monkeypatch)[0] == [
        event_fields(e)
        for e in Decoder("long.pfw", memory_budget=64 * 1024 * 1024).iter_events(chunks)
    ]
