"""The public Decoder, fed by the caller's own chunks."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path
from typing import Iterator, List

import pytest

from greenpipe.trace import Decoder, TraceReader

META = (
    b'{"id":1,"name":"FH","cat":"dftracer","pid":1,"tid":1,"ph":"M",'
    b'"args":{"name":"/data/a","value":"00000000000000ff"}}\n'
    b'{"id":2,"name":"HH","cat":"dftracer","pid":1,"tid":1,"ph":"M",'
    b'"args":{"name":"node1","value":"0000000000000011"}}\n'
)
EVENT = (
    b'{"id":3,"name":"rename","cat":"POSIX","pid":1,"tid":1,"ts":%d,"dur":2,'
    b'"ph":"X","args":{"fhash":"00000000000000ff","hhash":"0000000000000011",'
    b'"newpath_hash":255}}\n'
)


def trace_text(events: int) -> bytes:
    return META + b"".join(EVENT % i for i in range(events))


def test_decoder_resolves_hashes() -> None:
    decoder = Decoder("t.pfw")
    events = list(decoder.iter_events([trace_text(3)]))

    assert [event.ts for event in events] == [0, 1, 2]
    assert events[0].path == "/data/a"
    assert events[0].hostname == "node1"
    assert decoder.resolve_path(events[0].args["newpath_hash"]) == "/data/a"
    assert decoder.resolve_path("0xff") == "/data/a"
    assert decoder.resolve_path(7) is None
    assert decoder.resolve_path([1]) is None
    assert decoder.resolve_hostname("0000000000000011") == "node1"


def test_decoder_statistics_and_metadata() -> None:
    decoder = Decoder("t.pfw")
    chunks = [META, b"not json}\n" + EVENT % 5, b"\n]"]
    events = list(decoder.iter_events(chunks, include_metadata=True))
    stats = decoder.statistics()
    metadata = decoder.metadata()

    assert [event.name for event in events] == ["FH", "HH", "rename"]
    assert stats.path == "t.pfw"
    assert stats.events == 1
    assert stats.metadata_events == 2
    assert stats.bad_lines == 1
    assert decoder.bad_lines == 1
    assert stats.first_bad_lines[0].line == 3
    assert stats.ignored_lines == 2
    assert metadata.path == "t.pfw"
    assert dict(metadata.files) == {"00000000000000ff": "/data/a"}


def test_decoder_joins_event_split_across_chunks() -> None:
    decoder = Decoder()
    chunks = [b'{"name":"open","ts":1,"dur":1,"args":{"fname":"/a\n', b'b"}}\n']
    events = list(decoder.iter_events(chunks))

    assert [event.path for event in events] == ["/a\nb"]
    assert decoder.statistics().joined_lines == 1


def test_decoder_iter_lines_json() -> None:
    decoder = Decoder()
    dicts = list(decoder.iter_lines_json([b'{"a":1,}\n', b'{"ph":"M"}\n']))

    assert dicts == [{"a": 1}, {"ph": "M"}]
    assert decoder.statistics().repaired_lines == 1
    assert decoder.statistics().metadata_events == 1


def test_decoder_matches_reader(tmp_path: Path) -> None:
    path = tmp_path / "t.pfw.gz"
    path.write_bytes(gzip.compress(trace_text(2000)))
    reader = TraceReader(path, memory_budget=64 * 1024)
    expected = list(reader.iter_events())
    decoder = Decoder(str(path), memory_budget=64 * 1024)
    decoded = list(decoder.iter_events(TraceReader(path).iter_raw()))

    assert decoded == expected
    assert decoder.statistics().events == reader.statistics().events


def test_decoder_used_once() -> None:
    decoder = Decoder()
    list(decoder.iter_events([trace_text(1)]))

    with pytest.raises(RuntimeError, match=r"^a Decoder decodes one file once; "):
        decoder.iter_lines_json([])


def test_decoder_budget_sets_max_line() -> None:
    assert Decoder().max_line_bytes == 16 * 1024 * 1024
    assert Decoder(memory_budget=1).max_line_bytes == 16 * 1024
    with pytest.raises(ValueError, match=r"^memory_budget must be >= 0 "):
        Decoder(memory_budget=-1)


def test_decoder_memory_bounded_by_chunk() -> None:
    chunk = trace_text(500)

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield chunk

    decoder = Decoder()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        count = 0
        for _ in decoder.iter_events(chunks()):
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count == 50_000
    # The decoder keeps one chunk's lines at a time, far below the 7 MB read.
    assert peak - start < 4 * len(chunk) + 256 * 1024
