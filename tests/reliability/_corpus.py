"""Bad trace inputs built from the real traces in ``tests/data``.

Each base is a slice of one writer generation: its metadata lines, its
first POSIX and STDIO calls and a few application events, so that a
replay of a mutated base still opens, reads and writes files. The
strategies below damage the bases line by line: drop, repeat, swap, cut,
flip, split and join lines. They insert hostile lines: random bytes,
lines longer than the reader's maximum, deeply nested arguments, invalid
UTF-8, control characters and hostile paths. Then they concatenate
generations and compress the result into one or several gzip members,
sometimes cut short.

These complement the byte-level damage and random bytes of
``tests/trace/test_robustness.py``.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Dict, List, Tuple

from hypothesis import strategies as st

DATA = Path(__file__).resolve().parent.parent / "data"


def examples(default: int) -> int:
    """Return the examples per fuzz test: ``GREENPIPE_FUZZ_EXAMPLES`` or ``default``.

    CI runs the defaults; a longer fuzzing run sets the variable, for
    example to 2000.
    """
    return int(os.environ.get("GREENPIPE_FUZZ_EXAMPLES", default))

_SOURCES = {
    "cm1": "hariharan-devarajan_dftracer/examples/dfanalyzer/test-trace-distributed/"
    "cm1_1_48_20240926/cm1-DEFAULT-3537781-preload.pfw.gz",
    "dist1": "hariharan-devarajan_dftracer/examples/dfanalyzer/test-trace-distributed/"
    "test-trace-dist-1.pfw.gz",
    "cosmoflow": "argonne-lcf_dlio_ml_workloads/cosmoflow/cosmoflow-updated-alcf/"
    "pytorch/dlp-logs/trace-30752.pfw",
    "old": "hariharan-devarajan_dftracer/.trace-0-of-2.pfw",
    "dfanalyzer": "hariharan-devarajan_dftracer/dfanalyzer/test.pfw.gz",
}

#: Calls kept per base; enough to cover opens, data calls and closes.
IO_LINES_PER_BASE = 120
APPLICATION_LINES_PER_BASE = 10

_IO_CATEGORY = re.compile(rb'"cat"\s*:\s*"(POSIX|STDIO)"')
_METADATA = re.compile(rb'"ph"\s*:\s*"M"')
_PATH_VALUE = re.compile(rb'"(fname|path|name)"\s*:\s*"[^"]*"')


def _slice(content: bytes) -> List[bytes]:
    lines = content.split(b"\n")
    metadata = [line for line in lines if _METADATA.search(line)]
    calls = [line for line in lines if _IO_CATEGORY.search(line)][:IO_LINES_PER_BASE]
    others = [
        line
        for line in lines
        if line.strip() not in (b"", b"[", b"]")
        and not _METADATA.search(line)
        and not _IO_CATEGORY.search(line)
    ][:APPLICATION_LINES_PER_BASE]
    return [b"["] + metadata + others + calls + [b"]"]


def _load_bases() -> Dict[str, List[bytes]]:
    bases = {}
    for name, relative in _SOURCES.items():
        raw = (DATA / relative).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        bases[name] = _slice(raw)
    return bases


BASES = _load_bases()
BASE_NAMES = sorted(BASES)

#: Paths a hostile trace might name, to rewrite into a line.
HOSTILE_PATHS = (
    "/../outside/keep.txt",
    "../../../../outside/keep.txt",
    "/link/keep.txt",
    "/link/../link/new.txt",
    "/a/./b//../../outside",
    "/" + "x" * 300 + "/" + "y" * 600,
    "/dev/null",
    "/proc/self/mem",
    "",
    "/",
    "/.greenpipe-replay-root",
    "/\u00e9t\u00e9/\udcff",
)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"k":' * depth + b"1" + b"}" * depth


def _index(lines: List[bytes], fraction: float) -> int:
    return min(int(fraction * len(lines)), len(lines) - 1)


def _apply(lines: List[bytes], mutation: Tuple) -> None:
    """Apply one mutation to ``lines`` in place."""
    kind = mutation[0]
    if not lines:
        lines.append(b"")
    i = _index(lines, mutation[1])
    line = lines[i]
    if kind == "drop":
        del lines[i]
    elif kind == "repeat":
        lines.insert(i, line)
    elif kind == "swap":
        j = _index(lines, mutation[2])
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "cut":
        lines[i] = line[: int(len(line) * mutation[2])]
    elif kind == "flip":
        if line:
            damaged = bytearray(line)
            damaged[_index(line, mutation[2])] ^= mutation[3]  # type: ignore[arg-type]
            lines[i] = bytes(damaged)
    elif kind == "split":
        cut = int(len(line) * mutation[2])
        lines[i : i + 1] = [line[:cut], line[cut:]]
    elif kind == "join" and i + 1 < len(lines):
        lines[i : i + 2] = [line + lines[i + 1]]
    elif kind == "insert":
        lines.insert(i, mutation[2])
    elif kind == "huge":
        size, valid = mutation[2], mutation[3]
        if valid:
            lines.insert(
                i,
                b'{"name":"write","cat":"POSIX","pid":1,"tid":1,"ts":1,"dur":1,'
                b'"ph":"X","args":{"fname":"/h","count":1,"pad":"'
                + b"p" * size
                + b'"}}',
            )
        else:
            lines.insert(i, b"{" * size)
    elif kind == "nested":
        depth, shape = mutation[2], mutation[3]
        lines.insert(
            i,
            b'{"name":"read","cat":"POSIX","pid":1,"tid":1,"ts":2,"dur":1,"ph":"X",'
            b'"args":{"fname":"/n","count":4,"fd":'
            + _nested(depth, shape)
            + b',"deep":'
            + _nested(depth, shape)
            + b"}}",
        )
    elif kind == "encoding":
        position = int(len(line) * mutation[2])
        lines[i] = line[:position] + mutation[3] + line[position:]
    elif kind == "path":
        replacement = b'"fname":"' + mutation[2].encode("utf-8", "surrogateescape") + b'"'
        lines[i] = _PATH_VALUE.sub(lambda match: replacement, line, count=1)


fractions = st.floats(min_value=0.0, max_value=1.0)
_bad_bytes = st.sampled_from(
    [b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\x00", b"\x1b[31m", b"\x7f"]
)
mutations = st.one_of(
    st.tuples(st.just("drop"), fractions),
    st.tuples(st.just("repeat"), fractions),
    st.tuples(st.just("swap"), fractions, fractions),
    st.tuples(st.just("cut"), fractions, fractions),
    st.tuples(st.just("flip"), fractions, fractions, st.integers(1, 255)),
    st.tuples(st.just("split"), fractions, fractions),
    st.tuples(st.just("join"), fractions),
    st.tuples(st.just("insert"), fractions, st.binary(max_size=300)),
    st.tuples(st.just("huge"), fractions, st.integers(10_000, 300_000), st.booleans()),
    st.tuples(
        st.just("nested"),
        fractions,
        st.sampled_from([2, 64, 254, 255, 600, 1023, 1024, 1025, 5000]),
        st.sampled_from(["list", "dict"]),
    ),
    st.tuples(st.just("encoding"), fractions, fractions, _bad_bytes),
    st.tuples(st.just("path"), fractions, st.sampled_from(HOSTILE_PATHS)),
)


@st.composite
def mutated_traces(draw: st.DrawFn, max_mutations: int = 8) -> bytes:
    """Draw the text of a trace: one or more mutated bases, concatenated."""
    parts = []
    for name in draw(st.lists(st.sampled_from(BASE_NAMES), min_size=1, max_size=3)):
        lines = list(BASES[name])
        for mutation in draw(st.lists(mutations, max_size=max_mutations)):
            _apply(lines, mutation)
        separator = draw(st.sampled_from([b"\n", b"\r\n"]))
        parts.append(separator.join(lines))
        parts.append(draw(st.sampled_from([b"", b"\n", b"\n\n", b",\n"])))
    return b"".join(parts)


@st.composite
def trace_files(draw: st.DrawFn, max_mutations: int = 8) -> Tuple[str, bytes]:
    """Draw ``(suffix, file content)``: plain text or gzip, maybe cut short."""
    text = draw(mutated_traces(max_mutations))
    form = draw(st.sampled_from(["plain", "gzip", "members", "truncated gzip"]))
    if form == "plain":
        return ".pfw", text
    if form == "gzip":
        return ".pfw.gz", gzip.compress(text, compresslevel=1)
    if form == "members":
        cut = draw(st.integers(0, len(text)))
        return ".pfw.gz", gzip.compress(text[:cut], 1) + gzip.compress(text[cut:], 1)
    packed = gzip.compress(text, compresslevel=1)
    return ".pfw.gz", packed[: draw(st.integers(0, len(packed)))]
