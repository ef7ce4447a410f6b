from __future__ import annotations

import os
import zlib
from typing import List

import pytest

from greenpipe.trace import Event, TraceReader
from greenpipe.trace import _inflate

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def data_path(relative: str) -> str:
    return os.path.join(DATA, relative)

ANKU94 = "anku94_dftracer/examples/dfanalyzer/test-trace.pfw.gz"
DIST = "hariharan-devarajan_dftracer/examples/dfanalyzer/test-trace-distributed"
DIST_0 = f"{DIST}/test-trace-dist-0.pfw.gz"
DIST_1 = f"{DIST}/test-trace-dist-1.pfw.gz"
CM1_0 = f"{DIST}/cm1_1_48_20240926/cm1-DEFAULT-3537780-preload.pfw.gz"
CM1_1 = f"{DIST}/cm1_1_48_20240926/cm1-DEFAULT-3537781-preload.pfw.gz"
TRAILING_COMMAS = "hariharan-devarajan_dftracer/.trace-0-of-2.pfw"
TEST_PFW = "hariharan-devarajan_dftracer/dfanalyzer/test.pfw"
TEST_PFW_GZ = "hariharan-devarajan_dftracer/dfanalyzer/test.pfw.gz"
ZINDEX = "hariharan-devarajan_dftracer/dfanalyzer/test.pfw.gz.zindex"
TEST_DATA1 = "hariharan-devarajan_dftracer/examples/graph_visualization/test_data1.pfw"
ARGONNE = "argonne-lcf_dlio_ml_workloads"
RESNET = (
    f"{ARGONNE}/resnet50/dlp-profiler-logs/small-test-output/"
    "dlio_profiler_results/dlp_logs-0.pfw"
)
COSMO = f"{ARGONNE}/cosmoflow/cosmoflow-updated-alcf/pytorch/dlp-logs"
COSMO_30752 = f"{COSMO}/trace-30752.pfw"
COSMO_32778 = f"{COSMO}/trace-32778.pfw"
COSMO_HIDDEN = f"{COSMO}/pfw/.trace-0-of-4.pfw"

# file, events, metadata events, bad lines, physical lines, ignored lines,
# repaired lines, joined lines, gzip members
PINNED = [
    (ANKU94, 74362, 1032, 0, 75396, 2, 0, 0, 2),
    (DIST_0, 3325, 0, 0, 3325, 0, 0, 0, 1),
    (DIST_1, 102785, 0, 0, 102786, 0, 0, 1, 1),
    (CM1_0, 8082, 709, 0, 8793, 2, 0, 0, 1),
    (CM1_1, 5882, 692, 0, 6576, 2, 0, 0, 1),
    (TRAILING_COMMAS, 704, 0, 0, 705, 1, 258, 0, 0),
    (TEST_PFW, 1012, 0, 0, 1013, 1, 0, 0, 0),
    (TEST_PFW_GZ, 1012, 0, 0, 1013, 1, 0, 0, 1),
    (TEST_DATA1, 12, 0, 0, 13, 1, 0, 0, 0),
    (RESNET, 58, 0, 0, 59, 1, 0, 0, 0),
    (COSMO_30752, 448, 0, 0, 450, 2, 0, 0, 0),
    (COSMO_32778, 2853, 0, 0, 2855, 2, 0, 0, 0),
    (COSMO_HIDDEN, 3546, 0, 0, 3547, 1, 0, 0, 0),
]


@pytest.mark.parametrize(
    "relative, events, metadata, bad, lines, ignored, repaired, joined, members",
    PINNED,
    ids=[os.path.basename(row[0]) for row in PINNED],
)
def test_real_trace_counts(
    relative: str,
    events: int,
    metadata: int,
    bad: int,
    lines: int,
    ignored: int,
    repaired: int,
    joined: int,
    members: int,
) -> None:
    reader = TraceReader(data_path(relative))
    decoded = sum(1 for _ in reader.iter_events())
    stats = reader.statistics().files[0]

    assert decoded == events
    assert stats.events == events
    assert stats.metadata_events == metadata
    assert stats.bad_lines == bad
    assert stats.lines == lines
    assert stats.ignored_lines == ignored
    assert stats.repaired_lines == repaired
    assert stats.joined_lines == joined
    assert stats.gzip_members == members
    assert stats.unresolved_hashes == 0
    assert stats.damage is None
    assert stats.complete


@pytest.mark.parametrize("relative", [row[0] for row in PINNED[:4]])
def test_real_trace_counts_same_for_dicts(relative: str) -> None:
    reader = TraceReader(data_path(relative))
    dicts = sum(1 for _ in reader.iter_lines_json())
    stats = reader.statistics().files[0]

    row = next(row for row in PINNED if row[0] == relative)
    assert dicts == row[1] + row[2]
    assert stats.events == row[1]
    assert stats.metadata_events == row[2]


def _events(relative: str, include_metadata: bool = False) -> List[Event]:
    reader = TraceReader(data_path(relative))
    return list(reader.iter_events(include_metadata=include_metadata))


def test_anku94_hex_hashes_resolve() -> None:
    events = _events(ANKU94)
    start = events[0]
    pread = next(e for e in events if e.name == "pread")

    assert start.name == "start"
    assert start.hostname == "corona183"
    assert start.path is None
    assert pread.args["fhash"] == "153cf721ffa90bda"
    assert pread.path == (
        "/p/lustre3/iopp/gitlab-runner-data/resnet50/data/train/"
        "img_0024_of_1024.tfrecord"
    )
    assert pread.hostname == "corona183"
    assert (pread.pid, pread.tid, pread.ts, pread.dur) == (
        380010,
        380393,
        1760614066980397,
        49750,
    )
    assert events[-1].name == "end"


def test_anku94_second_gzip_member_read() -> None:
    events = _events(ANKU94)

    assert events[-1].args["num_events"] == 75398
    assert events[-1].ts == 1760614243835262


def test_cm1_small_hash_collision_latest_wins() -> None:
    events = _events(CM1_0)
    xstats = [e for e in events if e.args.get("fhash") == 57110]
    before = xstats[0]
    after = next(e for e in xstats if e.name == "open")

    assert before.name == "__xstat"
    assert before.path == (
        "/usr/tce/backend/installations/linux-rhel8-x86_64/gcc-10.3.1/"
        "openmpi-4.1.2-66kpmbgreoruj2exhnizo3iwcd2boybx/lib/openmpi/"
        "mca_errmgr_default_orted.so"
    )
    assert after.path == "/proc/3537803/stat"
    assert after.hostname == "corona173"


def test_cm1_first_fopen_path() -> None:
    fopen = next(e for e in _events(CM1_0) if e.name == "fopen")

    assert fopen.path == (
        "/usr/tce/backend/installations/linux-rhel8-x86_64/gcc-10.3.1/"
        "openmpi-4.1.2-66kpmbgreoruj2exhnizo3iwcd2boybx/etc/"
        "openmpi-mca-params.conf"
    )
    assert fopen.args["mode"] == "r"


def test_cm1_metadata_tables() -> None:
    reader = TraceReader(data_path(CM1_0))
    events = list(reader.iter_events(include_metadata=True))
    metadata = reader.metadata()[data_path(CM1_0)]

    assert sum(1 for e in events if e.phase == "M") == 709
    assert metadata.hosts == {5692: "corona173"}
    assert metadata.strings[33764] == "./cm1.exe"
    assert metadata.process_properties == {"rank": "0"}
    assert metadata.thread_names == ("3537780",)
    assert metadata.process_names == ("Rank 0",)
    assert metadata.files[57110] == "/proc/3537803/stat"


def test_dist1_split_event_joined() -> None:
    events = _events(DIST_1)
    split = events[11]

    assert split.path == "/dev/shm/FI_NAMED_AV_0\n"
    assert split.hostname == "x3012c0s7b1n0"
    assert events[12].path.startswith("/dev/shm/cray-shared-mem-coll-setup-kvs")


def test_dist1_string_numbers_normalised() -> None:
    events = _events(DIST_1)
    first = events[0]
    pread = next(e for e in events if e.name == "pread")

    assert (first.pid, first.tid, first.ts, first.dur) == (
        1064335,
        2128670,
        1719854993920558,
        9,
    )
    assert isinstance(pread.args["offset"], int)
    assert isinstance(pread.args["count"], int)
    assert isinstance(pread.args["ret"], int)


def test_old_trace_inline_names() -> None:
    events = _events(TEST_PFW)
    read = next(e for e in events if e.name == "read")

    assert read.path == "/p/lustre1/haridev/dftracer_data/file_0-40.bat"
    assert read.hostname == "corona237"
    assert read.args["count"] == 131072


def test_pfw_and_gz_twins_differ_only_in_paths() -> None:
    plain = _events(TEST_PFW)
    packed = _events(TEST_PFW_GZ)

    assert [(e.name, e.ts, e.dur, e.tid) for e in plain] == [
        (e.name, e.ts, e.dur, e.tid) for e in packed
    ]
    assert packed[0].path is not None
    assert "dlio_profiler_data" in packed[-2].path or packed[-2].path is None


def test_float_timestamps_rounded() -> None:
    first = _events(COSMO_HIDDEN)[0]

    assert first.ts == 1679509858724101
    assert first.dur == 173830
    assert first.args == {}


def test_cosmoflow_path_argument() -> None:
    open64 = _events(COSMO_30752)[0]

    assert open64.name == "open64"
    assert open64.path.endswith("_univ_ics_2019-03_a9506861_050.tfrecord") or (
        open64.path.startswith("/home/hzheng/datascience_grand/")
    )
    assert open64.hostname == "x3004c0s13b1n0"
    assert open64.args["core_affinity"] == [1]


def test_folder_scan_order_and_skips() -> None:
    data_dir = DATA
    reader = TraceReader(data_dir)
    relative = [os.path.relpath(p, data_dir) for p in reader.files]

    assert relative == sorted(relative)
    assert len(relative) == len(PINNED)
    assert COSMO_HIDDEN in relative
    assert TRAILING_COMMAS in relative
    assert ZINDEX not in relative
    assert reader.statistics().skipped_files == (
        os.path.join(data_dir, "SOURCES.md"),
        os.path.join(data_dir, ZINDEX),
    )


def test_folder_totals() -> None:
    data_dir = DATA
    reader = TraceReader(data_dir)
    count = sum(1 for _ in reader.iter_events())
    stats = reader.statistics()

    assert count == sum(row[1] for row in PINNED)
    assert stats.events == count
    assert stats.metadata_events == sum(row[2] for row in PINNED)
    assert stats.bad_lines == 0
    assert stats.damaged_files == 0
    assert len(stats.files) == len(PINNED)


@pytest.mark.skipif(_inflate._isal_zlib is None, reason="isal not installed")
def test_isal_and_zlib_inflate_alike() -> None:
    reader = TraceReader(data_path(ANKU94))
    with_isal = b"".join(reader.iter_raw())
    reader._inflater = zlib
    with_zlib = b"".join(reader.iter_raw())

    assert with_isal == with_zlib
    assert len(with_zlib) == 16777397 + 1280060
