"""Which traced calls the replayer executes, and why it skips the others."""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

#: Categories of intercepted I/O calls; every other category is an
#: application event, counted but not executed.
IO_CATEGORIES = frozenset(("POSIX", "STDIO"))

#: Executed calls: traced name to the operation that replays it.
OPERATIONS: Mapping[str, str] = {
    "open": "open",
    "open64": "open",
    "openat": "openat",
    "openat64": "openat",
    "creat": "creat",
    "creat64": "creat",
    "close": "close",
    "read": "read",
    "write": "write",
    "pread": "pread",
    "pread64": "pread",
    "pwrite": "pwrite",
    "pwrite64": "pwrite",
    "lseek": "lseek",
    "lseek64": "lseek",
    "fsync": "fsync",
    "fdatasync": "fsync",
    "ftruncate": "ftruncate",
    "ftruncate64": "ftruncate",
    "truncate": "truncate",
    "truncate64": "truncate",
    "stat": "stat",
    "stat64": "stat",
    "lstat": "stat",
    "lstat64": "stat",
    "__xstat": "stat",
    "__xstat64": "stat",
    "__lxstat": "stat",
    "__lxstat64": "stat",
    "fstat": "fstat",
    "fstat64": "fstat",
    "__fxstat": "fstat",
    "__fxstat64": "fstat",
    "access": "access",
    "faccessat": "access",
    "mkdir": "mkdir",
    "rmdir": "rmdir",
    "unlink": "unlink",
    "remove": "remove",
    "rename": "rename",
    "opendir": "opendir",
    "fopen": "fopen",
    "fopen64": "fopen",
    "fclose": "fclose",
    "fread": "fread",
    "fwrite": "fwrite",
    "fseek": "fseek",
    "fseeko": "fseek",
    "fseeko64": "fseek",
    "ftell": "ftell",
    "ftello": "ftell",
    "ftello64": "ftell",
}

REASON_MMAP = "memory-mapped I/O is not recorded"
REASON_PROCESS = "process creation is not replayed"
REASON_DUP = "the new descriptor is not recorded"
REASON_FCNTL = "the third argument of fcntl is not recorded"
REASON_LINK = "links are not replayed"
REASON_METADATA = "attribute changes are not replayed"
REASON_UNKNOWN = "not a call the replayer knows"
#: Calls that failed when traced and could change the root if replayed
#: (see :func:`replays_failed_call`).
REASON_FAILED_IN_TRACE = "the call failed when traced (ret -1)"
REASON_NO_TARGET = "no path or descriptor recorded"
REASON_NO_SIZE = "no size recorded"
REASON_UNKNOWN_FD = "descriptor opened before the trace or filtered out"
REASON_MAX_BYTES = "--max-bytes reached"
REASON_TMPFILE = "O_TMPFILE opens are not replayed"

#: Calls skipped on purpose, with the reason reported for each.
SKIPPED: Mapping[str, str] = {
    **{name: REASON_MMAP for name in ("mmap", "mmap64", "munmap", "msync")},
    **{
        name: REASON_PROCESS
        for name in (
            "fork",
            "vfork",
            "clone",
            "execv",
            "execvp",
            "execvpe",
            "execve",
            "execl",
            "execlp",
            "execle",
            "exit",
            "_exit",
        )
    },
    **{name: REASON_DUP for name in ("dup", "dup2", "dup3")},
    "fcntl": REASON_FCNTL,
    **{
        name: REASON_LINK
        for name in ("link", "linkat", "symlink", "symlinkat", "readlink", "readlinkat")
    },
    **{
        name: REASON_METADATA
        for name in ("chmod", "fchmod", "chown", "lchown", "fchown", "utime", "umask")
    },
}

#: Operations that act on a descriptor or ``FILE*`` rather than a path.
DESCRIPTOR_OPS = frozenset(
    (
        "close",
        "read",
        "write",
        "pread",
        "pwrite",
        "lseek",
        "fsync",
        "ftruncate",
        "fstat",
        "fclose",
        "fread",
        "fwrite",
        "fseek",
        "ftell",
    )
)
#: Operations that move bytes, and the direction.
READ_OPS = frozenset(("read", "pread", "fread"))
WRITE_OPS = frozenset(("write", "pwrite", "fwrite"))
#: Operations whose traced ``ret`` counts what they moved (items for
#: ``fread``/``fwrite``), compared with the bytes the replay moved.
BYTE_OPS = READ_OPS | WRITE_OPS
#: Path calls that only look: programs probe paths that do not exist yet.
PROBE_OPS = frozenset(("stat", "access", "opendir"))
#: Operations that start or end a descriptor; sampling never drops them.
LIFETIME_OPS = frozenset(("open", "openat", "creat", "close", "fopen", "fclose"))


def classify(category: str, name: str) -> Optional[str]:
    """Return the operation replaying a call, or ``None`` for other events."""
    if category not in IO_CATEGORIES:
        return None
    return OPERATIONS.get(name)


def skip_reason(name: str) -> str:
    """Return why a POSIX or STDIO call without an operation is skipped."""
    return SKIPPED.get(name, REASON_UNKNOWN)


def replays_failed_call(op: str, args: Mapping[str, Any]) -> bool:
    """Return whether a call that failed when traced is executed anyway.

    Only calls that cannot change the root are: ``stat``, ``access``,
    ``opendir``, and opens without ``O_CREAT`` or ``O_TRUNC``. Executing
    them shows whether the replay fails where the traced program did.
    Others (a failed ``creat``, ``unlink`` or ``write``) are skipped, because
    replaying them could create, remove or change files that the traced
    program left alone.
    """
    if op in PROBE_OPS:
        return True
    if op in ("open", "openat", "fopen"):
        return not open_flags(op, args) & (os.O_CREAT | os.O_TRUNC)
    return False


def arg_int(args: Mapping[str, Any], key: str) -> Optional[int]:
    """Return an integer argument, or ``None`` when missing or not a number."""
    value = args.get(key)
    if value is None:
        return None
    if value.__class__ is int:
        return value  # type: ignore[no-any-return]
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return None


def transfer_size(op: str, args: Mapping[str, Any]) -> Optional[int]:
    """Return the bytes a data call asks for, or ``None`` when unrecorded.

    ``read``/``write`` and their positional forms ask for ``count``
    bytes; ``fread``/``fwrite`` ask for ``size * count``. When the request
    is missing, the recorded result (``ret``) stands in for it.
    """
    if op in ("fread", "fwrite"):
        size = arg_int(args, "size")
        count = arg_int(args, "count")
        if size is not None and count is not None:
            return max(size * count, 0)
        ret = arg_int(args, "ret")
        if size is not None and ret is not None and ret >= 0:
            return size * ret
        return None
    count = arg_int(args, "count")
    if count is not None:
        return max(count, 0)
    ret = arg_int(args, "ret")
    if ret is not None and ret >= 0:
        return ret
    return None


def done_size(op: str, args: Mapping[str, Any]) -> Optional[int]:
    """Return the bytes a data call moved when traced, or ``None``."""
    ret = arg_int(args, "ret")
    if ret is None or ret < 0:
        return transfer_size(op, args)
    if op in ("fread", "fwrite"):
        size = arg_int(args, "size")
        return ret * size if size is not None else None
    return ret


_FOPEN_ACCESS: Dict[str, int] = {
    "r": os.O_RDONLY,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
}


def fopen_flags(mode: Any) -> int:
    """Translate an ``fopen`` mode string (``"r"``, ``"w+"``, ``"ab"``) to open flags.

    A missing or unknown mode counts as ``"r"``.
    """
    text = mode if isinstance(mode, str) and mode else "r"
    flags = _FOPEN_ACCESS.get(text[0], os.O_RDONLY)
    if "+" in text:
        flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
    if "x" in text:
        flags |= os.O_EXCL
    return flags


def open_flags(op: str, args: Mapping[str, Any]) -> int:
    """Return the open flags of an ``open``/``openat``/``creat``/``fopen`` event."""
    if op == "creat":
        return os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if op == "fopen":
        return fopen_flags(args.get("mode"))
    flags = arg_int(args, "flags")
    return flags if flags is not None else os.O_RDONLY


def open_mode(op: str, args: Mapping[str, Any]) -> int:
    """Return the permission bits of a creating open (0o644 when unrecorded)."""
    if op == "fopen":
        return 0o644
    mode = arg_int(args, "mode")
    return mode & 0o7777 if mode is not None else 0o644
