"""Memory budget helpers: how much to hold in flight, and how to split it.

The budget is half of the memory the process may still use, never less
than 64 MiB. "May still use" is read, in this order, from

1. cgroup v2: ``memory.max`` minus ``memory.current`` of the process's
   cgroup (``memory.max`` of ``max`` means no limit, so the next source is
   tried);
2. cgroup v1: ``memory.limit_in_bytes`` minus ``memory.usage_in_bytes``
   (a limit of 2**60 bytes or more is the kernel's way of saying no limit);
3. ``MemAvailable`` of ``/proc/meminfo``.

Every reader takes the filesystem root as a parameter, so tests point it at
a fake tree.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Optional

__all__ = [
    "MAX_PER_FILE_BYTES",
    "MIN_MEMORY_BUDGET",
    "MIN_PER_FILE_BYTES",
    "PER_FILE_MULTIPLIER",
    "available_memory",
    "compute_channel_capacity",
    "compute_file_batch_size",
    "compute_memory_budget",
    "estimate_per_file_bytes",
]

MIB = 1024 * 1024
GIB = 1024 * MIB

MIN_MEMORY_BUDGET = 64 * MIB
MIN_PER_FILE_BYTES = 64 * MIB
MAX_PER_FILE_BYTES = 16 * GIB
PER_FILE_MULTIPLIER = 24
MAX_SIZE_SAMPLES = 1024

# cgroup v1 reports "no limit" as a huge page-aligned number near 2**63.
_V1_NO_LIMIT = 1 << 60


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: str) -> Optional[int]:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _own_cgroup_paths(root: str) -> tuple[Optional[str], Optional[str]]:
    """Return the process's cgroup v2 path and v1 memory path, if listed."""
    text = _read_text(os.path.join(root, "proc/self/cgroup"))
    v2 = v1 = None
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _candidate_dirs(base: str, own: Optional[str]) -> list[str]:
    # Inside a container the process's cgroup is usually mounted at the
    # root of the hierarchy, so the root is tried after the listed path.
    dirs = []
    if own and own != "/":
        dirs.append(os.path.join(base, own.lstrip("/")))
    dirs.append(base)
    return dirs


def _cgroup_v2_available(root: str, own: Optional[str]) -> Optional[int]:
    base = os.path.join(root, "sys/fs/cgroup")
    for directory in _candidate_dirs(base, own):
        limit_text = _read_text(os.path.join(directory, "memory.max"))
        if limit_text is None:
            continue
        if limit_text == "max":
            return None
        try:
            limit = int(limit_text)
        except ValueError:
            return None
        usage = _read_int(os.path.join(directory, "memory.current")) or 0
        return max(limit - usage, 0)
    return None


def _cgroup_v1_available(root: str, own: Optional[str]) -> Optional[int]:
    base = os.path.join(root, "sys/fs/cgroup/memory")
    for directory in _candidate_dirs(base, own):
        limit = _read_int(os.path.join(directory, "memory.limit_in_bytes"))
        if limit is None:
            continue
        if limit >= _V1_NO_LIMIT:
            return None
        usage = _read_int(os.path.join(directory, "memory.usage_in_bytes")) or 0
        return max(limit - usage, 0)
    return None


def _meminfo_available(root: str) -> Optional[int]:
    text = _read_text(os.path.join(root, "proc/meminfo"))
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            fields = line.split()
            try:
                value = int(fields[1])
            except (IndexError, ValueError):
                return None
            unit = fields[2].lower() if len(fields) > 2 else ""
            return value * 1024 if unit == "kb" else value
    return None


def available_memory(root: str = "/") -> Optional[int]:
    """Return the bytes this process may still use, or ``None`` if unknown.

    Reads cgroup v2, then cgroup v1, then ``/proc/meminfo`` under ``root``;
    see the module docstring. Never blocks beyond reading a few small
    files and never raises for missing or malformed files.

    Args:
        root: The filesystem root to read under; tests pass a fake tree.
    """
    own_v2, own_v1 = _own_cgroup_paths(root)
    for available in (
        _cgroup_v2_available(root, own_v2),
        _cgroup_v1_available(root, own_v1),
        _meminfo_available(root),
    ):
        if available is not None:
            return available
    return None


def _check_non_negative_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value!r}")


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, not {value!r}")


def compute_memory_budget(override: int = 0, *, root: str = "/") -> int:
    """Return the bytes a pipeline may hold in flight.

    The budget is ``override`` when it is positive. Otherwise it is half of
    :func:`available_memory`, but at least 64 MiB, which is also the budget
    when the available memory cannot be read.

    Args:
        override: A budget in bytes; 0 computes one.
        root: The filesystem root to read under; tests pass a fake tree.

    Raises:
        ValueError: ``override`` is negative.
    """
    _check_non_negative_int(override, "override")
    if override > 0:
        return override
    available = available_memory(root)
    if available is None:
        return MIN_MEMORY_BUDGET
    return max(available // 2, MIN_MEMORY_BUDGET)


def estimate_per_file_bytes(sizes: Iterable[int], override: int = 0) -> int:
    """Estimate the memory that processing one file needs, from file sizes.

    The estimate is ``override`` when it is positive. Otherwise it is the
    95th percentile (nearest rank) of the non-zero ``sizes`` times 24,
    clamped to [64 MiB, 16 GiB]. The factor leaves room for a compressed
    trace to inflate and for its decoded lines; it is a rule of thumb, not
    a measurement. When there are more than 1024 non-zero sizes, 1024 of
    them are sampled at an even stride over the given order, so the result
    does not depend on chance. Without any non-zero size the result is
    64 MiB.

    Args:
        sizes: File sizes in bytes.
        override: An estimate in bytes; 0 computes one.

    Raises:
        ValueError: ``override`` or a size is negative.
    """
    _check_non_negative_int(override, "override")
    if override > 0:
        return override
    non_zero = []
    for size in sizes:
        _check_non_negative_int(size, "size")
        if size > 0:
            non_zero.append(size)
    if not non_zero:
        return MIN_PER_FILE_BYTES
    if len(non_zero) > MAX_SIZE_SAMPLES:
        stride = len(non_zero) / MAX_SIZE_SAMPLES
        non_zero = [non_zero[int(i * stride)] for i in range(MAX_SIZE_SAMPLES)]
    non_zero.sort()
    rank = math.ceil(0.95 * len(non_zero))
    p95 = non_zero[rank - 1]
    return min(max(p95 * PER_FILE_MULTIPLIER, MIN_PER_FILE_BYTES), MAX_PER_FILE_BYTES)


def compute_channel_capacity(budget: int, batch_bytes: int, workers: int) -> int:
    """Return how many batches a channel may hold within ``budget``.

    The capacity is ``budget // batch_bytes``, but at least
    ``max(2 * workers, 4)`` so that every worker can have one batch in
    hand and one queued even when the budget is small.

    Raises:
        ValueError: ``budget`` or ``workers`` is negative, or
            ``batch_bytes`` is not positive.
    """
    _check_non_negative_int(budget, "budget")
    _check_positive_int(batch_bytes, "batch_bytes")
    _check_non_negative_int(workers, "workers")
    return max(budget // batch_bytes, max(2 * workers, 4))


def compute_file_batch_size(budget: int, per_file_bytes: int, min_files: int = 4) -> int:
    """Return how many files to process at once within ``budget``.

    The batch is ``budget // per_file_bytes`` files, but at least
    ``max(min_files, 1)``.

    Raises:
        ValueError: ``budget`` or ``min_files`` is negative, or
            ``per_file_bytes`` is not positive.
    """
    _check_non_negative_int(budget, "budget")
    _check_positive_int(per_file_bytes, "per_file_bytes")
    _check_non_negative_int(min_files, "min_files")
    return max(budget // per_file_bytes, max(min_files, 1))


#: glibc's ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap rather than their own mapping.
HEAP_BLOCK_LIMIT = 4 * MIB
#: Free memory at the top of the heap kept for the next blocks.
HEAP_KEEP_BYTES = 8 * MIB


def keep_large_blocks_in_heap() -> bool:
    """Have glibc's allocator reuse the memory of freed blocks of up to 4 MiB.

    Reading a trace allocates and frees a block of about 1 MiB per chunk,
    several times over. By default glibc maps such a block on its own, or
    soon gives the top of the heap back to the system. Each new block then
    costs system calls and page faults, about half the system time of a
    dry run. Blocks up to :data:`HEAP_BLOCK_LIMIT` then come from the
    heap, which keeps up to :data:`HEAP_KEEP_BYTES` free for reuse. A dry
    run's peak memory grows by about 2 MiB. A real replay's grows by
    15 MiB on 20 copies of the newest test trace, with no gain in time,
    so the command sets it for dry runs only.

    For a process that belongs to greenpipe, as the command's does: the
    setting applies to the whole process. Returns whether it was applied;
    other C libraries are left alone.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (AttributeError, ValueError, OSError):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT) and mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP_BYTES)
    )
