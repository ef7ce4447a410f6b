from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, Iterator, List

import orjson
import pyarrow as pa

if TYPE_CHECKING:
    from ._reader import TraceReader

SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("category", pa.string()),
        ("phase", pa.string()),
        ("pid", pa.int64()),
        ("tid", pa.int64()),
        ("ts", pa.int64()),
        ("dur", pa.int64()),
        ("path", pa.string()),
        ("hostname", pa.string()),
        ("args", pa.string()),
    ]
)


#: The integer columns, whose values must fit in int64.
_INT_COLUMNS = ("pid", "tid", "ts", "dur")
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def iter_record_batches(reader: TraceReader, batch_size: int) -> Iterator[Any]:
    """Group the events of ``reader`` into record batches of one file each."""
    columns: Dict[str, List[Any]] = {field.name: [] for field in SCHEMA}
    current_file = None
    rows = 0

    for event, path in reader._iter_events_with_file():
        if rows and (rows >= batch_size or path != current_file):
            yield _batch(columns)
            columns = {field.name: [] for field in SCHEMA}
            rows = 0
        current_file = path
        columns["name"].append(event.name)
        columns["category"].append(event.category)
        columns["phase"].append(event.phase)
        columns["pid"].append(event.pid)
        columns["tid"].append(event.tid)
        columns["ts"].append(event.ts)
        columns["dur"].append(event.dur)
        columns["path"].append(event.path)
        columns["hostname"].append(event.hostname)
        columns["args"].append(_dump_args(event.args))
        rows += 1

    if rows:
        yield _batch(columns)


def _batch(columns: Dict[str, List[Any]]) -> Any:
    try:
        return pa.RecordBatch.from_pydict(columns, schema=SCHEMA)
    except OverflowError:
        # The decoder accepts any integer in pid, tid, ts and dur; those
        # outside int64 become nulls rather than failing the whole read.
        for name in _INT_COLUMNS:
            columns[name] = [
                value if value is None or _INT64_MIN <= value <= _INT64_MAX else None
                for value in columns[name]
            ]
        return pa.RecordBatch.from_pydict(columns, schema=SCHEMA)


def _dump_args(args: Dict[str, Any]) -> str:
    try:
        return orjson.dumps(args, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        # orjson parses up to 1024 levels of nesting but writes only 254.
        return _dump_deep(args)


class _Literal(str):
    """JSON text pushed on the stack of :func:`_dump_deep` as it is."""


# Shared, so that the stack of a deeply nested value holds references only.
_OPEN_OBJECT = _Literal("{")
_CLOSE_OBJECT = _Literal("}")
_OPEN_ARRAY = _Literal("[")
_CLOSE_ARRAY = _Literal("]")
_COMMA = _Literal(",")


def _dump_deep(value: Any) -> str:
    """Return ``value`` (decoded JSON) as JSON text, without recursion."""
    parts: List[str] = []
    stack: List[Any] = [value]
    keys: Dict[str, _Literal] = {}
    while stack:
        item = stack.pop()
        if isinstance(item, _Literal):
            parts.append(item)
        elif isinstance(item, dict):
            stack.append(_CLOSE_OBJECT)
            for number, (key, child) in enumerate(reversed(list(item.items()))):
                stack.append(child)
                text = keys.get(key)
                if text is None:
                    text = keys[key] = _Literal(json.dumps(str(key)) + ":")
                stack.append(text)
                if number < len(item) - 1:
                    stack.append(_COMMA)
            stack.append(_OPEN_OBJECT)
        elif isinstance(item, list):
            stack.append(_CLOSE_ARRAY)
            for number, child in enumerate(reversed(item)):
                stack.append(child)
                if number < len(item) - 1:
                    stack.append(_COMMA)
            stack.append(_OPEN_ARRAY)
        else:
            parts.append(json.dumps(item))
    return "".join(parts)
