"""Exception classes shared by every layer of greenpipe."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    BaseExceptionGroup = BaseExceptionGroup  # noqa: F821, PLW0127
    ExceptionGroup = ExceptionGroup  # noqa: F821, PLW0127
else:  # pragma: no cover - exercised only on Python < 3.11
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

__all__ = [
    "BaseExceptionGroup",
    "Cancelled",
    "DeadlockError",
    "ExceptionGroup",
    "ExecutorShutdownError",
    "GreenpipeError",
]


class GreenpipeError(Exception):
    """Base class of the errors that greenpipe raises itself."""


class Cancelled(BaseException):
    """Raised inside a task at a blocking call after its cancellation.

    It derives from :class:`BaseException`, like :class:`KeyboardInterrupt`,
    so that ``except Exception`` blocks in user code do not swallow it. A
    task that ends with this exception counts as cancelled, not failed.
    """


class DeadlockError(GreenpipeError):
    """Raised when every task waits and nothing is left that could wake them.

    The message lists each waiting task by name, what it waits on and where.
    """


class ExecutorShutdownError(GreenpipeError, RuntimeError):
    """Raised when work is submitted to an executor that is shut down."""


def raise_collected(errors: list[BaseException], message: str) -> None:
    """Raise one error as itself and several as an exception group.

    Does nothing when ``errors`` is empty.
    """
    if not errors:
        return
    if len(errors) == 1:
        raise errors[0]
    if all(isinstance(error, Exception) for error in errors):
        raise ExceptionGroup(message, errors)  # type: ignore[type-var]
    raise BaseExceptionGroup(message, errors)
