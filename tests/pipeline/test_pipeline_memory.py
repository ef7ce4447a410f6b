from __future__ import annotations

import os

import pytest

from greenpipe.pipeline import (
    available_memory,
    compute_channel_capacity,
    compute_file_batch_size,
    compute_memory_budget,
    estimate_per_file_bytes,
)

MIB = 1024 * 1024
GIB = 1024 * MIB


def write(root, relative: str, text: str) -> None:
    path = os.path.join(str(root), relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="ascii") as file:
        file.write(text)


MEMINFO = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    4000000 kB\n"


# -- available memory ----------------------------------------------------------------


def test_cgroup_v2_limit_minus_usage(tmp_path):
    write(tmp_path, "proc/self/cgroup", "0::/app.slice/job\n")
    write(tmp_path, "sys/fs/cgroup/app.slice/job/memory.max", "1073741824\n")
    write(tmp_path, "sys/fs/cgroup/app.slice/job/memory.current", "268435456\n")
    write(tmp_path, "proc/meminfo", MEMINFO)

    assert available_memory(str(tmp_path)) == GIB - 256 * MIB
    assert compute_memory_budget(root=str(tmp_path)) == (GIB - 256 * MIB) // 2


def test_cgroup_v2_at_mount_root(tmp_path):
    write(tmp_path, "proc/self/cgroup", "0::/\n")
    write(tmp_path, "sys/fs/cgroup/memory.max", str(2 * GIB))

    assert available_memory(str(tmp_path)) == 2 * GIB


def test_cgroup_v2_without_limit_falls_back_to_v1(tmp_path):
    write(tmp_path, "proc/self/cgroup", "4:memory:/box\n0::/\n")
    write(tmp_path, "sys/fs/cgroup/memory.max", "max\n")
    write(tmp_path, "sys/fs/cgroup/memory/box/memory.limit_in_bytes", str(2 * GIB))
    write(tmp_path, "sys/fs/cgroup/memory/box/memory.usage_in_bytes", str(GIB // 2))
    write(tmp_path, "proc/meminfo", MEMINFO)

    assert available_memory(str(tmp_path)) == 2 * GIB - GIB // 2


def test_cgroup_v1_unlimited_falls_back_to_meminfo(tmp_path):
    write(tmp_path, "proc/self/cgroup", "4:memory:/\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712")
    write(tmp_path, "proc/meminfo", MEMINFO)

    assert available_memory(str(tmp_path)) == 4000000 * 1024
    assert compute_memory_budget(root=str(tmp_path)) == 4000000 * 1024 // 2


def test_usage_above_limit_means_nothing_available(tmp_path):
    write(tmp_path, "sys/fs/cgroup/memory.max", str(GIB))
    write(tmp_path, "sys/fs/cgroup/memory.current", str(2 * GIB))

    assert available_memory(str(tmp_path)) == 0
    assert compute_memory_budget(root=str(tmp_path)) == 64 * MIB


def test_no_sources_gives_none_and_minimum_budget(tmp_path):
    assert available_memory(str(tmp_path)) is None
    assert compute_memory_budget(root=str(tmp_path)) == 64 * MIB


def test_malformed_files_are_skipped(tmp_path):
    write(tmp_path, "proc/self/cgroup", "garbage\n")
    write(tmp_path, "sys/fs/cgroup/memory.max", "lots")
    write(tmp_path, "proc/meminfo", "MemAvailable: many kB\n")

    assert available_memory(str(tmp_path)) is None


def test_small_memory_budget_has_floor(tmp_path):
    write(tmp_path, "proc/meminfo", "MemAvailable:   1000 kB\n")

    assert compute_memory_budget(root=str(tmp_path)) == 64 * MIB


def test_budget_override_wins(tmp_path):
    write(tmp_path, "proc/meminfo", MEMINFO)

    assert compute_memory_budget(12345, root=str(tmp_path)) == 12345


def test_budget_rejects_negative_override():
    with pytest.raises(ValueError, match=r"^override must be >= 0, not -1$"):
        compute_memory_budget(-1)


# -- per-file estimate ----------------------------------------------------------------


def test_per_file_estimate_is_p95_times_24():
    sizes = [0] * 10 + [MIB * i for i in range(1, 101)]

    # Nearest rank: the 95th of 100 sorted non-zero sizes is 95 MiB.
    assert estimate_per_file_bytes(sizes) == 95 * MIB * 24


def test_per_file_estimate_clamped():
    assert estimate_per_file_bytes([1, 2, 3]) == 64 * MIB
    assert estimate_per_file_bytes([GIB]) == 16 * GIB
    assert estimate_per_file_bytes([]) == 64 * MIB
    assert estimate_per_file_bytes([0, 0]) == 64 * MIB


def test_per_file_estimate_samples_1024_sizes():
    # 4096 sizes in four blocks; an even stride keeps the distribution.
    sizes = [MIB] * 1024 + [2 * MIB] * 1024 + [3 * MIB] * 1024 + [100 * MIB] * 1024

    assert estimate_per_file_bytes(sizes) == 100 * MIB * 24
    assert estimate_per_file_bytes(sizes[:3072]) == 3 * MIB * 24


def test_per_file_estimate_override_and_errors():
    assert estimate_per_file_bytes([MIB], override=7) == 7
    with pytest.raises(ValueError, match=r"^size must be >= 0, not -5$"):
        estimate_per_file_bytes([MIB, -5])
    with pytest.raises(ValueError, match=r"^override must be >= 0, not -1$"):
        estimate_per_file_bytes([MIB], override=-1)


# -- capacity and batch ----------------------------------------------------------------


def test_channel_capacity_formula():
    assert compute_channel_capacity(100 * MIB, MIB, 4) == 100
    assert compute_channel_capacity(MIB, MIB, 4) == 8
    assert compute_channel_capacity(MIB, MIB, 1) == 4
    assert compute_channel_capacity(0, MIB, 0) == 4


def test_channel_capacity_rejects_bad_values():
    with pytest.raises(ValueError, match=r"^batch_bytes must be > 0, not 0$"):
        compute_channel_capacity(MIB, 0, 2)
    with pytest.raises(ValueError, match=r"^workers must be >= 0, not -1$"):
        compute_channel_capacity(MIB, MIB, -1)
    with pytest.raises(ValueError, match=r"^budget must be >= 0, not -3$"):
        compute_channel_capacity(-3, MIB, 1)


def test_file_batch_size_formula():
    assert compute_file_batch_size(GIB, 64 * MIB) == 16
    assert compute_file_batch_size(64 * MIB, GIB) == 4
    assert compute_file_batch_size(64 * MIB, GIB, min_files=0) == 1
    assert compute_file_batch_size(64 * MIB, GIB, min_files=9) == 9


def test_file_batch_size_rejects_bad_values():
    with pytest.raises(ValueError, match=r"^per_file_bytes must be > 0, not 0$"):
        compute_file_batch_size(GIB, 0)
    with pytest.raises(ValueError, match=r"^min_files must be >= 0, not -1$"):
        compute_file_batch_size(GIB, MIB, min_files=-1)
