"""Property tests: traced paths of any shape stay inside the replay root.

The mapping itself is checked on arbitrary strings. Replays are checked
against a root whose folders are symlinks to folders outside it: random
sequences of path and descriptor calls on paths built from those names,
``..`` and odd segments must leave everything outside the root as it was.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenpipe.replay import PathSandbox, ReplayOptions, SandboxError, map_components, replay
from greenpipe.replay._sandbox import NAME_MAX, ROOT_MARKER

from replay.conftest import call, write_trace

from ._corpus import examples

property_settings = settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_segment_text = st.one_of(
    st.sampled_from(["", ".", "..", "...", "a", "link", "up", "x" * 300, "\u00e9" * 200]),
    st.text(st.characters(blacklist_categories=()), min_size=1, max_size=12),
)
#: Any code point, lone surrogates included, because the library API takes
#: ``str`` paths from callers as well as from traces.
_any_text = st.text(st.characters(blacklist_categories=()), max_size=80)
traced_paths = st.one_of(
    _any_text,
    st.builds(
        lambda absolute, segments: ("/" if absolute else "") + "/".join(segments),
        st.booleans(),
        st.lists(_segment_text, max_size=8),
    ),
)


def _state(folder: Path) -> Dict[str, Tuple[Any, ...]]:
    """Return type, size, link count, times and content of every path below ``folder``.

    Access times are left out because reading a file to take the snapshot
    changes them.
    """
    found: Dict[str, Tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames, ""]:
            full = os.path.join(dirpath, name) if name else dirpath
            info = os.lstat(full)
            content = None
            if stat.S_ISREG(info.st_mode):
                content = Path(full).read_bytes()
            found[os.path.relpath(full, folder)] = (
                info.st_mode,
                info.st_size,
                info.st_nlink,
                info.st_mtime_ns,
                info.st_ctime_ns,
                content,
            )
    return found


@property_settings
@given(traced_paths)
def test_mapped_path_inside_root(traced: str) -> None:
    root = "/replay/root"
    try:
        parts = map_components(traced)
    except SandboxError:
        assert "\x00" in traced or any(map(_is_surrogate, traced))
        return

    mapped = os.path.normpath(os.path.join(root, *(os.fsdecode(p) for p in parts)))

    assert mapped == root or mapped.startswith(root + "/")
    for part in parts:
        assert part not in (b"", b".", b"..")
        assert b"/" not in part
        assert b"\x00" not in part
        assert len(part) <= NAME_MAX
    assert map_components("/" + "/".join(os.fsdecode(p) for p in parts)) == parts


def test_lone_surrogate_path_rejected() -> None:
    with pytest.raises(
        SandboxError,
        match=r"^the traced path '/a/\\ud800' contains a lone surrogate that is not an "
        r"undecodable byte$",
    ):
        map_components("/a/\ud800")


def _is_surrogate(char: str) -> bool:
    return 0xD800 <= ord(char) <= 0xDFFF


@settings(property_settings, max_examples=examples(100))
@given(st.lists(traced_paths, min_size=1, max_size=6))
def test_sandbox_calls_stay_inside(paths: List[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root, outside = _make_root_with_links(Path(folder))
        before = _state(outside)

        with PathSandbox(root) as sandbox:
            for traced in paths:
                _try_every_call(sandbox, traced)

        assert _state(outside) == before


def _try_every_call(sandbox: PathSandbox, traced: str) -> None:
    attempts = (
        lambda: os.close(sandbox.open(traced, os.O_RDWR | os.O_CREAT | os.O_TRUNC)),
        lambda: sandbox.ensure_file(traced + "/f", 10),
        lambda: sandbox.truncate(traced, 3),
        lambda: sandbox.stat(traced),
        lambda: sandbox.list_dir(traced),
        lambda: sandbox.rename(traced, "/moved"),
        lambda: sandbox.rename("/moved", traced),
        lambda: sandbox.unlink(traced),
        lambda: sandbox.mkdir(traced),
        lambda: sandbox.rmdir(traced),
        lambda: sandbox.remove(traced),
    )
    for attempt in attempts:
        try:
            attempt()
        except OSError:
            pass


def _make_root_with_links(folder: Path) -> Tuple[Path, Path]:
    """Make a root whose folders are symlinks to folders of ``outside``."""
    outside = folder / "outside"
    (outside / "data").mkdir(parents=True)
    (outside / "data" / "in.bin").write_bytes(b"x" * 100)
    (outside / "scratch").mkdir()
    (outside / "keep.txt").write_bytes(b"original")
    root = folder / "root"
    (root / "p").mkdir(parents=True)
    (root / ROOT_MARKER).write_text("")
    (root / "data").symlink_to(outside / "data")
    (root / "p" / "lustre").symlink_to(outside / "scratch")
    (root / "up").symlink_to("../outside")
    (root / "keep.txt").symlink_to(outside / "keep.txt")
    return root, outside


_LINKED_PATHS = st.builds(
    lambda prefix, middle, name: prefix + middle + name,
    st.sampled_from(["/data/", "/p/lustre/", "/up/", "/up/data/", "/", "/p/../data/", "/a/../up/"]),
    st.sampled_from(["", "sub/", "../", "../../outside/", "./"]),
    st.sampled_from(["in.bin", "new.bin", "keep.txt", "scratch", "data", "sub"]),
)

_OPERATIONS = st.sampled_from(
    [
        "create",
        "open_read",
        "write",
        "pwrite",
        "read",
        "ftruncate",
        "close",
        "fopen",
        "unlink",
        "rename",
        "mkdir",
        "rmdir",
        "truncate",
        "stat",
        "opendir",
        "remove",
    ]
)


def _event(operation: str, ts: int, path: str, other: str, fd: int) -> Dict[str, Any]:
    rw_create = os.O_RDWR | os.O_CREAT | os.O_TRUNC
    table = {
        "create": lambda: call("open64", ts, fname=path, flags=rw_create, mode=0o644, ret=fd),
        "open_read": lambda: call("open64", ts, fname=path, flags=os.O_RDONLY, ret=fd),
        "write": lambda: call("write", ts, fname=path, fd=fd, count=16, ret=16),
        "pwrite": lambda: call("pwrite64", ts, fname=path, fd=fd, count=8, offset=4, ret=8),
        "read": lambda: call("read", ts, fname=path, fd=fd, count=32, ret=32),
        "ftruncate": lambda: call("ftruncate", ts, fname=path, fd=fd, length=1, ret=0),
        "close": lambda: call("close", ts, fname=path, fd=fd, ret=0),
        "fopen": lambda: call("fopen", ts, cat="STDIO", fname=path, mode="w"),
        "unlink": lambda: call("unlink", ts, fname=path, ret=0),
        "rename": lambda: call("rename", ts, fname=path, newpath=other, ret=0),
        "mkdir": lambda: call("mkdir", ts, fname=path, mode=0o755, ret=0),
        "rmdir": lambda: call("rmdir", ts, fname=path, ret=0),
        "truncate": lambda: call("truncate", ts, fname=path, length=0, ret=0),
        "stat": lambda: call("__xstat64", ts, fname=path),
        "opendir": lambda: call("opendir", ts, fname=path),
        "remove": lambda: call("remove", ts, cat="STDIO", fname=path, ret=0),
    }
    return table[operation]()


@pytest.mark.timeout(120)
@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    st.lists(
        st.tuples(_OPERATIONS, _LINKED_PATHS, _LINKED_PATHS, st.integers(3, 5)),
        min_size=1,
        max_size=25,
    )
)
def test_replay_through_symlinked_folders(steps: List[Tuple[str, str, str, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root, outside = _make_root_with_links(Path(folder))
        events = [
            _event(operation, ts, path, other, fd)
            for ts, (operation, path, other, fd) in enumerate(steps, start=1)
        ]
        trace = write_trace(Path(folder) / "trace.pfw", events)
        before = _state(outside)

        summary = replay([str(trace)], ReplayOptions(root=str(root), threads=2))

        # Unlinking or renaming a symlink in the root is allowed. Only
        # the folders it points to must stay as they were.
        assert _state(outside) == before
        assert summary.events_seen == len(events)
        assert summary.events_replayed + summary.events_failed + summary.events_skipped == len(
            events
        )


def test_replay_symlinked_folders_known_trace(tmp_path: Path) -> None:
    root, outside = _make_root_with_links(tmp_path)
    rw_create = os.O_RDWR | os.O_CREAT | os.O_TRUNC
    events = [
        call("open64", 1, fname="/data/in.bin", flags=rw_create, mode=0o644, ret=3),
        call("write", 2, fname="/data/in.bin", fd=3, count=10, ret=10),
        call("close", 3, fname="/data/in.bin", fd=3, ret=0),
        call("open64", 4, fname="/p/lustre/new.bin", flags=rw_create, mode=0o644, ret=3),
        call("close", 5, fname="/p/lustre/new.bin", fd=3, ret=0),
        call("unlink", 6, fname="/up/keep.txt", ret=0),
        call("rename", 7, fname="/data/in.bin", newpath="/moved.bin", ret=0),
        call("truncate", 8, fname="/keep.txt", length=0, ret=0),
        call("mkdir", 9, fname="/up/data/sub", mode=0o755, ret=0),
        call("open64", 10, fname="/p/lustre/../../up/keep.txt", flags=os.O_WRONLY, ret=4),
        call("write", 11, fname="/p/lustre/../../up/keep.txt", fd=4, count=5, ret=5),
    ]
    trace = write_trace(tmp_path / "trace.pfw", events)
    before = _state(outside)

    summary = replay([str(trace)], ReplayOptions(root=str(root), threads=2))

    assert _state(outside) == before
    assert (root / "data").is_symlink()
    assert (root / "up").is_symlink()
    assert (root / "keep.txt").is_symlink()
    assert summary.events_replayed == 0
    assert summary.failed == {"sandbox": 9}
    assert summary.skipped_by_call == {
        "close: descriptor opened before the trace or filtered out": 2
    }
