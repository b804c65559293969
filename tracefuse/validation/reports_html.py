"""Self-contained HTML view of a CI report: a table per model and inline SVG plots, no external files.

Plots: the worst max / mean absolute error of each output per cell on a log scale with the tolerance
marked, and the mean latency per runtime (the PyTorch reference included). Everything is escaped.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from pathlib import Path
from typing import Any

_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;font-size:13px}
th{background:#f3f3f3}td.l{text-align:left}
.pass{color:#1a7f37;font-weight:bold}.fail,.error,.timeout{color:#cf222e;font-weight:bold}
.plots{display:flex;gap:2em;flex-wrap:wrap}.msg{font-size:12px;color:#555;text-align:left;max-width:40em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, spec: str = ".2e") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "–"


def _worst(cell: dict[str, Any], key: str, pick=max) -> float | None:
    values = [m[key] for m in (cell.get("metrics") or {}).values() if key in m]
    return pick(values) if values else None


def _bars_svg(title: str, rows: list[tuple[str, list[tuple[str, float]]]], *, log: bool, unit: str,
              marker: float | None = None) -> str:
    """A horizontal grouped bar chart: rows of (label, [(series, value)])."""
    series = sorted({s for _, vals in rows for s, _ in vals})
    values = [v for _, vals in rows for _, v in vals if v is not None and v > 0]
    if not values:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="420" height="40" role="img"><text x="4" y="24">' \
               f'{_e(title)}: no data</text></svg>'
    lo = min(values + ([marker] if marker else []))
    hi = max(values + ([marker] if marker else []))
    if log:
        lo, hi = math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + (1 if lo == hi else 0)
        scale = lambda v: (math.log10(max(v, 10.0 ** lo)) - lo) / max(hi - lo, 1e-9)  # noqa: E731
    else:
        lo, hi = 0.0, hi * 1.1
        scale = lambda v: v / hi  # noqa: E731
    left, width, bar = 12 + 6 * max(len(label) for label, _ in rows), 320, 12
    group = bar * len(series) + 8
    height = 40 + group * len(rows) + 16 * len(series) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" role="img" '
             f'aria-label="{_e(title)}"><text x="4" y="16" font-size="13" font-weight="bold">{_e(title)}</text>']
    y = 30
    for label, vals in rows:
        parts.append(f'<text x="{left - 6}" y="{y + group / 2}" font-size="11" text-anchor="end">{_e(label)}</text>')
        for s, v in vals:
            color = _COLORS[series.index(s) % len(_COLORS)]
            w = max(1.0, scale(v) * width) if v and v > 0 else 0
            parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 2}" fill="{color}">'
                         f'<title>{_e(s)}: {v:.3g} {unit}</title></rect>')
            parts.append(f'<text x="{left + w + 3:.1f}" y="{y + bar - 3}" font-size="10">{v:.2g}</text>')
            y += bar
        y += 8
    if marker:
        x = left + scale(marker) * width
        parts.append(f'<line x1="{x:.1f}" y1="26" x2="{x:.1f}" y2="{y}" stroke="#cf222e" stroke-dasharray="4 3"/>'
                     f'<text x="{x + 2:.1f}" y="26" font-size="10" fill="#cf222e">atol {marker:g}</text>')
    axis = f"log10 {unit}: {lo} … {hi}" if log else f"{unit}: 0 … {hi:.3g}"
    parts.append(f'<text x="{left}" y="{y + 10}" font-size="10" fill="#555">{_e(axis)}</text>')
    y += 24
    for i, s in enumerate(series):
        color = _COLORS[i % len(_COLORS)]
        parts.append(f'<rect x="{left}" y="{y + 16 * i - 9}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{left + 14}" y="{y + 16 * i}" font-size="11">{_e(s)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _edge_label(edge: float) -> str:
    return "0" if edge == 0 else f"1e{round(math.log10(edge))}"


def _hist_svg(output: str, series: list[tuple[str, list[int]]], edges: list[float],
              marker: float | None = None) -> str:
    """Grouped vertical bars: per error decade, the share of the output's values in it, one bar per cell."""
    left, top, plot_h, bar = 40, 42, 120, 6
    group = bar * len(series) + 6
    width = left + group * len(edges) + 20
    height = top + plot_h + 36 + 16 * len(series)
    title = f"error histogram · {output}"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{max(width, 420)}" height="{height}" role="img" '
             f'aria-label="{_e(title)}"><text x="4" y="16" font-size="13" font-weight="bold">{_e(title)}</text>'
             '<text x="4" y="30" font-size="10" fill="#555">share of the values per |error| decade, all cases</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + group * len(edges)}" y2="{top + plot_h}" '
             f'stroke="#999"/><text x="4" y="{top + 8}" font-size="10" fill="#555">100%</text>']
    for i, edge in enumerate(edges):
        x0 = left + group * i
        parts.append(f'<text x="{x0 + group / 2:.1f}" y="{top + plot_h + 12}" font-size="9" text-anchor="middle">'
                     f'{_e(_edge_label(edge))}</text>')
        if marker and edge <= marker < (edges[i + 1] if i + 1 < len(edges) else math.inf):
            parts.append(f'<line x1="{x0:.1f}" y1="{top}" x2="{x0:.1f}" y2="{top + plot_h}" stroke="#cf222e" '
                         f'stroke-dasharray="4 3"><title>atol {marker:g} lies in this decade</title></line>')
        for j, (label, counts) in enumerate(series):
            total = sum(counts) or 1
            share = counts[i] / total
            h = plot_h * share
            parts.append(f'<rect x="{x0 + 3 + bar * j}" y="{top + plot_h - h:.1f}" width="{bar - 1}" height="{h:.1f}" '
                         f'fill="{_COLORS[j % len(_COLORS)]}"><title>{_e(label)}: {counts[i]} of {total} values with '
                         f'|error| ≥ {_e(_edge_label(edge))}</title></rect>')
    y = top + plot_h + 30
    for j, (label, _) in enumerate(series):
        color = _COLORS[j % len(_COLORS)]
        parts.append(f'<rect x="{left}" y="{y + 16 * j - 9}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{left + 14}" y="{y + 16 * j}" font-size="11">{_e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _hist_plots(cells: list[dict[str, Any]], marker: float | None) -> str:
    """One error histogram per output of the model, with a bar series per cell that recorded one."""
    by_output: dict[str, list[tuple[str, list[int]]]] = {}
    edges: dict[str, list[float]] = {}
    for c in cells:
        for output, h in (c.get("error_hist") or {}).items():
            by_output.setdefault(output, []).append((c["id"].split("/", 1)[1], h["counts"]))
            edges.setdefault(output, h["edges"])
    return "".join(_hist_svg(o, series, edges[o], marker) for o, series in by_output.items())


def _pass_label(record: dict[str, Any]) -> str:
    """A pass and its match count (the fusion count) when its statistics carry one."""
    stats = record.get("stats") if isinstance(record.get("stats"), dict) else {}
    count = next((stats[k] for k in ("matched", "fused", "count", "applied") if isinstance(stats.get(k), int)), None)
    return f"{record.get('name', '?')}" + (f" ×{count}" if count is not None else "")


def _model_section(model: str, cells: list[dict[str, Any]]) -> str:
    head = ("cell", "result", "max abs", "max rel", "mean abs", "cosine", "latency ms", "torch ms", "size MB",
            "passes", "cache", "message")
    rows = []
    for c in cells:
        lat = c.get("latency_ms") or {}
        runtime_ms = lat.get(c.get("runtime"))
        ref_ms = next((v for k, v in lat.items() if k != c.get("runtime")), None)
        passes = ", ".join(_pass_label(p) for p in c.get("passes") or []) or "–"
        size = c.get("size_bytes")
        rows.append(
            f'<tr><td class="l">{_e(c["id"].split("/", 1)[1])}</td><td class="{_e(c["status"])}">{_e(c["status"])}</td>'
            f'<td>{_num(_worst(c, "max_abs"))}</td><td>{_num(_worst(c, "max_rel"))}</td>'
            f'<td>{_num(_worst(c, "mean_abs"))}</td><td>{_num(_worst(c, "cosine", min), ".6f")}</td>'
            f'<td>{_num(runtime_ms, ".3f")}</td><td>{_num(ref_ms, ".3f")}</td>'
            f'<td>{_num(size / 1e6 if isinstance(size, int) else None, ".3f")}</td><td class="l">{_e(passes)}</td>'
            f'<td class="l">{_e(c.get("cache", "–"))}</td>'
            f'<td class="msg">{_e((c.get("message") or "")[:300])}</td></tr>')
    error_rows = [(f'{c["id"].split("/", 1)[1]} · {o}',
                   [("max abs", m.get("max_abs")), ("mean abs", m.get("mean_abs"))])
                  for c in cells for o, m in (c.get("metrics") or {}).items()]
    error_rows = [(label, [(s, v) for s, v in vals if v is not None]) for label, vals in error_rows]
    atol = next((c["tolerance"].get("atol") for c in cells if c.get("tolerance")), None)
    latency_rows = [(c["id"].split("/", 1)[1], [(k, v) for k, v in (c.get("latency_ms") or {}).items() if v])
                    for c in cells if c.get("latency_ms")]
    return (f'<section class="model"><h2>{_e(model)}</h2><p>source <code>{_e(cells[0].get("source", ""))}</code></p>'
            f'<table><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f'</table><div class="plots">'
            f'{_bars_svg("error per output (worst over cases)", error_rows, log=True, unit="abs error", marker=atol)}'
            f'{_bars_svg("latency per runtime (mean over cases)", latency_rows, log=False, unit="ms")}'
            f"{_hist_plots(cells, atol)}"
            f"</div></section>")


def to_html(report: dict[str, Any]) -> str:
    """The whole page as a string."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for cell in report["cells"]:
        by_model.setdefault(cell["model"], []).append(cell)
    s = report["summary"]
    verdict = "passed" if report["passed"] else "FAILED"
    skipped = "".join(f"<li>{_e(x['id'])}: {_e(x['reason'])}</li>" for x in report.get("skipped", []))
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>tracefuse ci report</title>"
        f"<style>{_CSS}</style></head><body><h1>tracefuse ci: <span class=\"{'pass' if report['passed'] else 'fail'}\">"
        f"{verdict}</span></h1><p>{s['cells']} cells · {s['pass']} passed · {s['fail']} failed · {s['error']} errors · "
        f"{s['timeout']} timeouts · {s['skipped']} skipped · {report['cache']['exports']} exports, "
        f"{report['cache']['hits']} cache hits · {report.get('duration_s', 0):.1f} s · recipe "
        f"<code>{_e(report.get('recipe', ''))}</code> · tracefuse {_e(report.get('tracefuse_version', ''))}</p>"
        + "".join(_model_section(m, cells) for m, cells in by_model.items())
        + (f"<h2>skipped</h2><ul>{skipped}</ul>" if skipped else "")
        + "</body></html>\n"
    )


def write_html(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the HTML view of a CI report atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(to_html(report))
    os.replace(tmp, path)
