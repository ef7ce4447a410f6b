"""Small validation helpers."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Union

Duration = Union[float, int, timedelta]


def to_seconds(value: Duration | None, name: str = "seconds") -> float | None:
    """Convert a duration in seconds or a ``timedelta`` to float seconds.

    Raises:
        TypeError: ``value`` is neither a number nor a ``timedelta``.
        ValueError: ``value`` is negative or NaN.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta, not {value!r}"
        )
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{name} must be >= 0, not {value!r}")
    if math.isinf(seconds):
        raise ValueError(f"{name} must be finite, not {value!r}; use None to wait forever")
    return seconds
