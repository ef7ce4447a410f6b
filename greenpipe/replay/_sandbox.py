"""Map traced paths under a root folder and operate on them safely.

A trace names paths of another machine (``/p/lustre/...``, ``/dev/shm``,
``/proc``), and a trace is untrusted input: it may hold ``..`` segments,
NUL bytes, names longer than the file system allows, or point at a
symlink that someone planted inside the root. The sandbox keeps every
operation inside the root with three rules:

* Mapping is lexical. Empty and ``.`` segments are dropped and ``..``
  removes the previous segment but never climbs above the root, the way
  ``chroot`` treats them. A name longer than ``NAME_MAX`` bytes is cut and
  given a digest suffix so that it stays unique.
* Resolution never follows a link. The mapped path is walked one segment
  at a time from an open descriptor of the root with ``openat(2)`` and
  ``O_NOFOLLOW | O_DIRECTORY``, so a symlink anywhere on the way fails
  with ``ELOOP`` instead of leading out. The walk also rejects a
  directory on another device, and a root that contains any mount point
  (a bind mount keeps the device number) is rejected at the start. The last
  segment is opened, removed, renamed or examined relative to its parent
  descriptor without following it.
* Opened files must be regular files or directories. Files are opened
  with ``O_NONBLOCK`` so a planted FIFO cannot hang the open, and a
  regular file with more than one hard link is rejected before it is
  truncated or written, because the other link may live outside the
  root. ``O_TRUNC`` is applied with ``ftruncate`` after those checks.

Walking costs two system calls per path segment on every path-based call
(``open``, ``stat``, ``unlink``...). Calls on descriptors (``read``,
``pwrite``) cost nothing extra. Descriptors of intermediate folders are
not cached, which keeps the walk free of races with ``rename`` and
``rmdir`` from concurrent streams.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from typing import Dict, Iterator, Optional, Tuple

from .._compat import allocate_lock

logger = logging.getLogger(__name__)

#: Maximum file name length, in bytes, of most Linux file systems.
NAME_MAX = 255
#: Largest file size and offset that a signed 64-bit ``off_t`` can represent.
MAX_FILE_SIZE = 2**63 - 1
#: Name of the file that marks a folder as a replay root.
ROOT_MARKER = ".greenpipe-replay-root"
_ROOT_MARKER_NAME = os.fsencode(ROOT_MARKER)

Components = Tuple[bytes, ...]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
#: Open flags passed through from a trace; the rest (``O_DIRECT``,
#: ``O_SYNC``, ``O_NOCTTY``, ``O_PATH``...) are dropped because they need
#: aligned buffers, change timing beyond the replayer's control, or do not
#: open a file.
_KEPT_FLAGS = (
    os.O_ACCMODE | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_APPEND | _O_DIRECTORY
)
_MAP_CACHE_LIMIT = 65536


class SandboxError(PermissionError):
    """Raised when an operation would leave the replay root.

    It is a :class:`PermissionError` (``EPERM``) so that code handling
    ``OSError`` from the replayed calls also handles it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(errno.EPERM, message)

    def __str__(self) -> str:
        return str(self.strerror)


def _shorten(name: bytes) -> bytes:
    # Imported here: long names are rare, and loading OpenSSL costs every
    # start of the command about 2 ms.
    import hashlib

    digest = hashlib.sha256(name).hexdigest()[:16].encode()
    return name[: NAME_MAX - 17] + b"~" + digest


def map_components(traced: str) -> Components:
    """Map a traced path to the segments of a path inside the root.

    Args:
        traced: the path as the trace names it, absolute or relative.

    Returns:
        The segments below the root, as bytes; empty for the root itself.

    Raises:
        SandboxError: ``traced`` contains a NUL byte, which no real path
            can contain, or a lone surrogate outside U+DC80 to U+DCFF,
            which ``os.fsencode`` cannot turn into bytes.
    """
    if "\x00" in traced:
        raise SandboxError(f"the traced path {traced!r} contains a NUL byte")

    parts: list[bytes] = []
    for segment in traced.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        try:
            name = os.fsencode(segment)
        except UnicodeEncodeError:
            # Only the surrogates U+DC80 to U+DCFF stand for bytes; any
            # other lone surrogate has no file name to map to.
            raise SandboxError(
                f"the traced path {traced!r} contains a lone surrogate that "
                "is not an undecodable byte"
            ) from None
        if len(name) > NAME_MAX:
            name = _shorten(name)
        parts.append(name)
    return tuple(parts)


class PathSandbox:
    """Operations on traced paths, confined to a root folder.

    Every method takes a traced path (a ``str`` as found in the trace),
    maps it with :func:`map_components` and works relative to an open
    descriptor of the root, never following symlinks. Failures raise
    :class:`OSError` as the system call did, or :class:`SandboxError` when
    the operation would leave the root.

    Blocking: every method makes blocking system calls in the calling
    thread. Threads: safe from any thread; the only shared state is the
    root descriptor and a mapping cache.

    Args:
        root: an existing folder. It is resolved once with
            :func:`os.path.realpath`, so the root itself may be reached
            through a symlink.

    Raises:
        NotADirectoryError: ``root`` is not a folder.
        FileNotFoundError: ``root`` does not exist.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(os.fspath(root))
        inner_mounts = mount_points_under(self.root)
        if inner_mounts:
            # A bind mount of a folder of the same file system keeps the
            # device number, so the per-folder device check cannot see it.
            raise SandboxError(
                f"the replay root {self.root!r} contains the mount point "
                f"{inner_mounts[0]!r}; choose a root with no mounts inside"
            )
        self._root_fd = os.open(self.root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        self._root_dev = os.fstat(self._root_fd).st_dev
        self._cache: Dict[str, Components] = {}
        self._lock = allocate_lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<PathSandbox root={self.root!r}>"

    def __enter__(self) -> PathSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the root descriptor; later calls raise ``OSError``."""
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._root_fd)

    # -- mapping --------------------------------------------------------------

    def components(self, traced: str) -> Components:
        """Return the mapped segments of ``traced`` (cached)."""
        found = self._cache.get(traced)
        if found is not None:
            return found
        found = map_components(traced)
        if len(self._cache) >= _MAP_CACHE_LIMIT:
            self._cache.clear()
        self._cache[traced] = found
        return found

    def display(self, traced: str) -> str:
        """Return the path inside the root that ``traced`` maps to."""
        try:
            parts = self.components(traced)
        except SandboxError:
            return repr(traced)
        return os.path.join(self.root, *(os.fsdecode(p) for p in parts))

    # -- walking --------------------------------------------------------------

    def _open_dir(self, name: bytes, parent: int) -> int:
        try:
            fd = os.open(
                name,
                os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC,
                dir_fd=parent,
            )
        except OSError as exc:
            # Linux reports ENOTDIR, not ELOOP, for a symlink opened with
            # O_DIRECTORY | O_NOFOLLOW.
            if exc.errno == errno.ELOOP or (
                exc.errno == errno.ENOTDIR and self._is_symlink(name, parent)
            ):
                raise SandboxError(
                    f"{os.fsdecode(name)!r} is a symlink inside the root; "
                    "symlinks are never followed"
                ) from None
            raise
        try:
            if os.fstat(fd).st_dev != self._root_dev:
                raise SandboxError(
                    f"{os.fsdecode(name)!r} is a mount point inside the root; "
                    "the replay stays on the root's file system"
                )
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _is_symlink(name: bytes, parent: int) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def _walk(self, parts: Components, create: bool) -> int:
        """Return a new descriptor of the folder holding ``parts[-1]``."""
        fd = os.dup(self._root_fd)
        try:
            for name in parts[:-1]:
                try:
                    child = self._open_dir(name, fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    child = self._open_dir(name, fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _parent(self, traced: str, create: bool = False) -> Tuple[int, bytes]:
        parts = self.components(traced)
        if not parts:
            raise SandboxError("the operation would change the replay root itself")
        if parts == (_ROOT_MARKER_NAME,):
            raise SandboxError("the operation would change the replay root's marker file")
        return self._walk(parts, create), parts[-1]

    # -- operations -----------------------------------------------------------

    def open(self, traced: str, flags: int, mode: int = 0o644) -> int:
        """Open ``traced`` like ``open(2)`` and return a descriptor.

        Only the access mode and ``O_CREAT``, ``O_EXCL``, ``O_TRUNC``,
        ``O_APPEND`` and ``O_DIRECTORY`` are kept from ``flags``;
        ``O_NOFOLLOW`` and ``O_CLOEXEC`` are always added. Missing parent
        folders are created when ``O_CREAT`` is set. Created files get at
        least owner read and write permission so that they can be replayed
        again and removed.

        Raises:
            SandboxError: the path leads through or to a symlink, a mount
                point, a special file, or a file with other hard links.
            OSError: the system call failed.
        """
        if _O_TMPFILE and flags & _O_TMPFILE == _O_TMPFILE:
            raise SandboxError("O_TMPFILE opens are not replayed")
        flags &= _KEPT_FLAGS
        truncate = bool(flags & os.O_TRUNC)
        flags &= ~os.O_TRUNC
        parts = self.components(traced)
        if not parts:
            parent, name = os.dup(self._root_fd), b"."
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                os.close(parent)
                raise SandboxError("the replay root itself cannot be opened for writing")
        else:
            parent, name = self._parent(traced, create=bool(flags & os.O_CREAT))
        try:
            fd = os.open(
                name,
                flags | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK,
                (mode & 0o7777) | 0o600,
                dir_fd=parent,
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SandboxError(
                    f"{self.display(traced)} is a symlink; symlinks are never followed"
                ) from None
            raise
        finally:
            os.close(parent)

        try:
            self._check_opened(fd, traced, flags, truncate)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_opened(self, fd: int, traced: str, flags: int, truncate: bool) -> None:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            if info.st_dev != self._root_dev:
                raise SandboxError(f"{self.display(traced)} is a mount point")
            return
        if not stat.S_ISREG(info.st_mode):
            raise SandboxError(
                f"{self.display(traced)} is not a regular file or folder "
                "(device, FIFO or socket); only regular files are replayed"
            )
        if info.st_dev != self._root_dev:
            raise SandboxError(f"{self.display(traced)} is on another file system")
        writing = flags & os.O_ACCMODE != os.O_RDONLY or truncate
        if writing and info.st_nlink > 1:
            raise SandboxError(
                f"{self.display(traced)} has {info.st_nlink} hard links; a file "
                "linked from elsewhere is never written"
            )
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        if truncate and flags & os.O_ACCMODE != os.O_RDONLY:
            os.ftruncate(fd, 0)

    def stat(self, traced: str) -> os.stat_result:
        """Return the status of ``traced`` without following a final symlink."""
        parts = self.components(traced)
        if not parts:
            return os.fstat(self._root_fd)
        parent, name = self._parent(traced)
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)

    def mkdir(self, traced: str, mode: int = 0o755, parents: bool = True) -> None:
        """Create the folder ``traced``, and its missing parents if asked."""
        parent, name = self._parent(traced, create=parents)
        try:
            os.mkdir(name, (mode & 0o7777) | 0o700, dir_fd=parent)
        finally:
            os.close(parent)

    def rmdir(self, traced: str) -> None:
        """Remove the empty folder ``traced``."""
        parent, name = self._parent(traced)
        try:
            os.rmdir(name, dir_fd=parent)
        finally:
            os.close(parent)

    def unlink(self, traced: str) -> None:
        """Remove the file ``traced``; a symlink is removed, not followed."""
        parent, name = self._parent(traced)
        try:
            self._check_single_link(name, parent, traced)
            os.unlink(name, dir_fd=parent)
        finally:
            os.close(parent)

    def _check_single_link(self, name: bytes, parent: int, traced: str) -> None:
        # Removing or renaming one name of a file with several hard links
        # changes the link count and ctime of an inode that another name,
        # possibly outside the root, shares.
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            raise SandboxError(
                f"{self.display(traced)} has {info.st_nlink} hard links; files "
                "linked from elsewhere are never changed"
            )

    def remove(self, traced: str) -> None:
        """Remove ``traced`` like C ``remove(3)``: a file or an empty folder."""
        parent, name = self._parent(traced)
        try:
            self._check_single_link(name, parent, traced)
            try:
                os.unlink(name, dir_fd=parent)
            except IsADirectoryError:
                os.rmdir(name, dir_fd=parent)
        finally:
            os.close(parent)

    def rename(self, traced_old: str, traced_new: str) -> None:
        """Rename ``traced_old`` to ``traced_new``, creating missing parents."""
        old_parent, old_name = self._parent(traced_old)
        try:
            self._check_single_link(old_name, old_parent, traced_old)
            new_parent, new_name = self._parent(traced_new, create=True)
            try:
                self._check_single_link(new_name, new_parent, traced_new)
                os.rename(old_name, new_name, src_dir_fd=old_parent, dst_dir_fd=new_parent)
            finally:
                os.close(new_parent)
        finally:
            os.close(old_parent)

    def list_dir(self, traced: str) -> int:
        """Open and read the folder ``traced`` like ``opendir``; return the entry count."""
        fd = self.open(traced, os.O_RDONLY | _O_DIRECTORY)
        try:
            return len(os.listdir(fd))
        finally:
            os.close(fd)

    def truncate(self, traced: str, length: int) -> None:
        """Set the size of the file ``traced`` like ``truncate(2)``."""
        fd = self.open(traced, os.O_WRONLY)
        try:
            os.ftruncate(fd, length)
        finally:
            os.close(fd)

    def ensure_file(self, traced: str, size: int) -> bool:
        """Create ``traced`` as a sparse file of at least ``size`` bytes.

        An existing regular file shorter than ``size`` is extended with a
        hole; a longer one is left alone.

        Returns:
            Whether the file was created or extended.
        """
        if size > MAX_FILE_SIZE:
            # A corrupt trace can ask for more than off_t can represent, and
            # os.ftruncate would then raise OverflowError instead of failing.
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        created = True
        try:
            fd = self.open(traced, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            created = False
            fd = self.open(traced, os.O_RDWR)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
                return True
            return created
        finally:
            os.close(fd)

    def ensure_dir(self, traced: str) -> bool:
        """Create the folder ``traced`` and its parents; return whether it was created."""
        if not self.components(traced):
            return False
        try:
            self.mkdir(traced, 0o755, parents=True)
        except FileExistsError:
            return False
        return True

    def iter_tree(self) -> Iterator[str]:
        """Yield the paths below the root, for tests and reports."""
        for folder, dirs, files in os.walk(self.root):
            for name in dirs + files:
                yield os.path.relpath(os.path.join(folder, name), self.root)


def _unescape_mount_field(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as
    # three-digit octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def mount_points_under(root: str) -> list[str]:
    """Return the mount points strictly inside ``root`` (Linux; else ``[]``).

    NOTE: this is checked when a sandbox is created. A mount added inside
    the root while a replay runs, which needs root privileges, is not seen.
    """
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return []
    prefix = root.rstrip(os.sep) + os.sep
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            mount_point = _unescape_mount_field(fields[4])
            if mount_point.startswith(prefix):
                found.append(mount_point)
    return sorted(found)


def prepare_root(root: str, *, create: bool = True) -> Optional[str]:
    """Check that ``root`` may be used as a replay root and mark it.

    A root must be a new folder, an empty one, or one that an earlier
    replay marked with :data:`ROOT_MARKER`; any other folder is rejected
    so that a mistyped ``--root`` cannot make a replay remove or overwrite
    unrelated files. ``/`` is always rejected.

    Returns:
        ``None`` when the root can be used, otherwise a message that says
        why not and what to do.
    """
    real = os.path.realpath(root)
    if real == os.path.sep:
        return "The replay root cannot be '/'. Choose a new or empty folder."
    inner_mounts = mount_points_under(real)
    if inner_mounts:
        return (
            f"The replay root {root!r} contains the mount point {inner_mounts[0]!r}. "
            "Choose a root with no mounts inside."
        )
    if os.path.lexists(real) and not os.path.isdir(real):
        return f"The replay root {root!r} exists and is not a folder. Choose a new or empty folder."
    if os.path.isdir(real):
        entries = os.listdir(real)
        if entries and ROOT_MARKER not in entries:
            return (
                f"The replay root {root!r} is not empty and was not created by "
                "a replay. Choose a new or empty folder."
            )
    if not create:
        return None

    marker = os.path.join(real, ROOT_MARKER)
    try:
        os.makedirs(real, exist_ok=True)
        if not os.path.lexists(marker):
            with open(marker, "w", encoding="utf-8") as stream:
                stream.write("This folder is a greenpipe replay root.\n")
    except OSError as exc:
        return (
            f"Cannot create the replay root {root!r}: {exc.strerror or exc}. "
            "Choose a folder that can be created and written."
        )
    return None
