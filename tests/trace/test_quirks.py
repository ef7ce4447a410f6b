from __future__ import annotations

import gzip
from pathlib import Path
from typing import List

from greenpipe.trace import Event, FileStatistics, TraceReader

EVENT = (
    b'{"id":1,"name":"read","cat":"POSIX","pid":7,"tid":8,"ts":100,"dur":5,'
    b'"ph":"X","args":{"fname":"/data/a","hostname":"node1","count":4}}'
)


def read(tmp_path: Path, content: bytes, name: str = "t.pfw") -> List[Event]:
    path = tmp_path / name
    path.write_bytes(content)
    return list(TraceReader(path).iter_events())


def stats_of(tmp_path: Path, content: bytes) -> FileStatistics:
    path = tmp_path / "t.pfw"
    path.write_bytes(content)
    reader = TraceReader(path)
    list(reader.iter_events())
    return reader.statistics().files[0]


def test_missing_opening_bracket(tmp_path: Path) -> None:
    events = read(tmp_path, EVENT + b"\n" + EVENT + b"\n")

    assert len(events) == 2
    assert events[0].path == "/data/a"


def test_missing_closing_bracket(tmp_path: Path) -> None:
    stats = stats_of(tmp_path, b"[\n" + EVENT + b"\n")

    assert stats.events == 1
    assert stats.ignored_lines == 1
    assert stats.bad_lines == 0


def test_stray_bracket_lines(tmp_path: Path) -> None:
    content = b"[\n" + EVENT + b"\n[\n" + EVENT + b"\n[\n]\n"
    stats = stats_of(tmp_path, content)

    assert stats.events == 2
    assert stats.ignored_lines == 4
    assert stats.bad_lines == 0


def test_leading_spaces(tmp_path: Path) -> None:
    events = read(tmp_path, b"   " + EVENT + b"\n  " + EVENT + b"\n")

    assert [e.ts for e in events] == [100, 100]


def test_trailing_comma_in_args(tmp_path: Path) -> None:
    line = (
        b'{"name":"step","cat":"app","pid":1,"tid":2,"ts":3,"dur":4,'
        b'"ph":"X","args":{"step":1,}}'
    )
    stats = stats_of(tmp_path, line + b"\n")
    events = read(tmp_path, line + b"\n")

    assert stats.repaired_lines == 1
    assert stats.bad_lines == 0
    assert events[0].args == {"step": 1}


def test_chrome_array_commas(tmp_path: Path) -> None:
    events = read(tmp_path, b"[" + EVENT + b",\n" + EVENT + b",\n]")

    assert len(events) == 2


def test_raw_newline_inside_path(tmp_path: Path) -> None:
    first, second = EVENT.replace(b'"/data/a"', b'"/data/a\n"').split(b"\n")
    content = first + b"\n" + second + b"\n" + EVENT + b"\n"
    events = read(tmp_path, content)
    stats = stats_of(tmp_path, content)

    assert [e.path for e in events] == ["/data/a\n", "/data/a"]
    assert stats.joined_lines == 1
    assert stats.bad_lines == 0
    assert stats.lines == 3


def test_raw_newline_across_chunks(tmp_path: Path) -> None:
    first, second = EVENT.replace(b'"/data/a"', b'"/data/a\n"').split(b"\n")
    # 2032 filler lines put the split exactly at the end of a 4 KiB chunk.
    filler = (EVENT + b"\n") * 2032
    content = filler + first + b"\n" + second + b"\n" + filler
    path = tmp_path / "t.pfw"
    path.write_bytes(content)
    reader = TraceReader(path, memory_budget=64 * 1024)
    chunks = list(reader.iter_raw())
    events = list(reader.iter_events())

    assert reader.chunk_bytes == 4096
    assert any(chunk.endswith(first + b"\n") for chunk in chunks)
    assert len(events) == 4065
    assert events[2032].path == "/data/a\n"
    assert reader.statistics().files[0].joined_lines == 1


def test_join_attempts_bounded(tmp_path: Path) -> None:
    broken = b'{"name":"x","args":{"fname":"/a'
    content = broken + b"\n" + b"b\n" * 20 + EVENT + b"\n"
    stats = stats_of(tmp_path, content)

    assert stats.events == 1
    assert stats.bad_lines == 21
    assert stats.joined_lines == 0


def test_broken_line_keeps_next_good_line(tmp_path: Path) -> None:
    content = b'{"name":"cut' + b"\n" + EVENT + b"\n"
    stats = stats_of(tmp_path, content)

    assert stats.events == 1
    assert stats.bad_lines == 1
    assert stats.first_bad_lines[0].line == 1
    assert stats.first_bad_lines[0].reason == "invalid JSON"


def test_split_event_unfinished_at_end(tmp_path: Path) -> None:
    stats = stats_of(tmp_path, EVENT + b'\n{"name":"cut","args":{"fname":"/a\n')

    assert stats.events == 1
    assert stats.bad_lines == 1
    assert stats.first_bad_lines[0].line == 2


def test_missing_args(tmp_path: Path) -> None:
    line = b'{"name":"step","cat":"trainer","pid":0,"tid":9,"ts":1,"dur":2,"ph":"X"}'
    events = read(tmp_path, line + b"\n")

    assert events[0].args == {}
    assert events[0].path is None
    assert events[0].hostname is None


def test_missing_numbers_default_to_zero(tmp_path: Path) -> None:
    events = read(tmp_path, b'{"name":"c","ph":"C","ts":5,"args":{"count":2}}\n')

    assert (events[0].pid, events[0].tid, events[0].ts, events[0].dur) == (0, 0, 5, 0)
    assert events[0].phase == "C"


def test_type_changes_within_file(tmp_path: Path) -> None:
    as_strings = (
        b'{"name":"read","cat":"POSIX","pid":"7","tid":"8","ts":"100",'
        b'"dur":"5","ph":"X","args":{"count":"4","ret":"4","mode":"r"}}'
    )
    as_floats = (
        b'{"name":"read","cat":"POSIX","pid":7,"tid":8,"ts":100.6,'
        b'"dur":4.5e0,"ph":"X","args":{"count":4.0,"ret":4}}'
    )
    events = read(tmp_path, EVENT + b"\n" + as_strings + b"\n" + as_floats + b"\n")

    assert [(e.pid, e.tid, e.ts, e.dur) for e in events] == [
        (7, 8, 100, 5),
        (7, 8, 100, 5),
        (7, 8, 101, 4),
    ]
    assert events[1].args == {"count": 4, "ret": 4, "mode": "r"}
    assert events[2].args == {"count": 4, "ret": 4}


def test_invalid_number_is_bad_line(tmp_path: Path) -> None:
    line = b'{"name":"x","cat":"POSIX","pid":1,"tid":1,"ts":"soon","dur":1,"ph":"X"}'
    stats = stats_of(tmp_path, line + b"\n" + EVENT + b"\n")

    assert stats.events == 1
    assert stats.bad_lines == 1
    assert stats.bad_line_reasons == {"invalid value in a numeric field": 1}


def test_name_or_cat_not_string_is_bad_line(tmp_path: Path) -> None:
    lines = [
        b'{"name":["read"],"cat":"POSIX","pid":1,"tid":1,"ts":1,"dur":1,"ph":"X"}',
        b'{"name":"read","cat":{"k":1},"pid":1,"tid":1,"ts":1,"dur":1,"ph":"X"}',
        b'{"name":null,"cat":"POSIX","pid":"1","tid":1,"ts":1,"dur":1,"ph":"X"}',
        b'{"name":["FH"],"ph":"M","args":{"name":"/a","value":1}}',
    ]
    data = b"\n".join(lines) + b"\n" + EVENT + b"\n"
    events = read(tmp_path, data)
    stats = stats_of(tmp_path, data)

    assert len(events) == 1
    assert stats.events == 1
    assert stats.metadata_events == 0
    assert stats.bad_lines == 4
    assert stats.bad_line_reasons == {"name or cat is not a string": 4}


def test_no_final_newline(tmp_path: Path) -> None:
    events = read(tmp_path, b"[\n" + EVENT + b"\n" + EVENT)

    assert len(events) == 2


def test_closing_bracket_without_newline(tmp_path: Path) -> None:
    stats = stats_of(tmp_path, b"[\n" + EVENT + b"\n]")

    assert stats.events == 1
    assert stats.lines == 3
    assert stats.bad_lines == 0


def test_invalid_utf8_replaced(tmp_path: Path) -> None:
    line = EVENT.replace(b"/data/a", b"/data/\xff\xfe")
    events = read(tmp_path, line + b"\n")
    stats = stats_of(tmp_path, line + b"\n")

    assert events[0].path == "/data/\ufffd\ufffd"
    assert stats.repaired_lines == 1


def test_raw_tab_inside_string(tmp_path: Path) -> None:
    events = read(tmp_path, EVENT.replace(b"/data/a", b"/data/\ta") + b"\n")

    assert events[0].path == "/data/\ta"


def test_not_an_object(tmp_path: Path) -> None:
    stats = stats_of(tmp_path, b"42\n" + b'"text"\n' + EVENT + b"\n")

    assert stats.events == 1
    assert stats.bad_lines == 2
    assert stats.bad_line_reasons == {"not a JSON object": 2}


def test_blank_lines_and_crlf(tmp_path: Path) -> None:
    stats = stats_of(tmp_path, b"[\r\n" + EVENT + b"\r\n\r\n\n" + EVENT + b"\r\n")

    assert stats.events == 2
    assert stats.bad_lines == 0
    assert stats.ignored_lines == 3


def test_hash_forms_resolve(tmp_path: Path) -> None:
    big = 2**64 - 5
    lines = [
        b'{"name":"FH","cat":"dftracer","pid":1,"tid":1,"ph":"M",'
        b'"args":{"name":"/small","value":17}}',
        b'{"name":"FH","cat":"dftracer","pid":1,"tid":1,"ph":"M",'
        b'"args":{"name":"/big","value":%d}}' % big,
        b'{"name":"FH","cat":"dftracer","pid":1,"tid":1,"ph":"M",'
        b'"args":{"name":"/hex","value":"00ab00cd00ef0012"}}',
        b'{"name":"HH","cat":"dftracer","pid":1,"tid":1,"ph":"M",'
        b'"args":{"name":"host","value":"123"}}',
    ]
    for fhash in (b"17", b"%d" % big, b'"00ab00cd00ef0012"', b'"%d"' % big):
        lines.append(
            b'{"name":"open","cat":"POSIX","pid":1,"tid":1,"ts":1,"dur":1,'
            b'"ph":"X","args":{"fhash":%s,"hhash":123}}' % fhash
        )
    events = read(tmp_path, b"\n".join(lines))

    assert [e.path for e in events] == ["/small", "/big", "/hex", "/big"]
    assert [e.hostname for e in events] == ["host"] * 4


def test_unresolved_hash_counted(tmp_path: Path) -> None:
    line = (
        b'{"name":"open","cat":"POSIX","pid":1,"tid":1,"ts":1,"dur":1,'
        b'"ph":"X","args":{"fhash":99}}'
    )
    stats = stats_of(tmp_path, line + b"\n")

    assert stats.unresolved_hashes == 1
    assert stats.events == 1


def test_hashes_are_per_file(tmp_path: Path) -> None:
    define = (
        b'{"name":"FH","cat":"dftracer","pid":1,"tid":1,"ph":"M",'
        b'"args":{"name":"/only-in-a","value":5}}\n'
    )
    use = (
        b'{"name":"open","cat":"POSIX","pid":1,"tid":1,"ts":1,"dur":1,'
        b'"ph":"X","args":{"fhash":5}}\n'
    )
    (tmp_path / "a.pfw").write_bytes(define + use)
    (tmp_path / "b.pfw").write_bytes(use)
    events = list(TraceReader(tmp_path).iter_events())

    assert [e.path for e in events] == ["/only-in-a", None]


def test_gzip_name_not_needed(tmp_path: Path) -> None:
    events = read(tmp_path, gzip.compress(EVENT + b"\n"), name="t.pfw")

    assert len(events) == 1
