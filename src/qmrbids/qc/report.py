"""The HTML QC report: one self-contained file (PNG images embedded as base64), summary first.

Images are made with matplotlib's Agg backend: slice montages with ``imsave`` (no figure, fast),
histograms and per-site charts with one reused figure each.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mimage  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from qmrbids import __version__  # noqa: E402
from qmrbids.qc.metrics import RAW_UNITS, Record, format_value, is_magnitude, metric_tables  # noqa: E402

MAX_MONTAGE_SLICES = 8
RAW_THUMBNAILS = 16
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;background:#fafbfc}
header{background:#1d3557;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85;font-size:13px}main{padding:16px 24px;max-width:1400px}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:12px 18px;margin:0 0 16px}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:4px 0 8px}th,td{border:1px solid #dde2e8;padding:3px 7px;text-align:left}
th{background:#eef1f5}.fail{background:#f8d7da}.warn{background:#fff3cd}.pass{background:#d1f2dc}
.badge{display:inline-block;padding:2px 9px;border-radius:10px;font-weight:600;margin-right:6px}
.counts span{margin-right:14px}#summary.clean{border-left:6px solid #2a9d5c}#summary.attention{border-left:6px solid #c0392b}
img{max-width:100%;image-rendering:pixelated}.maps{display:flex;flex-wrap:wrap;gap:12px}.maps figure{margin:0}
figcaption{font-size:12px;color:#555}nav a{margin-right:10px;font-size:13px}
"""


def _png(array_rgba: np.ndarray) -> str:
    buffer = io.BytesIO()
    mimage.imsave(buffer, array_rgba, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _slices(volume: np.ndarray) -> list[np.ndarray]:
    while volume.ndim > 3:
        volume = volume[..., 0]
    if volume.ndim == 2:
        volume = volume[..., None]
    picks = np.unique(np.linspace(0, volume.shape[2] - 1, min(volume.shape[2], MAX_MONTAGE_SLICES)).round().astype(int))
    return [np.rot90(volume[:, :, k]) for k in picks]  # radiological-style display: rows = anterior..posterior


def montage(tiles: list[np.ndarray], low: float | None = None, high: float | None = None, cmap: str = "gray") -> str:
    """Tiles side by side (each scaled to ``low``..``high`` or its own 1st..99th percentile) as a PNG data URI."""
    height = max(t.shape[0] for t in tiles)
    row = []
    for tile in tiles:
        lo, hi = (low, high) if low is not None else np.percentile(tile, [1, 99])
        scaled = np.clip((tile - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(tile, dtype=float)
        padded = np.zeros((height, tile.shape[1]))
        padded[: tile.shape[0]] = np.nan_to_num(scaled)
        row.extend([padded, np.ones((height, 1))])
    image = np.hstack(row[:-1])
    zoom = max(1, round(128 / height))
    return _png(matplotlib.colormaps[cmap](np.kron(image, np.ones((zoom, zoom)))))


class _Histogram:
    """One small figure reused for every map histogram (creating figures dominates the cost)."""

    def __init__(self) -> None:
        self.figure = Figure(figsize=(3.2, 1.9))
        self.figure.subplots_adjust(left=0.14, right=0.97, top=0.95, bottom=0.24)  # fixed: tight_layout is slow
        self.axes = self.figure.add_subplot()

    def __call__(self, values: np.ndarray, low: float, high: float, unit: str) -> str:
        ax = self.axes
        ax.clear()
        counts, edges = np.histogram(values, bins=60)
        ax.stairs(counts, edges, fill=True, color="#457b9d")  # one artist, not 60 bars
        ax.axvline(low, color="#c0392b", lw=1)
        ax.axvline(high, color="#c0392b", lw=1)
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        return _figure_png(self.figure)


def _e(text) -> str:
    return html.escape(str(text))


def _table(headers: list[str], rows: list[list], status_column: int | None = None, table_id: str = "") -> str:
    out = [f'<table{f" id={chr(34)}{table_id}{chr(34)}" if table_id else ""}><tr>'
           + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"]
    for row in rows:
        cls = f' class="{_e(row[status_column])}"' if status_column is not None else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    return "".join(out) + "</table>"


def _session_id(subject: str, session: str) -> str:
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def _summary(result) -> str:
    counts = result.counts()
    attention = result.attention()
    failing = attention["findings"]
    metrics = attention["metrics"]
    clean = not failing and not metrics and not attention["problems"]
    parts = [f'<section id="summary" class="{"clean" if clean else "attention"}"><h2>Summary: '
             + ("nothing needs attention" if clean else "what needs attention") + "</h2>"]
    parts.append('<p class="counts">' + "".join(f"<span><b>{v}</b> {_e(k.replace('_', ' '))}</span>"
                                                 for k, v in counts.items()) + "</p>")
    if result.protocol is None:
        parts.append("<p>No protocol was given: protocol compliance was not checked and raw-image metrics "
                     "have no thresholds (run <code>qmrbids protocol init</code> to draft one).</p>")
    if attention["problems"]:
        parts.append("<h3>Files that could not be read</h3><ul>"
                     + "".join(f"<li>{_e(p)}</li>" for p in attention["problems"]) + "</ul>")
    if failing:
        order = {"fail": 0, "warn": 1}
        failing = sorted(failing, key=lambda f: (order.get(f.status, 2), f.site, f.subject, f.session, f.series))
        parts.append("<h3>Protocol compliance</h3>" + _table(
            ["status", "site", "subject", "session", "series", "kind", "parameter", "expected", "found"],
            [[f.status, f.site, f.subject, f.session or "-", f.series, f.kind, f.parameter, f.expected, f.found]
             for f in failing], status_column=0, table_id="attention-compliance"))
    if metrics:
        metrics = sorted(metrics, key=lambda r: (r.status != "fail", r.site, r.subject, r.session, r.path))
        parts.append("<h3>Image quality</h3>" + _table(
            ["status", "site", "subject", "session", "image", "metric", "value", "unit", "threshold"],
            [[r.status, r.site, r.subject, r.session or "-", r.path, r.name, format_value(r.value), r.unit, r.threshold]
             for r in metrics], status_column=0, table_id="attention-metrics"))
    return "".join(parts) + "</section>"


def _management(result) -> str:
    totals = _table(["site", "sessions", "subjects", "expected", "present", "missing", "compliant sessions",
                     "sessions failing QC", "sessions with QC warnings", "sessions with maps"],
                    [[t.site, t.sessions, t.subjects, _na(t.expected), t.present, _na(t.missing),
                      _na(t.sessions_compliant), t.sessions_qc_fail, t.sessions_qc_warn, t.sessions_with_maps]
                     for t in result.totals])
    rows = []
    for r in result.rows:
        link = f'<a href="#{_session_id(r.subject, r.session)}">{_e(r.session or "-")}</a>'
        cells = [r.site, r.subject, link, _na(r.expected), r.present, _na(r.missing), r.missing_series, r.deviations,
                 r.compliance, r.qc, r.maps_fitted or "none"]
        rows.append("<tr>" + "".join(
            f'<td class="{_e(c)}">{_e(c)}</td>' if i in (8, 9) else f"<td>{c if i == 2 else _e(c)}</td>"
            for i, c in enumerate(cells)) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ["site", "subject", "session", "expected", "present", "missing",
                                              "missing series", "deviations", "compliance", "QC", "maps fitted"])
    return ('<section id="management"><h2>Management report</h2><h3>Per site</h3>' + totals
            + f'<h3>Per session</h3><table id="sessions"><tr>{head}</tr>{"".join(rows)}</table></section>')


def _na(value) -> str:
    return "n/a" if value is None else str(value)


def _site_charts(result) -> str:
    sites = [t.site for t in result.totals]
    if not sites:
        return ""
    figure = Figure(figsize=(min(4 + 0.6 * len(sites), 14), 5.2))
    grid = figure.subplots(2, 2)
    for ax, metric in zip(grid.ravel()[:3], ("snr", "ghosting_ratio", "efc"), strict=True):
        per_site = defaultdict(list)
        for record in result.records:
            if record.name == metric and record.value is not None and math.isfinite(record.value):
                per_site[record.site].append(record.value)
        ax.boxplot([per_site.get(s, [np.nan]) for s in sites], tick_labels=sites)
        ax.set_title(f"{metric} ({RAW_UNITS[metric]}) per image", fontsize=9)
        ax.tick_params(labelsize=7)
    ax = grid.ravel()[3]
    bottom = np.zeros(len(sites))
    for status, colour in (("pass", "#2a9d5c"), ("warn", "#e9c46a"), ("fail", "#c0392b"), ("n/a", "#adb5bd")):
        counts = np.array([sum(r.site == s and r.qc == status for r in result.rows) for s in sites], dtype=float)
        ax.bar(sites, counts, bottom=bottom, color=colour, label=status)
        bottom += counts
    ax.set_title("sessions by QC status", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    figure.tight_layout()
    return (f'<section id="sites"><h2>Sites</h2><img alt="per-site metrics" src="{_figure_png(figure)}"></section>')


def _metrology(result) -> str:
    """Phantom metrology (when measured): summary tables, bias per region, Bland-Altman plots."""
    report = getattr(result, "metrology", None)
    if report is None or report.accuracy.empty:
        return ""
    accuracy = report.accuracy
    rows = [[r["site"], r["session"], r["map"], r["regions"],
             *("-" if r[k] is None else f"{r[k]:.2f}" for k in ("median_abs_bias", "max_abs_bias")),
             *("-" if r[k] is None else f"{r[k]:.4g}" for k in ("slope", "intercept", "r_squared"))]
            for r in report.map_rows()]
    parts = [f'<section id="metrology"><h2>Phantom metrology (reference {_e(report.reference)})</h2>',
             _table(["site", "session", "map", "regions", "median |bias| % (sensitive range)", "max |bias| %",
                     "slope", "intercept", "R²"], rows)]
    stats_rows = [["repeatability", name, f"{v['wcv_percent']:.2f}", f"{v['rc_percent']:.2f}",
                   f"{v.get('ba_bias_percent', float('nan')):.2f}", "-"]
                  for name, v in report.summary["repeatability"].items()]
    stats_rows += [["reproducibility", name, "-", f"{v.get('rdc_percent_rms', float('nan')):.2f}", "-",
                    f"{v['icc_a1']:.4f}" if "icc_a1" in v else "-"] for name, v in report.summary["reproducibility"].items()]
    if stats_rows:
        parts.append(_table(["kind", "map @ site", "wCV %", "RC / RDC %", "Bland-Altman bias %", "ICC(A,1)"], stats_rows))
    methods = sorted(accuracy["method"].unique())
    figure = Figure(figsize=(6.5, 3.2 * len(methods)))
    axes = np.atleast_2d(figure.subplots(len(methods), 2, squeeze=False))
    for (ax_bias, ax_ba), method in zip(axes, methods, strict=True):
        data = accuracy[accuracy["method"] == method]
        for (subject, session), group in data.groupby(["subject", "session"]):
            group = group.sort_values("reference")
            label = f"{subject}" + (f" ses-{session}" if session != "n/a" else "")
            ax_bias.plot(group["reference"], group["percent_bias"], marker="o", ms=3, lw=0.8, label=label)
        inside = data[data["in_sensitive_range"]]
        if len(inside):  # shade the references outside the sensitive range; scale the axis to the inside
            low, high = inside["reference"].min(), inside["reference"].max()
            ax_bias.axvspan(data["reference"].min() * 0.8, low, color="#bbb", alpha=0.3, lw=0)
            ax_bias.axvspan(high, data["reference"].max() * 1.25, color="#bbb", alpha=0.3, lw=0)
            span = inside["percent_bias"]
            margin = max(0.5, 0.2 * float(span.max() - span.min()))
            ax_bias.set_ylim(float(span.min()) - margin, float(span.max()) + margin)
        ax_bias.axhline(0, color="#555", lw=0.6)
        ax_bias.set_xscale("log")
        ax_bias.set_xlabel("reference (s); shaded: outside the sensitive range", fontsize=8)
        ax_bias.set_ylabel("bias (%)", fontsize=8)
        ax_bias.set_title(f"{method}: bias per region", fontsize=9)
        ax_bias.tick_params(labelsize=7)
        if data.groupby(["subject", "session"]).ngroups <= 8:
            ax_bias.legend(fontsize=6)
        _bland_altman(ax_ba, data, method)
    figure.tight_layout()
    parts.append(f'<img alt="phantom metrology plots" src="{_figure_png(figure)}">')
    if report.warnings:
        parts.append("<ul>" + "".join(f"<li>{_e(w)}</li>" for w in report.warnings) + "</ul>")
    return "".join(parts) + "</section>"


def _bland_altman(ax, data, method: str) -> None:
    """Bland-Altman plot of the first two sessions of each site (percent differences), over the
    regions inside the map's sensitive range."""
    for site, group in data[data["in_sensitive_range"]].groupby("site"):
        sessions = sorted({(s, p) for s, p in zip(group["subject"], group["session"], strict=True)})[:2]
        if len(sessions) < 2:
            continue
        first, second = (group[(group["subject"] == s) & (group["session"] == p)].set_index("label")["mean"]
                         for s, p in sessions)
        both = first.index.intersection(second.index)
        mean = (first[both] + second[both]) / 2
        diff = 100 * (second[both] - first[both]) / mean
        ax.scatter(mean, diff, s=8, label=str(site))
        bias, sd = float(diff.mean()), float(diff.std(ddof=1))
        for y in (bias, bias - 1.96 * sd, bias + 1.96 * sd):
            ax.axhline(y, lw=0.6, ls="--" if y != bias else "-")
    if not ax.has_data():
        ax.text(0.5, 0.5, "needs two sessions\non one scanner", ha="center", va="center", fontsize=9,
                color="#555", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.set_xscale("log")
    ax.set_xlabel("mean of two sessions (s)", fontsize=8)
    ax.set_ylabel("difference (%)", fontsize=8)
    ax.set_title(f"{method}: Bland-Altman", fontsize=9)
    ax.tick_params(labelsize=7)
    if ax.has_data():
        ax.legend(fontsize=6)


def _map_figures(result, subject: str, session: str, histogram: _Histogram) -> str:
    ranges = metric_tables()["maps"]
    out = []
    for m in (m for m in result.inventory.maps if (m.subject, m.session) == (subject, session)):
        try:
            data = np.asarray(nib.load(str(m.path)).dataobj, dtype=float)
        except (OSError, ValueError):
            continue  # already reported as a problem by the metrics
        spec = ranges[m.kind]["ranges"]
        unit = m.units if m.units in spec else next(iter(spec))
        low, high = spec[unit]
        values = data[np.isfinite(data) & (data != 0)]
        shown_high = float(np.percentile(values, 99)) if values.size else 1.0
        tiles = _slices(np.nan_to_num(data))
        out.append(f'<figure><img alt="{_e(m.relpath)}" src="{montage(tiles, 0.0, shown_high, "viridis")}">'
                   + (f'<img alt="histogram" src="{histogram(values, low, high, unit)}">' if values.size else "")
                   + f"<figcaption>{_e(m.relpath)} ({_e(m.units or unit)}; 0 to {shown_high:.3g}; red lines: "
                   f"possible range {low:g} to {high:g})</figcaption></figure>")
    return f'<h3>Maps</h3><div class="maps">{"".join(out)}</div>' if out else "<p>No maps fitted.</p>"


def _raw_thumbnails(images) -> str:
    tiles, names = [], []
    for image in images:
        if len(tiles) == RAW_THUMBNAILS or not is_magnitude(image):
            continue
        try:
            volume = np.asanyarray(nib.load(str(image.path)).dataobj)
        except (OSError, ValueError):
            continue
        while volume.ndim > 3:
            volume = volume[..., 0]
        tiles.append(np.rot90(np.asarray(volume[:, :, volume.shape[2] // 2] if volume.ndim == 3 else volume, float)))
        names.append(image.series)
    if not tiles:
        return ""
    return (f'<h3>Raw images (middle slice)</h3><figure><img alt="raw images" src="{montage(tiles)}">'
            f"<figcaption>{_e(', '.join(names))}</figcaption></figure>")


def _sessions(result) -> str:
    histogram = _Histogram()
    findings = defaultdict(list)
    for f in result.findings:
        findings[(f.subject, f.session)].append(f)
    records = defaultdict(list)
    for r in result.records:
        records[(r.subject, r.session)].append(r)
    images = defaultdict(list)
    for image in result.inventory.images:
        images[(image.subject, image.session)].append(image)
    parts = []
    for row in result.rows:
        key = (row.subject, row.session)
        title = _session_id(*key)
        body = [f'<section id="{_e(title)}"><h2>{_e(title)} <small>site {_e(row.site)}</small> '
                f'<span class="badge {_e(row.compliance)}">compliance {_e(row.compliance)}</span>'
                f'<span class="badge {_e(row.qc)}">QC {_e(row.qc)}</span></h2>']
        if findings[key]:
            body.append("<h3>Protocol compliance</h3>" + _table(
                ["status", "series", "kind", "parameter", "expected", "found", "file"],
                [[f.status, f.series, f.kind, f.parameter, f.expected, f.found, f.path] for f in findings[key]], 0))
        body.append(_map_figures(result, *key, histogram))
        metric_rows = [[r.status, r.path, r.name, format_value(r.value), r.unit, r.threshold, r.source]
                       for r in records[key]]
        if metric_rows:
            body.append("<h3>Image quality</h3>" + _table(
                ["status", "image", "metric", "value", "unit", "threshold", "source"], metric_rows, 0))
        body.append(_raw_thumbnails(images[key]))
        parts.append("".join(body) + "</section>")
    return "".join(parts)


def html_report(result) -> str:
    """The whole report as one HTML string (no external resources, no scripts)."""
    protocol = result.protocol.name if result.protocol else "none"
    nav = "".join(f'<a href="#{_session_id(r.subject, r.session)}">{_e(_session_id(r.subject, r.session))}</a>'
                  for r in result.rows[:200])
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>qmrbids QC: {_e(result.dataset.name)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{CSS}</style></head><body>"
            f"<header><h1>qmrbids QC report</h1><p>dataset {_e(result.dataset)} · protocol {_e(protocol)} · "
            f"qmrbids {_e(__version__)}</p></header><main>"
            + _summary(result) + _management(result) + _site_charts(result) + _metrology(result)
            + f"<nav>{nav}</nav>" + _sessions(result) + "</main></body></html>\n")
