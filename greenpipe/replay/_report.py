"""The replay report: ``report.json``, ``report.html`` and PNG plots.

:func:`write_report` takes the summary as JSON values
(``ReplaySummary.to_dict()``, to which other parts of the replay may add
``timing`` and ``order`` sections) and writes into one folder:

- ``report.json``: those values plus a ``report`` section with the
  elapsed-time comparison;
- one PNG per plot, made with matplotlib (the ``report`` extra);
- ``report.html``, which shows the plots by relative path and needs no
  server, script or resource from elsewhere. Every string that comes
  from a trace (paths, call names, messages) is HTML-escaped, and plot
  labels are made printable and free of matplotlib's math markup.

A section whose data the run did not measure states that in the page
instead of showing a plot. A dry run has no replay series, and lateness
is measured only by ``--timing original`` and ``think``.
"""

from __future__ import annotations

import html
import json
import math
import os
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

#: Install command named when matplotlib is missing.
INSTALL_HINT = "pip install 'greenpipe[report]'"
#: Text of a section whose data the run did not collect.
NOT_MEASURED = "Not measured in this run."
#: Maximum length of a plot label; longer labels keep their end.
MAX_LABEL = 40
#: Bars shown per bar chart; the rest are left out and counted.
MAX_BARS = 20
_DPI = 100


class ReportUnavailableError(ImportError):
    """Raised when matplotlib, which draws the plots, cannot be imported.

    Attributes:
        cause: the message of the import error.
    """

    def __init__(self, cause: str) -> None:
        super().__init__(f"the report needs matplotlib ({cause}); install it with {INSTALL_HINT}")
        self.cause = cause


def require_matplotlib() -> None:
    """Check that the plots can be drawn.

    Raises:
        ReportUnavailableError: matplotlib cannot be imported; the message
            names the package to install.
    """
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as exc:
        raise ReportUnavailableError(str(exc)) from None


# -- values -------------------------------------------------------------------


def _speed_of(timing: Any) -> Optional[float]:
    if timing == "original":
        return 1.0
    if isinstance(timing, (int, float)) and not isinstance(timing, bool):
        return float(timing)
    return None


def elapsed_section(data: Mapping[str, Any], timing: Any = None) -> Optional[Dict[str, Any]]:
    """Return the elapsed-time comparison of a summary, or ``None`` for a dry run.

    The ``timing`` section, when present, gives the values. Otherwise the
    replay wall time is compared with the traced span divided by the
    speed of ``timing`` (``"original"`` or a factor). With ``"asap"``
    there is no target, so ``expected_s`` is the traced span and
    ``elapsed_error_s`` is ``None``.
    """
    if data.get("dry_run"):
        return None
    section = data.get("timing")
    if isinstance(section, Mapping) and "elapsed_s" in section and section.get("mode") != "asap":
        return {
            "mode": section.get("mode"),
            "speed": section.get("speed"),
            "elapsed_s": section.get("elapsed_s"),
            "expected_s": section.get("expected_s"),
            "elapsed_error_s": section.get("elapsed_error_s"),
            "source": "timing",
        }
    span = float(data.get("trace_span_us", 0)) / 1e6
    elapsed = float(data.get("wall_seconds", 0.0))
    speed = _speed_of(timing)
    expected = span / speed if speed else span
    if speed is None:
        mode = "asap"
    elif timing == "original":
        mode = "original"
    else:
        mode = "speed"
    return {
        "mode": mode,
        "speed": speed,
        "elapsed_s": elapsed,
        "expected_s": expected,
        "elapsed_error_s": None if speed is None else elapsed - expected,
        "source": "summary",
    }


def _label(text: Any) -> str:
    """Return ``text`` as a short, printable plot label without math markup."""
    value = str(text)
    if not value.isprintable():
        value = "".join(
            char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
            for char in value
        )
    if len(value) > MAX_LABEL:
        value = "..." + value[-(MAX_LABEL - 3):]
    # matplotlib reads text between two $ as math.
    return value.replace("$", r"\$")


def _short_path(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or path


# -- plots --------------------------------------------------------------------


class _Plotter:
    """Draws the plots of one report into a folder."""

    def __init__(self, directory: str) -> None:
        from matplotlib.figure import Figure

        self._figure = Figure
        self.directory = directory

    def save(self, name: str, draw: Callable[[Any], None], rows: int = 1, height: float = 3.6) -> str:
        figure = self._figure(figsize=(9, height * rows), dpi=_DPI, layout="constrained")
        axes = figure.subplots(rows, 1, squeeze=False)[:, 0]
        # Labels from traces may hold glyphs the font lacks; a missing glyph
        # must not stop the report (pytest turns warnings into errors).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draw(axes if rows > 1 else axes[0])
            figure.savefig(os.path.join(self.directory, name), format="png")
        return name


def _bars(axis: Any, labels: Sequence[str], values: Sequence[float], color: str = "C0") -> None:
    positions = list(range(len(labels)))
    axis.bar(positions, values, color=color)
    axis.set_xticks(positions)
    axis.set_xticklabels([_label(x) for x in labels], rotation=30, ha="right", fontsize=8)


def _plot_elapsed(plotter: _Plotter, elapsed: Mapping[str, Any]) -> str:
    def draw(axis: Any) -> None:
        names = ["expected" if elapsed.get("elapsed_error_s") is not None else "traced span", "replay"]
        values = [float(elapsed.get("expected_s") or 0.0), float(elapsed.get("elapsed_s") or 0.0)]
        axis.barh(names, values, color=["C7", "C0"])
        axis.set_xlabel("seconds")
        error = elapsed.get("elapsed_error_s")
        title = "Elapsed time"
        if error is not None:
            title += f" (error {error:+.3f} s)"
        axis.set_title(title)

    return plotter.save("elapsed.png", draw, height=2.4)


def _plot_ratios(plotter: _Plotter, ratios: Mapping[str, Mapping[str, Any]]) -> Optional[str]:
    names = [name for name, row in ratios.items() if row.get("count")]
    names = sorted(names, key=lambda name: -ratios[name]["count"])[:MAX_BARS]
    if not names:
        return None

    def draw(axis: Any) -> None:
        width = 0.27
        positions = list(range(len(names)))
        for offset, key, color in ((-width, "p50", "C0"), (0.0, "p95", "C1"), (width, "p99", "C3")):
            axis.bar([p + offset for p in positions], [ratios[n][key] for n in names], width, label=key, color=color)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_xticks(positions)
        axis.set_xticklabels([_label(n) for n in names], rotation=30, ha="right", fontsize=8)
        axis.set_ylabel("replay / traced duration")
        axis.set_title("Per-call duration ratio")
        axis.legend(fontsize=8)

    return plotter.save("duration_ratio.png", draw)


def _times(section: Mapping[str, Any], speed: float = 1.0) -> List[float]:
    width = float(section["bucket_s"]) / speed
    return [index * width for index in range(len(section["read_bytes"]))]


def _trace_name(speed: float) -> str:
    return "trace" if speed == 1.0 else f"trace, time / {speed:g}"


def _plot_bandwidth(plotter: _Plotter, series: Mapping[str, Any], speed: float) -> str:
    """Plot bytes per second; trace time is divided by ``speed`` to match the replay's."""
    trace, replay = series["trace"], series["replay"]

    def draw(axes: Any) -> None:
        for axis, key, title in ((axes[0], "read_bytes", "Read"), (axes[1], "written_bytes", "Write")):
            sections = ((trace, _trace_name(speed), "C7", speed), (replay, "replay", "C0", 1.0))
            for section, name, color, factor in sections:
                width = float(section["bucket_s"]) / factor
                rates = [value / width / 2**20 for value in section[key]]
                axis.step(_times(section, factor), rates, where="post", label=name, color=color)
            axis.set_ylabel("MiB/s")
            axis.set_title(f"{title} bandwidth")
            axis.legend(fontsize=8)
        axes[1].set_xlabel("seconds since the start (trace: each file's first call; replay: its start)")

    return plotter.save("bandwidth.png", draw, rows=2, height=3.0)


def _plot_in_flight(plotter: _Plotter, series: Mapping[str, Any], speed: float) -> str:
    def draw(axis: Any) -> None:
        lines = (("trace", _trace_name(speed), "C7", speed), ("replay", "replay", "C0", 1.0))
        for key, name, color, factor in lines:
            section = series[key]
            axis.step(_times(section, factor), section["in_flight"], where="post", label=name, color=color)
        axis.set_xlabel("seconds since the start")
        axis.set_ylabel("operations in flight")
        axis.set_title("Operations in flight (mean per bucket)")
        axis.legend(fontsize=8)

    return plotter.save("in_flight.png", draw)


def _plot_files(plotter: _Plotter, rows: Sequence[Mapping[str, Any]]) -> Optional[str]:
    rows = list(rows)[:MAX_BARS]
    if not rows:
        return None

    def draw(axis: Any) -> None:
        width = 0.2
        positions = list(range(len(rows)))
        keys = (
            ("trace_read_bytes", "trace read", "C7"),
            ("replay_read_bytes", "replay read", "C0"),
            ("trace_written_bytes", "trace written", "C8"),
            ("replay_written_bytes", "replay written", "C1"),
        )
        for number, (key, name, color) in enumerate(keys):
            offset = (number - 1.5) * width
            axis.bar([p + offset for p in positions], [row[key] / 2**20 for row in rows], width, label=name, color=color)
        axis.set_xticks(positions)
        axis.set_xticklabels([_label(_short_path(row["file"])) for row in rows], rotation=30, ha="right", fontsize=8)
        axis.set_ylabel("MiB")
        axis.set_title("Bytes per trace file, trace and replay")
        axis.legend(fontsize=8)

    return plotter.save("files.png", draw)


def _plot_lateness(plotter: _Plotter, lateness: Mapping[str, Any]) -> Optional[str]:
    kinds = [kind for kind in ("replayer", "busy") if isinstance(lateness.get(kind), Mapping)]
    if not kinds:
        return None

    def draw(axes: Any) -> None:
        axes_list = list(axes) if len(kinds) > 1 else [axes]
        for axis, kind in zip(axes_list, kinds):
            histogram = lateness[kind].get("histogram") or []
            bounds = [float(bound) * 1e6 for bound, _ in histogram]
            counts = [count for _, count in histogram]
            axis.bar(range(len(bounds)), counts, color="C0")
            axis.set_xticks(range(len(bounds)))
            axis.set_xticklabels([f"<={bound:g}" for bound in bounds], rotation=30, ha="right", fontsize=7)
            axis.set_xlabel("lateness (microseconds)")
            axis.set_ylabel("events")
            title = "late because the replayer was late" if kind == "replayer" else "late because the stream was busy"
            axis.set_title(f"Lateness: {title}")

    return plotter.save("lateness.png", draw, rows=len(kinds), height=3.0)


def _plot_counts(plotter: _Plotter, name: str, title: str, counts: Mapping[str, Any], color: str) -> Optional[str]:
    items = [(key, value) for key, value in counts.items() if value]
    items = sorted(items, key=lambda item: -item[1])[:MAX_BARS]
    if not items:
        return None

    def draw(axis: Any) -> None:
        _bars(axis, [key for key, _ in items], [value for _, value in items], color)
        axis.set_ylabel("count")
        axis.set_title(title)

    return plotter.save(name, draw)


# -- the page -------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
p.absent { color: #a40; font-style: italic; }
code { word-break: break-all; }
"""

# Marks each image as loaded or broken once the page has loaded, so a
# headless browser's DOM dump shows whether every plot could be read.
_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    var ok = images[i].complete && images[i].naturalWidth > 0;
    images[i].setAttribute("data-loaded", ok ? "yes" : "no");
    if (ok) { loaded++; }
  }
  document.body.setAttribute("data-images", loaded + "/" + images.length);
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return _e(value)
        return f"{value:,.6g}"
    return _e(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f'<td class="n">{_number(value)}</td>' if numeric else f"<td>{_e(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _image(name: Optional[str], alt: str) -> str:
    if name is None:
        return f'<p class="absent">{_e(NOT_MEASURED)}</p>'
    return f'<p><img src="{_e(name)}" alt="{_e(alt)}"></p>'


def _absent(reason: str = "") -> str:
    text = NOT_MEASURED + (f" {reason}" if reason else "")
    return f'<p class="absent">{_e(text)}</p>'


def _overview(data: Mapping[str, Any]) -> str:
    rows: List[Tuple[str, Any]] = [
        ("trace files", len(data.get("files", ()))),
        ("root", data.get("root") or "(dry run)"),
        ("interrupted", data.get("interrupted")),
        ("events seen", data.get("events_seen", 0)),
        ("calls replayed", data.get("events_replayed", 0)),
        ("calls failed", data.get("events_failed", 0)),
        ("calls skipped", data.get("events_skipped", 0)),
        ("bytes read", data.get("bytes_read", 0)),
        ("bytes written", data.get("bytes_written", 0)),
        ("traced span (s)", float(data.get("trace_span_us", 0)) / 1e6),
        ("replay wall time (s)", float(data.get("wall_seconds", 0.0))),
        ("exit code", data.get("exit_code")),
    ]
    return _table(["", "value"], rows)


def _elapsed_html(plotter: _Plotter, elapsed: Optional[Mapping[str, Any]]) -> Tuple[str, List[str]]:
    if elapsed is None:
        return _absent("A dry run executes no call."), []
    image = _plot_elapsed(plotter, elapsed)
    rows = [[key, elapsed.get(key)] for key in ("mode", "speed", "elapsed_s", "expected_s", "elapsed_error_s")]
    note = ""
    if elapsed.get("elapsed_error_s") is None:
        note = "<p>With --timing asap the replay has no target time; the traced span is shown for scale.</p>"
    return _image(image, "elapsed time") + note + _table(["", "value"], rows), [image]


def _series_html(
    plotter: _Plotter, series: Optional[Mapping[str, Any]], speed: float
) -> Dict[str, Tuple[str, List[str]]]:
    if not series:
        reason = "Run a replay (not a dry run) with --report to collect it."
        return {key: (_absent(reason), []) for key in ("ratio", "bandwidth", "in_flight", "files")}
    sections: Dict[str, Tuple[str, List[str]]] = {}

    ratios = series.get("duration_ratio", {})
    image = _plot_ratios(plotter, ratios)
    rows = [
        [name, row["count"], row["zero_traced_dur"], row["p50"], row["p95"], row["p99"], row["max"]]
        for name, row in ratios.items()
    ]
    table = _table(["call", "calls", "traced dur 0 (no ratio)", "p50", "p95", "p99", "max"], rows)
    sections["ratio"] = (_image(image, "duration ratio per call") + table, [image] if image else [])

    image = _plot_bandwidth(plotter, series, speed)
    text = (
        f"<p>Buckets of {_number(series['trace']['bucket_s'])} s of trace time and "
        f"{_number(series['replay']['bucket_s'])} s of replay time. Trace time counts from "
        "each trace file's first replayed call, as the replay starts every file together."
    )
    if speed != 1.0:
        text += f" Trace time is divided by the speed, {_number(speed)}, to match the replay's."
    text += "</p>"
    sections["bandwidth"] = (_image(image, "read and write bandwidth") + text, [image])

    image = _plot_in_flight(plotter, series, speed)
    sections["in_flight"] = (_image(image, "operations in flight"), [image])

    files = series.get("files", [])
    image = _plot_files(plotter, files)
    keys = ("trace_read_bytes", "replay_read_bytes", "trace_written_bytes", "replay_written_bytes")
    headers = ["trace read", "replay read", "trace written", "replay written"]
    file_table = _table(["trace file"] + headers, [[row["file"]] + [row[k] for k in keys] for row in files])
    paths = series.get("paths", [])
    path_table = _table(["mapped path"] + headers, [[row["path"]] + [row[k] for k in keys] for row in paths])
    listed = (
        f"<p>The {len(paths)} mapped paths with the most bytes, of "
        f"{_number(series.get('path_count', 0))}:</p>"
    )
    sections["files"] = (_image(image, "bytes per trace file") + file_table + listed + path_table, [image] if image else [])
    return sections


def _lateness_html(plotter: _Plotter, timing: Any) -> Tuple[str, List[str]]:
    lateness = timing.get("lateness") if isinstance(timing, Mapping) else None
    paced = isinstance(timing, Mapping) and timing.get("mode") not in (None, "asap")
    if not isinstance(lateness, Mapping) or not lateness or not paced:
        return _absent("It is measured by --timing original and think."), []
    image = _plot_lateness(plotter, lateness)
    rows = []
    for kind, histogram in lateness.items():
        if isinstance(histogram, Mapping):
            rows.append([kind] + [histogram.get(k) for k in ("count", "p50_s", "p95_s", "p99_s", "max_s")])
    table = _table(["kind", "events", "p50 (s)", "p95 (s)", "p99 (s)", "max (s)"], rows)
    return _image(image, "lateness histograms") + table, [image] if image else []


def _order_html(plotter: _Plotter, order: Any) -> Tuple[str, List[str]]:
    if not isinstance(order, Mapping):
        return _absent("It is measured by the ordering modes."), []
    violations = order.get("violations") or {}
    image = _plot_counts(plotter, "order.png", "Order violations by reason", violations, "C3")
    parts = [
        _table(["", "value"], [["mode", order.get("mode")], ["waits", order.get("waits")]]),
    ]
    if image is None:
        parts.insert(0, "<p>No order violations.</p>")
    else:
        parts.insert(0, _image(image, "order violations"))
    parts.append(_table(["reason", "count"], [[k, v] for k, v in violations.items()]))
    examples = order.get("examples") or []
    if examples:
        parts.append(
            _table(
                ["file", "path", "call", "ts", "reason"],
                [[row.get(k) for k in ("file", "path", "call", "ts", "reason")] for row in examples],
            )
        )
    return "".join(parts), [image] if image else []


def _parity_html(plotter: _Plotter, data: Mapping[str, Any]) -> Tuple[str, List[str]]:
    parity = data.get("parity") or {}
    if data.get("dry_run") or not any(parity.values()):
        return _absent("A dry run executes no call." if data.get("dry_run") else ""), []
    image = _plot_counts(plotter, "parity.png", "Outcome parity of the executed calls", parity, "C2")
    parts = [_image(image, "outcome parity"), _table(["class", "calls"], list(parity.items()))]
    causes = data.get("mismatch_causes") or []
    if causes:
        parts.append(
            f"<p>Mismatch root causes: {_number(data.get('mismatch_cause_count', len(causes)))} "
            f"(first {len(causes)} listed).</p>"
        )
        parts.append(
            _table(
                ["mismatches", "call", "path", "kind", "expected", "got"],
                [[c.get(k) for k in ("mismatches", "call", "path", "kind", "expected", "got")] for c in causes],
            )
        )
    return "".join(parts), [image] if image else []


def _lines_html(plotter: _Plotter, data: Mapping[str, Any]) -> Tuple[str, List[str]]:
    lines = dict(data.get("lines") or {})
    total = lines.pop("total", 0)
    if not total:
        return _absent(), []
    image = _plot_counts(plotter, "lines.png", f"Line buckets ({total:,} lines)", lines, "C4")
    parts = [_image(image, "line buckets"), _table(["bucket", "lines"], [[k, v] for k, v in lines.items() if v])]
    for bucket, reasons in (data.get("line_details") or {}).items():
        if reasons:
            parts.append(_table([f"{bucket}: reason or call", "lines"], [[k, v] for k, v in reasons.items()]))
    return "".join(parts), [image] if image else []


def write_report(data: Mapping[str, Any], directory: str, *, timing: Any = None) -> List[str]:
    """Write ``report.json``, ``report.html`` and the plots into ``directory``.

    Args:
        data: the summary as JSON values (``ReplaySummary.to_dict()``),
            optionally with ``timing`` and ``order`` sections.
        directory: the output folder; made if missing. Files of an
            earlier report there are overwritten.
        timing: the replay's ``--timing`` (``"asap"``, ``"original"`` or
            a factor), for the elapsed-time comparison when ``data`` has
            no ``timing`` section.

    Returns:
        The names of the PNG files written, in page order.

    Raises:
        ReportUnavailableError: matplotlib is missing.
        OSError: the folder or a file cannot be written.
    """
    require_matplotlib()
    os.makedirs(directory, exist_ok=True)
    plotter = _Plotter(directory)
    elapsed = elapsed_section(data, timing)

    sections: List[Tuple[str, Tuple[str, List[str]]]] = []
    sections.append(("Elapsed time", _elapsed_html(plotter, elapsed)))
    speed = elapsed.get("speed") if elapsed is not None else None
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not speed > 0:
        speed = 1.0
    series_parts = _series_html(plotter, data.get("series"), float(speed))
    sections.append(("Per-call duration ratio (replay / trace)", series_parts["ratio"]))
    sections.append(("Read and write bandwidth", series_parts["bandwidth"]))
    sections.append(("Operations in flight", series_parts["in_flight"]))
    sections.append(("Bytes per trace file and mapped path", series_parts["files"]))
    sections.append(("Lateness", _lateness_html(plotter, data.get("timing"))))
    sections.append(("Order violations", _order_html(plotter, data.get("order"))))
    sections.append(("Outcome parity", _parity_html(plotter, data)))
    sections.append(("Line buckets", _lines_html(plotter, data)))

    images = [name for _, (_, names) in sections for name in names]
    body = [f"<h1>greenpipe replay report</h1>{_overview(data)}"]
    for title, (content, _) in sections:
        body.append(f"<h2>{_e(title)}</h2>{content}")
    problems = list(data.get("input_problems") or []) + list(data.get("worker_failures") or [])
    if problems:
        body.append("<h2>Problems</h2><ul>" + "".join(f"<li>{_e(p)}</li>" for p in problems) + "</ul>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>greenpipe replay report</title>"
        f"<style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )
    with open(os.path.join(directory, "report.html"), "w", encoding="utf-8") as stream:
        stream.write(page)

    report = dict(data)
    report["report"] = {"elapsed": elapsed, "images": images}
    with open(os.path.join(directory, "report.json"), "w", encoding="utf-8") as stream:
        json.dump(report, stream, indent=2, sort_keys=True, default=str)
        stream.write("\n")
    return images
