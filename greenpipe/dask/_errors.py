"""Errors of the Dask backend; importing them loads nothing from Dask."""

from __future__ import annotations

from .._errors import GreenpipeError

__all__ = ["GeventPatchedError", "RemoteTaskError"]


class GeventPatchedError(GreenpipeError, RuntimeError):
    """Raised when the Dask backend is used in a process patched by gevent.

    Attributes:
        modules: The patched standard modules that were found.
    """

    def __init__(self, message: str, modules: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.modules = modules


class RemoteTaskError(GreenpipeError):
    """An exception from a Dask worker that could not be sent as itself.

    It replaces an exception whose type or state cannot be pickled or
    rebuilt on the client. Its message is ``"<type>: <message>"``, it keeps
    the original notes, and its traceback is that of the worker.

    Attributes:
        type_name: The qualified name of the original exception's type.
        remote_traceback: The original traceback, formatted on the worker.
    """

    def __init__(self, message: str, type_name: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback
