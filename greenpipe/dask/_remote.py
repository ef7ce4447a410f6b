"""Pickling of task bodies by value, and of the exceptions they raise.

Task bodies. A Dask worker imports a function by name when the function was
pickled by reference, so a body defined in a script, a notebook or a test
module that the workers cannot import would fail there. Bodies are
therefore pickled by value with cloudpickle: the code and the globals it
uses travel with the task. This applies to the modules of the body and of
the callables it wraps (closures, ``functools.partial``, bound methods),
except greenpipe itself and modules installed under the interpreter's
prefixes, which every worker is expected to import. cloudpickle's switch
for this is global to the process, so it is turned on under a lock and off
again right after. If a body cannot be pickled by value (a global it uses
holds a lock or a socket), it is pickled by reference instead.

Exceptions. An exception pickles its type, arguments and ``__dict__`` (so
its notes) but not its traceback, cause or context. :func:`capture` keeps
those as data (the traceback through tblib) and :func:`restore` rebuilds
the exception on the client. An exception that cannot be pickled, or not
unpickled, arrives as :class:`RemoteTaskError` with the original type name,
message, notes and formatted traceback.
"""

from __future__ import annotations

import functools
import io
import os
import site
import sys
import sysconfig
import traceback
import types
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import cloudpickle
from tblib import Traceback

from .._compat import allocate_lock
from ._errors import RemoteTaskError

__all__ = ["ExceptionRecord", "capture", "dumps_by_value", "restore"]

# cloudpickle's by-value registry is global to the process.
_registry_lock = allocate_lock()

# Causes and contexts deeper than this are dropped; real chains are short.
_MAX_CHAIN = 8

# Maximum depth of closures and partials that dumps_by_value searches.
_MAX_WRAPPING = 6


# -- task bodies ----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _installed_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    prefixes = {paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths}
    prefixes.update(site.getsitepackages())
    user_site = site.getusersitepackages()
    if isinstance(user_site, str):
        prefixes.add(user_site)
    return tuple(os.path.realpath(prefix) + os.sep for prefix in prefixes if prefix)


def _sent_by_value(module_name: str) -> bool:
    """Return whether functions of ``module_name`` are pickled by value."""
    if module_name == "__main__" or module_name.partition(".")[0] == "greenpipe":
        # cloudpickle already sends __main__ by value.
        return False
    module = sys.modules.get(module_name)
    filename = getattr(module, "__file__", None)
    if module is None or not filename:
        return False
    path = os.path.realpath(filename)
    return not path.startswith(_installed_prefixes())


def _modules_of(obj: Any, found: set[str], depth: int = 0) -> None:
    """Add to ``found`` the modules of ``obj`` and of the callables it wraps."""
    if depth > _MAX_WRAPPING:
        return
    if isinstance(obj, functools.partial):
        _modules_of(obj.func, found, depth + 1)
        for value in (*obj.args, *obj.keywords.values()):
            if callable(value):
                _modules_of(value, found, depth + 1)
        return
    if isinstance(obj, types.MethodType):
        _modules_of(obj.__func__, found, depth + 1)
        _modules_of(type(obj.__self__), found, depth + 1)
        return
    if isinstance(obj, types.FunctionType):
        found.add(obj.__module__)
        for cell in obj.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(contents):
                _modules_of(contents, found, depth + 1)
        return
    if isinstance(obj, type):
        found.add(obj.__module__)
        return
    module = getattr(type(obj), "__module__", None)
    if isinstance(module, str):
        found.add(module)


def dumps_by_value(items: Sequence[Any], bodies: Iterable[Any]) -> list[bytes]:
    """Pickle each of ``items``, sending the modules of ``bodies`` by value.

    Args:
        items: The objects to pickle, one blob each.
        bodies: The callables inside ``items`` whose modules, and those of
            the callables they wrap, travel by value.

    Returns:
        One pickle per item, in order.

    Raises:
        Exception: The error of pickling an item by reference, after
            pickling it by value failed too.
    """
    found: set[str] = set()
    for body in bodies:
        _modules_of(body, found)
    modules = sorted(name for name in found if _sent_by_value(name))

    blobs = []
    with _registry_lock:
        registered = cloudpickle.list_registry_pickle_by_value()
        added = [name for name in modules if name not in registered]
        for name in added:
            cloudpickle.register_pickle_by_value(sys.modules[name])
        try:
            for item in items:
                try:
                    blobs.append(cloudpickle.dumps(item))
                except Exception:
                    blobs.append(b"")
        finally:
            for name in added:
                cloudpickle.unregister_pickle_by_value(sys.modules[name])

    # Items that failed by value get a second chance by reference, outside
    # the lock, so that the error raised is the one of the plainer attempt.
    for index, blob in enumerate(blobs):
        if not blob:
            blobs[index] = cloudpickle.dumps(items[index])
    return blobs


# -- exceptions -----------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ExceptionRecord:
    """An exception turned into data that any Python process can unpickle.

    Attributes:
        blob: The exception pickled by cloudpickle, or ``None`` when it could
            not be pickled or rebuilt.
        type_name: The qualified name of the exception's type.
        message: ``str()`` of the exception.
        notes: The exception's notes.
        traceback: The traceback as tblib's dictionary, or ``None``.
        formatted: The traceback and exception, formatted.
        cause: The record of ``__cause__``.
        context: The record of ``__context__`` when it differs from the
            cause.
        context_is_cause: Whether ``__context__`` is the cause itself.
        suppress_context: ``__suppress_context__``.
    """

    blob: Optional[bytes]
    type_name: str
    message: str
    notes: tuple[str, ...]
    traceback: Optional[dict[str, Any]]
    formatted: str
    cause: Optional[ExceptionRecord]
    context: Optional[ExceptionRecord]
    context_is_cause: bool
    suppress_context: bool

    def __repr__(self) -> str:
        return f"<ExceptionRecord {self.type_name}: {self.message!r}>"


def _type_name(error: BaseException) -> str:
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


class _ExceptionPickler(cloudpickle.Pickler):
    """A cloudpickle pickler that reduces exceptions with their own methods.

    distributed registers tblib's reducer for every exception class in
    copyreg. That reducer rebuilds some built-in exceptions without calling
    their ``__init__``, so ``SystemExit`` would lose its code.
    """

    def __init__(self, file: io.BytesIO) -> None:
        # The C pickler reads dispatch_table once, when it is initialised.
        self.dispatch_table = {
            kind: reducer
            for kind, reducer in cloudpickle.Pickler.dispatch_table.items()
            if not (isinstance(kind, type) and issubclass(kind, BaseException))
        }
        super().__init__(file)


def _dumps_exception(error: BaseException) -> bytes:
    stream = io.BytesIO()
    _ExceptionPickler(stream).dump(error)
    return stream.getvalue()


def _pickle_checked(error: BaseException) -> bytes | None:
    """Pickle ``error`` alone, or return ``None`` if it does not round-trip."""
    # The traceback, cause and context travel in the record; left in place,
    # a context holding an unpicklable object would sink the exception.
    chain = (error.__traceback__, error.__cause__, error.__context__, error.__suppress_context__)
    error.__traceback__ = error.__cause__ = error.__context__ = None
    try:
        blob = _dumps_exception(error)
        cloudpickle.loads(blob)
    except Exception:
        return None
    finally:
        error.__traceback__, error.__cause__, error.__context__ = chain[:3]
        error.__suppress_context__ = chain[3]
    return blob


def _traceback_data(tb: types.TracebackType | None) -> dict[str, Any] | None:
    if tb is None:
        return None
    data: dict[str, Any] = Traceback(tb).to_dict()
    # cloudpickle names the code of a function sent by value
    # "<dynamic-code>"; the module's __file__ among its globals is the file.
    entry: dict[str, Any] | None = data
    while entry is not None:
        frame = entry["tb_frame"]
        code = frame["f_code"]
        filename = frame.get("f_globals", {}).get("__file__")
        if code.get("co_filename") == "<dynamic-code>" and isinstance(filename, str):
            code["co_filename"] = filename
        entry = entry.get("tb_next")
    return data


def capture(error: BaseException, depth: int = 0) -> ExceptionRecord:
    """Record ``error`` with its traceback, notes, cause and context."""
    notes = getattr(error, "__notes__", None)
    notes = tuple(str(note) for note in notes) if isinstance(notes, list) else ()
    tb = error.__traceback__
    cause = context = None
    if depth < _MAX_CHAIN:
        if error.__cause__ is not None:
            cause = capture(error.__cause__, depth + 1)
        if error.__context__ is not None and error.__context__ is not error.__cause__:
            context = capture(error.__context__, depth + 1)
    return ExceptionRecord(
        blob=_pickle_checked(error),
        type_name=_type_name(error),
        message=str(error),
        notes=notes,
        traceback=_traceback_data(tb),
        formatted="".join(traceback.format_exception(type(error), error, tb)),
        cause=cause,
        context=context,
        context_is_cause=error.__context__ is not None and error.__context__ is error.__cause__,
        suppress_context=error.__suppress_context__,
    )


def restore(record: ExceptionRecord) -> BaseException:
    """Rebuild the exception of ``record``, traceback and chain included."""
    error: BaseException | None = None
    if record.blob is not None:
        try:
            error = cloudpickle.loads(record.blob)
        except Exception:
            error = None
    if not isinstance(error, BaseException):
        error = RemoteTaskError(
            f"{record.type_name}: {record.message}",
            type_name=record.type_name,
            remote_traceback=record.formatted,
        )
        if record.notes:
            error.__notes__ = list(record.notes)  # type: ignore[attr-defined]
    if record.traceback is not None:
        try:
            error = error.with_traceback(Traceback.from_dict(record.traceback).as_traceback())
        except Exception:  # pragma: no cover - tblib rejects its own output
            pass
    if record.cause is not None:
        error.__cause__ = restore(record.cause)
    if record.context_is_cause:
        error.__context__ = error.__cause__
    elif record.context is not None:
        error.__context__ = restore(record.context)
    error.__suppress_context__ = record.suppress_context
    return error
