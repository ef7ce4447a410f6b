"""The path sandbox never lets a traced path act outside the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from greenpipe.replay import PathSandbox, SandboxError, map_components

from .conftest import snapshot


@pytest.mark.parametrize(
    ("traced", "expected"),
    [
        ("/a/b/c", (b"a", b"b", b"c")),
        ("a/b", (b"a", b"b")),
        ("/a/./b//c/", (b"a", b"b", b"c")),
        ("/a/b/../c", (b"a", b"c")),
        ("/../../etc/passwd", (b"etc", b"passwd")),
        ("../../../x", (b"x",)),
        ("/a/../../..", ()),
        ("/", ()),
    ],
)
def test_map_components_lexical(traced: str, expected: tuple) -> None:
    assert map_components(traced) == expected


def test_map_components_rejects_nul() -> None:
    with pytest.raises(SandboxError, match=r"^the traced path '/a\\x00b' contains a NUL byte$"):
        map_components("/a\x00b")


def test_map_components_shortens_long_names() -> None:
    long_a = "/d/" + "a" * 300
    long_b = "/d/" + "a" * 299 + "b"

    parts_a = map_components(long_a)
    parts_b = map_components(long_b)

    assert len(parts_a[-1]) == 255
    assert parts_a != parts_b


def test_long_name_file_created_inside(sandbox_dirs) -> None:
    root, outside = sandbox_dirs
    before = snapshot(outside)
    deep = "/" + "/".join(["x" * 200] * 30) + "/" + "y" * 400
    with PathSandbox(root) as sandbox:
        fd = sandbox.open(deep, os.O_WRONLY | os.O_CREAT)
        os.close(fd)
        assert sandbox.stat(deep).st_size == 0

    assert snapshot(outside) == before


def _plant_symlinks(root: Path, outside: Path) -> None:
    (root / "link_dir").symlink_to(outside)
    (root / "link_file").symlink_to(outside / "keep.txt")
    (root / "a").mkdir()
    (root / "a" / "up").symlink_to("../../outside")


@pytest.mark.parametrize(
    "operation",
    [
        lambda s: s.open("/link_dir/new.txt", os.O_WRONLY | os.O_CREAT),
        lambda s: s.open("/link_dir/keep.txt", os.O_RDONLY),
        lambda s: s.open("/link_file", os.O_WRONLY | os.O_TRUNC),
        lambda s: s.open("/link_file", os.O_RDONLY),
        lambda s: s.open("/a/up/keep.txt", os.O_RDWR),
        lambda s: s.unlink("/link_dir/keep.txt"),
        lambda s: s.mkdir("/link_dir/sub"),
        lambda s: s.rmdir("/a/up"),
        lambda s: s.rename("/link_dir/keep.txt", "/stolen.txt"),
        lambda s: s.rename("/a", "/link_dir/moved"),
        lambda s: s.truncate("/link_file", 0),
        lambda s: s.list_dir("/link_dir"),
        lambda s: s.stat("/link_dir/keep.txt"),
        lambda s: s.ensure_file("/a/up/keep.txt", 100),
        lambda s: s.ensure_file("/link_file", 100),
    ],
)
def test_planted_symlinks_never_followed(sandbox_dirs, operation) -> None:
    root, outside = sandbox_dirs
    _plant_symlinks(root, outside)
    before = snapshot(outside)

    with PathSandbox(root) as sandbox:
        with pytest.raises(OSError):
            result = operation(sandbox)
            if isinstance(result, int) and result > 2:
                os.close(result)

    assert snapshot(outside) == before
    assert (root / "link_file").is_symlink()


def test_unlink_removes_symlink_itself(sandbox_dirs) -> None:
    root, outside = sandbox_dirs
    _plant_symlinks(root, outside)
    before = snapshot(outside)

    with PathSandbox(root) as sandbox:
        sandbox.unlink("/link_file")

    assert not os.path.lexists(root / "link_file")
    assert snapshot(outside) == before


@pytest.mark.parametrize(
    "traced",
    ["/../outside/keep.txt", "../outside/keep.txt", "/a/../../outside/keep.txt", "/" + "../" * 50 + "outside/keep.txt"],
)
def test_dotdot_paths_stay_inside(sandbox_dirs, traced: str) -> None:
    root, outside = sandbox_dirs
    before = snapshot(outside)

    with PathSandbox(root) as sandbox:
        fd = sandbox.open(traced, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, b"replayed")
        os.close(fd)
        sandbox.unlink(traced)
        sandbox.mkdir(traced)
        sandbox.rmdir(traced)

    assert snapshot(outside) == before
    assert (root / "outside").is_dir()


def test_hard_link_not_written(sandbox_dirs) -> None:
    root, outside = sandbox_dirs
    os.link(outside / "keep.txt", root / "hard.txt")
    before = snapshot(outside)

    with PathSandbox(root) as sandbox:
        with pytest.raises(SandboxError, match="hard links"):
            sandbox.open("/hard.txt", os.O_WRONLY | os.O_TRUNC)
        with pytest.raises(SandboxError, match="hard links"):
            sandbox.truncate("/hard.txt", 0)

    assert snapshot(outside) == before


def test_fifo_rejected_without_blocking(sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    os.mkfifo(root / "pipe")

    with PathSandbox(root) as sandbox:
        with pytest.raises(SandboxError, match="not a regular file"):
            sandbox.open("/pipe", os.O_RDONLY)


def test_root_itself_not_removed(sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    with PathSandbox(root) as sandbox:
        with pytest.raises(SandboxError, match="root itself"):
            sandbox.rmdir("/")
        with pytest.raises(SandboxError, match="root itself"):
            sandbox.rename("/..", "/x")
        with pytest.raises(SandboxError):
            sandbox.open("/", os.O_WRONLY)

    assert root.is_dir()


def test_nul_byte_path_rejected(sandbox_dirs) -> None:
    root, outside = sandbox_dirs
    before = snapshot(outside)
    with PathSandbox(root) as sandbox:
        with pytest.raises(SandboxError, match="NUL byte"):
            sandbox.open("/../outside/keep.txt\x00.txt", os.O_WRONLY | os.O_CREAT)

    assert snapshot(outside) == before
    assert snapshot(root) == {}


def test_ensure_file_creates_sparse(sandbox_dirs) -> None:
    root, _ = sandbox_dirs
    with PathSandbox(root) as sandbox:
        created = sandbox.ensure_file("/data/in.bin", 1 << 20)
        again = sandbox.ensure_file("/data/in.bin", 10)

    assert created is True
    assert again is False
    assert (root / "data" / "in.bin").stat().st_size == 1 << 20


def test_root_with_bind_mount_inside_is_rejected(tmp_path):
    import subprocess

    from greenpipe.replay._sandbox import PathSandbox, SandboxError, prepare_root

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep")
    root = tmp_path / "root"
    (root / "mnt").mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "--bind", str(outside), str(root / "mnt")], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("bind mounts need root privileges")
    try:
        message = prepare_root(str(root))
        with pytest.raises(SandboxError, match="contains the mount point"):
            PathSandbox(root)
    finally:
        subprocess.run(["umount", str(root / "mnt")], check=True)

    assert message is not None
    assert "contains the mount point" in message
    assert (outside / "victim").read_bytes() == b"keep"


def test_replay_cannot_remove_root_marker(tmp_path):
    from greenpipe.replay._sandbox import ROOT_MARKER, PathSandbox, SandboxError, prepare_root

    root = tmp_path / "root"
    assert prepare_root(str(root)) is None

    with PathSandbox(root) as sandbox:
        with pytest.raises(SandboxError, match="marker"):
            sandbox.unlink("/" + ROOT_MARKER)

    assert (root / ROOT_MARKER).exists()


def test_hard_link_from_outside_is_not_unlinked_or_renamed(tmp_path):
    from greenpipe.replay._sandbox import PathSandbox, SandboxError, prepare_root

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shared").write_bytes(b"keep")
    root = tmp_path / "root"
    assert prepare_root(str(root)) is None
    os.link(outside / "shared", root / "planted")
    before = os.stat(outside / "shared")

    with PathSandbox(root) as sandbox:
        with pytest.raises(SandboxError, match="hard links"):
            sandbox.unlink("/planted")
        with pytest.raises(SandboxError, match="hard links"):
            sandbox.rename("/planted", "/moved")
        with pytest.raises(SandboxError, match="hard links"):
            sandbox.remove("/planted")
    after = os.stat(outside / "shared")

    assert after.st_nlink == before.st_nlink
    assert after.st_ctime_ns == before.st_ctime_ns
