from __future__ import annotations

import dataclasses
import os
import types
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple


class PyEvent:
    """One decoded trace event.

    ``greenpipe.trace.Event`` is the compiled form of this class when the
    extension is built, and this class otherwise. Both have the same
    constructor, fields, equality and ``repr``. The garbage collector does
    not track a compiled event that the decoder built while its fields hold
    only strings, numbers, ``None`` and an ``args`` dict of such values, so
    collections stay short when many events are in flight. Reading
    ``args``, assigning a field or pickling tracks the event again.

    Events are plain slotted objects built by
    :meth:`~greenpipe.trace.TraceReader.iter_events`; creating them by
    hand is allowed (for tests or synthetic traces) but the reader never
    checks fields it did not decode itself.

    Attributes:
        name: function or region name (``"pread"``, ``"FH"``); ``""`` when
            the line has none.
        category: the ``cat`` field (``"POSIX"``, ``"STDIO"``,
            ``"dftracer"``, or an application category); ``""`` when absent.
        pid: process id; 0 when absent.
        tid: thread id; 0 when absent.
        ts: start time in microseconds, rounded to an int; 0 when absent
            (metadata events have no time).
        dur: duration in microseconds, rounded to an int; 0 when absent.
        phase: the ``ph`` field: ``"X"`` complete event, ``"M"`` metadata,
            ``"C"`` counter, or any other string as found; ``""`` when
            absent.
        args: the ``args`` object as decoded, with numeric call arguments
            that arrived as strings or floats converted to int; an empty
            dict when the line has no ``args``.
        path: file path from ``args.fhash`` resolved through the file's
            ``FH`` metadata, or from an inline ``fname`` or ``path``
            argument; ``None`` when the event names no file or the hash is
            not defined.
        hostname: host name from ``args.hhash`` resolved through ``HH``
            metadata, or from an inline ``hostname`` argument; ``None``
            otherwise.

    The writer's ``id`` counter is not decoded: it is not unique (files
    written by several processes repeat it), and reading it costs time on
    every event. :meth:`~greenpipe.trace.TraceReader.iter_lines_json`
    gives it when needed.
    """

    __slots__ = (
        "name",
        "category",
        "pid",
        "tid",
        "ts",
        "dur",
        "phase",
        "args",
        "path",
        "hostname",
    )

    name: str
    category: str
    pid: int
    tid: int
    ts: int
    dur: int
    phase: str
    args: Dict[str, Any]
    path: Optional[str]
    hostname: Optional[str]

    def __init__(
        self,
        name: str,
        category: str,
        pid: int,
        tid: int,
        ts: int,
        dur: int,
        phase: str,
        args: Dict[str, Any],
        path: Optional[str] = None,
        hostname: Optional[str] = None,
    ) -> None:
        self.name = name
        self.category = category
        self.pid = pid
        self.tid = tid
        self.ts = ts
        self.dur = dur
        self.phase = phase
        self.args = args
        self.path = path
        self.hostname = hostname

    def __repr__(self) -> str:
        return (
            f"Event(name={self.name!r}, category={self.category!r}, "
            f"pid={self.pid}, tid={self.tid}, ts={self.ts}, dur={self.dur}, "
            f"phase={self.phase!r}, path={self.path!r}, "
            f"hostname={self.hostname!r}, args={self.args!r})"
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not PyEvent:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def _key(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, slot) for slot in self.__slots__)

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        return (self.__class__, self._key())


if TYPE_CHECKING:
    Event = PyEvent
else:
    try:
        from ._speedups import Event
    except ImportError:  # built without a C compiler
        Event = PyEvent
    if os.environ.get("GREENPIPE_PURE_PYTHON", "") not in ("", "0"):
        Event = PyEvent


def to_int(value: Any) -> int:
    """Convert a number that may arrive as int, float or string to int.

    Floats and decimal strings with a fraction are rounded to the nearest
    integer, because the older Python writers store fractional
    microseconds.

    Raises:
        ValueError: ``value`` is a string that is not a number, or NaN.
        OverflowError: ``value`` is infinite.
        TypeError: ``value`` is not an int, float or string.
    """
    if value.__class__ is int:
        return value  # type: ignore[no-any-return]
    if value.__class__ is str:
        try:
            return int(value)
        except ValueError:
            return round(float(value))
    if isinstance(value, str):
        return to_int(str(value))
    if isinstance(value, float):
        return round(value)
    if isinstance(value, int):  # bool and int subclasses
        return int(value)
    raise TypeError(f"expected a number, not {value!r}")


def canonical_hash(value: Any) -> Any:
    """Return one comparable form of a hash written as int or string.

    DFTracer 1.0.5 writes 16-bit ints, 1.0.8 unsigned 64-bit decimal ints
    and newer builds 16-digit hex strings. Files are consistent inside, so
    raw values are looked up first. This form is only the fallback when a
    use and its definition were written with different types.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            if text.startswith("0x"):
                return int(text, 16)
            if len(text) == 16:
                return int(text, 16)
            return int(text, 10)
        except ValueError:
            return text
    return value


@dataclasses.dataclass(frozen=True)
class FileMetadata:
    """Metadata events of one trace file, as left after reading it.

    Attributes:
        path: the trace file.
        files: ``FH`` definitions, hash value to path.
        hosts: ``HH`` definitions, hash value to host name.
        strings: ``SH`` definitions, hash value to string (executable
            name, command line).
        process_properties: ``PR`` events, property name (``"rank"``) to
            value.
        thread_names: labels of ``thread_name`` events, in file order.
        process_names: labels of ``process_name`` events, in file order.
        custom: ``CM`` events, key to value.
    """

    path: str
    files: Mapping[Any, str]
    hosts: Mapping[Any, str]
    strings: Mapping[Any, str]
    process_properties: Mapping[str, Any]
    thread_names: Tuple[str, ...]
    process_names: Tuple[str, ...]
    custom: Mapping[str, Any]


#: Metadata kinds that define a hash.
HASH_KINDS = ("FH", "HH", "SH")


class HashTable:
    """Hash definitions and process labels found in one file.

    Each ``FH``, ``HH`` or ``SH`` metadata event maps a hash value to a
    string. DFTracer 1.0.5 writers keep 16-bit hashes, so one value can be
    defined twice in a file. The most recent definition wins, because it is
    the one in force when later events were written.
    """

    __slots__ = (
        "files",
        "hosts",
        "strings",
        "_canonical",
        "process_properties",
        "thread_names",
        "process_names",
        "custom",
    )

    def __init__(self) -> None:
        self.files: Dict[Any, str] = {}
        self.hosts: Dict[Any, str] = {}
        self.strings: Dict[Any, str] = {}
        self._canonical: Dict[Tuple[str, Any], str] = {}
        self.process_properties: Dict[str, Any] = {}
        self.thread_names: List[str] = []
        self.process_names: List[str] = []
        self.custom: Dict[str, Any] = {}

    def add_metadata(self, kind: Any, args: Any) -> None:
        """Record one ``ph: "M"`` event's ``name`` and ``args``."""
        if not isinstance(args, dict):
            return

        label = args.get("name")
        value = args.get("value")
        if kind in HASH_KINDS:
            if value is None or not isinstance(label, str):
                return
            if kind == "FH":
                table = self.files
            elif kind == "HH":
                table = self.hosts
            else:
                table = self.strings
            try:
                table[value] = label
            except TypeError:  # unhashable value, e.g. a list
                return
            self._canonical[(kind, canonical_hash(value))] = label
        elif kind == "PR":
            if isinstance(label, str):
                self.process_properties[label] = value
        elif kind == "thread_name":
            if label is not None:
                self.thread_names.append(str(label))
        elif kind == "process_name":
            if label is not None:
                self.process_names.append(str(label))
        elif kind == "CM":
            if isinstance(label, str):
                self.custom[label] = value

    def freeze(self, path: str) -> FileMetadata:
        """Return a read-only copy of the tables."""
        return FileMetadata(
            path=path,
            files=types.MappingProxyType(dict(self.files)),
            hosts=types.MappingProxyType(dict(self.hosts)),
            strings=types.MappingProxyType(dict(self.strings)),
            process_properties=types.MappingProxyType(dict(self.process_properties)),
            thread_names=tuple(self.thread_names),
            process_names=tuple(self.process_names),
            custom=types.MappingProxyType(dict(self.custom)),
        )

    def lookup(self, kind: str, value: Any) -> Optional[str]:
        """Resolve a hash that had no exact match, trying its other forms."""
        try:
            return self._canonical.get((kind, canonical_hash(value)))
        except TypeError:
            return None
