from __future__ import annotations

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


def iter_record_batches(reader: TraceReader, batch_size: int) -> Iterator[Any]:
    """Group the events of ``reader`` into record batches of one file each."""
    columns: Dict[str, List[Any]] = {field.name: [] for field in SCHEMA}
    current_file = None
    dumps = orjson.dumps
    rows = 0

    for event, path in reader._iter_events_with_file():
        if rows and (rows >= batch_size or path != current_file):
            yield pa.RecordBatch.from_pydict(columns, schema=SCHEMA)
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
        columns["args"].append(dumps(event.args, option=orjson.OPT_NON_STR_KEYS).decode())
        rows += 1

    if rows:
        yield pa.RecordBatch.from_pydict(columns, schema=SCHEMA)
