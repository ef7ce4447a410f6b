"""The replay report (``--report DIR``): JSON, HTML and plots."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from greenpipe.cli import main
from greenpipe.replay import ReplayOptions, Replayer
from greenpipe.replay._report import NOT_MEASURED, elapsed_section, write_report

from .conftest import call, file_hash, write_trace

try:
    # Imported while collecting: numpy, which matplotlib imports, starts
    # its BLAS threads then, not inside a test that checks for leaked threads.
    import matplotlib.figure  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:  # pragma: no cover - matplotlib is in the test extra
    HAVE_MATPLOTLIB = False

needs_matplotlib = pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib is not installed (pip install 'greenpipe[report]')")

DATA = Path(__file__).resolve().parent.parent / "data"
SMALL = DATA / "hariharan-devarajan_dftracer" / "dfanalyzer" / "test.pfw.gz"

HOSTILE = '/data/<script>alert("x")</script>&$x^2$.bin'

TIMING: Dict[str, Any] = {
    "mode": "original",
    "speed": 1.0,
    "elapsed_s": 2.5,
    "expected_s": 2.4,
    "elapsed_error_s": 0.1,
    "drift_s": 0.001,
    "lateness": {
        "replayer": {
            "count": 10,
            "p50_s": 0.00005,
            "p95_s": 0.0002,
            "p99_s": 0.0009,
            "max_s": 0.002,
            "histogram": [[0.0001, 6], [0.001, 3], [0.01, 1]],
        },
        "busy": {
            "count": 4,
            "p50_s": 0.001,
            "p95_s": 0.004,
            "p99_s": 0.004,
            "max_s": 0.004,
            "histogram": [[0.001, 2], [0.01, 2]],
        },
    },
}

ORDER: Dict[str, Any] = {
    "mode": "stream",
    "waits": 0,
    "violations": {"read before the write it follows": 3, "open after its first use": 1},
    "examples": [
        {"file": "rank-1.pfw", "path": "/data/<i>shared</i>", "call": "read", "ts": 1200, "reason": "read before the write it follows"},
    ],
}


def _hostile_trace(folder: Path) -> Path:
    metadata = [file_hash(HOSTILE, "aa")]
    events = [
        call("open64", 1_000, fhash="aa", flags=66, mode=420),
        call("pwrite64", 1_100, fhash="aa", count=4096, offset=0, ret=4096),
        call("pread64", 2_500, fhash="aa", count=4096, offset=0, ret=4096),
        # Traced as short, so the replay's full read is a mismatch.
        call("pread64", 2_600, fhash="aa", count=4096, offset=0, ret=100),
        call("close", 3_000, fhash="aa", ret=0),
    ]
    return write_trace(folder / "hostile.pfw", events, metadata)


def _summary_data(tmp_path: Path) -> Dict[str, Any]:
    trace = _hostile_trace(tmp_path)
    summary = Replayer([str(trace)], ReplayOptions(root=str(tmp_path / "root"), series=True)).run()
    return summary.to_dict()


def _section(page: str, title: str) -> str:
    """Return the HTML between the heading ``title`` and the next heading."""
    start = page.index(f"<h2>{title}</h2>")
    end = page.find("<h2>", start + 1)
    return page[start : end if end >= 0 else len(page)]


# -- elapsed time -------------------------------------------------------------------


def test_elapsed_original_timing() -> None:
    data = {"dry_run": False, "trace_span_us": 2_000_000, "wall_seconds": 2.25}

    elapsed = elapsed_section(data, "original")

    assert elapsed is not None
    assert elapsed["expected_s"] == pytest.approx(2.0)
    assert elapsed["elapsed_error_s"] == pytest.approx(0.25)


def test_elapsed_speed_factor() -> None:
    data = {"dry_run": False, "trace_span_us": 2_000_000, "wall_seconds": 0.5}

    elapsed = elapsed_section(data, 4.0)

    assert elapsed is not None
    assert elapsed["expected_s"] == pytest.approx(0.5)
    assert elapsed["elapsed_error_s"] == pytest.approx(0.0)


def test_elapsed_asap_has_no_error() -> None:
    data = {"dry_run": False, "trace_span_us": 2_000_000, "wall_seconds": 0.1}

    elapsed = elapsed_section(data, "asap")

    assert elapsed is not None
    assert elapsed["expected_s"] == pytest.approx(2.0)
    assert elapsed["elapsed_error_s"] is None


def test_elapsed_prefers_timing_section() -> None:
    data = {"dry_run": False, "trace_span_us": 1, "wall_seconds": 9.0, "timing": TIMING}

    elapsed = elapsed_section(data, "asap")

    assert elapsed is not None
    assert elapsed["elapsed_error_s"] == 0.1
    assert elapsed["source"] == "timing"


def test_elapsed_dry_run_is_absent() -> None:
    assert elapsed_section({"dry_run": True}, "asap") is None


# -- sections -------------------------------------------------------------------------


@needs_matplotlib
def test_report_without_timing_and_order(tmp_path: Path) -> None:
    data = _summary_data(tmp_path)
    # Older summaries, and replays loaded from their JSON, may lack both.
    data.pop("timing", None)
    data.pop("order", None)
    folder = tmp_path / "report"

    images = write_report(data, str(folder), timing="asap")

    page = (folder / "report.html").read_text()
    assert NOT_MEASURED in _section(page, "Lateness")
    assert NOT_MEASURED in _section(page, "Order violations")
    assert images == [
        "elapsed.png", "duration_ratio.png", "bandwidth.png", "in_flight.png",
        "files.png", "parity.png", "lines.png",
    ]
    for name in images:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{name}"' in page


@needs_matplotlib
def test_report_with_timing_and_order(tmp_path: Path) -> None:
    data = _summary_data(tmp_path)
    data["timing"] = TIMING
    data["order"] = ORDER
    folder = tmp_path / "report"

    images = write_report(data, str(folder), timing="original")

    page = (folder / "report.html").read_text()
    lateness = _section(page, "Lateness")
    assert NOT_MEASURED not in lateness
    assert 'src="lateness.png"' in lateness
    assert "<td>replayer</td>" in lateness
    assert "<td>busy</td>" in lateness
    order = _section(page, "Order violations")
    assert 'src="order.png"' in order
    assert "<td>read before the write it follows</td><td class=\"n\">3</td>" in order
    assert "/data/&lt;i&gt;shared&lt;/i&gt;" in order
    assert "lateness.png" in images
    assert "order.png" in images
    elapsed = _section(page, "Elapsed time")
    assert "0.1" in elapsed
    assert "divided by the speed" not in _section(page, "Read and write bandwidth")
    report = json.loads((folder / "report.json").read_text())
    assert report["timing"] == TIMING
    assert report["order"] == ORDER
    assert report["report"]["elapsed"]["source"] == "timing"


@needs_matplotlib
def test_report_order_without_violations(tmp_path: Path) -> None:
    data = _summary_data(tmp_path)
    data["order"] = {"mode": "resource", "waits": 12, "violations": {}, "examples": []}

    images = write_report(data, str(tmp_path / "report"))

    page = (tmp_path / "report" / "report.html").read_text()
    order = _section(page, "Order violations")
    assert "No order violations." in order
    assert NOT_MEASURED not in order
    assert "order.png" not in images


@needs_matplotlib
def test_report_escapes_trace_strings(tmp_path: Path) -> None:
    data = _summary_data(tmp_path)
    folder = tmp_path / "report"

    write_report(data, str(folder))

    page = (folder / "report.html").read_text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;$x^2$.bin" in page
    # The mismatch of the short traced read is listed with its path.
    assert "mismatch-bytes" in _section(page, "Outcome parity")
    # One script, the page's own, and no resource from elsewhere.
    assert page.count("<script>") == 1
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)


@needs_matplotlib
def test_report_scales_trace_time_by_speed(tmp_path: Path) -> None:
    data = _summary_data(tmp_path)

    write_report(data, str(tmp_path / "report"), timing=4.0)

    page = (tmp_path / "report" / "report.html").read_text()
    assert "Trace time is divided by the speed, 4, " in _section(page, "Read and write bandwidth")


@needs_matplotlib
def test_report_json_holds_summary_and_series(tmp_path: Path) -> None:
    data = _summary_data(tmp_path)

    write_report(data, str(tmp_path / "report"), timing="asap")

    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["events_replayed"] == data["events_replayed"]
    assert report["series"]["files"][0]["trace_written_bytes"] == 4096
    assert report["lines"] == data["lines"]
    assert report["report"]["elapsed"]["mode"] == "asap"


@needs_matplotlib
def test_report_dry_run(tmp_path: Path) -> None:
    trace = _hostile_trace(tmp_path)
    out, err = io.StringIO(), io.StringIO()

    code = main(["replay", str(trace), "--dry-run", "--report", str(tmp_path / "report"), "-q"], stdout=out, stderr=err)

    assert code == 0, err.getvalue()
    page = (tmp_path / "report" / "report.html").read_text()
    assert 'src="lines.png"' in page
    for title in ("Elapsed time", "Per-call duration ratio (replay / trace)", "Read and write bandwidth", "Outcome parity"):
        assert NOT_MEASURED in _section(page, title)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["series"] is None
    assert report["report"]["images"] == ["lines.png"]


# -- the command ----------------------------------------------------------------------


@needs_matplotlib
def test_cli_report_and_emit_trace(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    report = tmp_path / "report"
    emitted = tmp_path / "replay.pfw.gz"

    code = main(
        ["replay", str(SMALL), "--root", str(tmp_path / "root"), "--report", str(report),
         "--emit-trace", str(emitted), "--processes", "1", "-q"],
        stdout=out,
        stderr=err,
    )

    assert code == 0, err.getvalue()
    data = json.loads((report / "report.json").read_text())
    assert data["events_replayed"] == 1012
    assert sum(data["series"]["replay"]["read_bytes"]) == 131072000
    assert data["series"]["files"][0]["trace_read_bytes"] == 131072000
    assert (report / "bandwidth.png").exists()
    assert emitted.read_bytes()[:2] == b"\x1f\x8b"


def test_cli_report_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out, err = io.StringIO(), io.StringIO()
    root = tmp_path / "root"

    code = main(["replay", str(SMALL), "--root", str(root), "--report", str(tmp_path / "r")], stdout=out, stderr=err)

    assert code == 1
    assert err.getvalue().startswith("greenpipe replay: The option --report needs matplotlib, which cannot be imported")
    assert "Install it with: pip install 'greenpipe[report]'." in err.getvalue()
    assert err.getvalue().count("\n") == 1
    assert not root.exists()
    assert not (tmp_path / "r").exists()


# -- in a browser ---------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@needs_matplotlib
@pytest.mark.timeout(120)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    data = _summary_data(tmp_path)
    data["timing"] = TIMING
    data["order"] = ORDER
    folder = tmp_path / "report"
    images = write_report(data, str(folder), timing="original")
    assert CHROMIUM is not None

    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000", "--dump-dom", (folder / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    tags = re.findall(r"<img [^>]*>", dom)
    sources = [re.search(r'src="([^"]+)"', tag).group(1) for tag in tags]  # type: ignore[union-attr]
    assert sources == images
    assert len(images) == 9
    for tag in tags:
        assert 'data-loaded="yes"' in tag, tag
    assert f'data-images="{len(images)}/{len(images)}"' in dom
