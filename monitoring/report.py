"""`supportbot report`: the figures of `monitoring.metrics` as rich tables, CSV, JSON and HTML.

* `tables` — rich tables for the terminal: the headline figures, then one row per bucket.
* `write_csv` — long format, one figure a row: ``section,bucket,metric,value`` (``summary`` rows
  have no bucket; ``series`` rows one per bucket and figure), easy to pivot in a spreadsheet.
* `write_json` — `Metrics.as_dict()`.
* `write_html` — one self-contained page (inline CSS and SVG, no script, nothing from a CDN),
  rendered with jinja2 (autoescaped).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring.metrics import Metrics

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "LABELS",
    "format_value",
    "rows",
    "series_rows",
    "tables",
    "write_csv",
    "write_html",
    "write_json",
]

#: The headline figures, in the order reports show them, with their labels.
LABELS: dict[str, str] = {
    "conversations": "Conversations started",
    "messages": "Customer messages",
    "replies": "Bot replies",
    "answer_rate": "Answer rate",
    "fallback_rate": "Fallback rate",
    "clarify_rate": "Clarify rate",
    "handoff_rate": "Handoff rate (conversations)",
    "handoffs": "Handoffs to a person",
    "deflection_rate": "Deflection",
    "deflection_eligible": "Conversations judged for deflection",
    "csat": "CSAT (thumbs)",
    "csat_bot_only": "CSAT, bot only",
    "csat_bot_then_human": "CSAT, bot then human",
    "thumbs_up": "👍",
    "thumbs_down": "👎",
    "sentiment": "Customer sentiment (VADER, -1..1)",
    "time_to_human_p50_s": "Handoff → human reply, median (s)",
    "time_to_human_p90_s": "Handoff → human reply, p90 (s)",
    "unanswered_handoffs": "Handoffs no person answered yet",
    "latency_p50_ms": "Latency p50 (ms)",
    "latency_p90_ms": "Latency p90 (ms)",
    "latency_p95_ms": "Latency p95 (ms)",
    "latency_p99_ms": "Latency p99 (ms)",
    "bot_spoke_while_human_owned": "Never: bot spoke while a human owned it",
    "duplicate_replies": "Never: duplicate replies",
}

_SERIES = (
    "conversations",
    "messages",
    "replies",
    "answers",
    "fallbacks",
    "handoffs",
    "thumbs_up",
    "thumbs_down",
    "answer_rate",
    "csat",
    "sentiment",
    "latency_p50_ms",
    "latency_p95_ms",
)


def format_value(name: str, value: float | int | None) -> str:
    """A figure for people: rates as percentages, durations rounded, None as a dash."""
    if value is None:
        return "–"
    if name.endswith("rate") or name.startswith("csat"):
        return f"{value * 100:.1f} %"
    if isinstance(value, float):
        return f"{value:.3f}" if name == "sentiment" else f"{value:.1f}"
    return str(value)


def rows(metrics: Metrics) -> list[tuple[str, str, str]]:
    """The headline figures as (key, label, formatted value)."""
    summary = metrics.summary()
    return [(key, label, format_value(key, summary[key])) for key, label in LABELS.items()]


def series_rows(metrics: Metrics) -> list[dict[str, Any]]:
    """One dict per bucket: ``start`` and each per-bucket figure (raw values)."""
    data = metrics.as_dict()["series"]
    return [{"start": b["start"], **{k: b[k] for k in _SERIES}} for b in data]


def tables(metrics: Metrics) -> list[Table]:
    """Rich tables: the headline figures, the extra breakdowns, then the series."""
    from rich.table import Table

    window = f"{metrics.since:%Y-%m-%d %H:%M} – {metrics.until:%Y-%m-%d %H:%M} UTC"
    summary = Table(title=f"Support bot, {window}")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    never = {"bot_spoke_while_human_owned", "duplicate_replies"}
    for key, label, value in rows(metrics):
        style = "bold red" if key in never and value not in ("0", "–") else None
        summary.add_row(label, value, style=style)

    breakdown = Table(title="Breakdowns")
    breakdown.add_column("what")
    breakdown.add_column("counts")
    for title, mapping in (
        ("Replies by kind", metrics.replies_by_kind),
        ("👎 reasons", metrics.feedback_reasons),
        ("Ratings by platform", metrics.feedback_by_platform),
    ):
        text = ", ".join(f"{k} {v}" for k, v in mapping.items()) or "–"
        breakdown.add_row(title, text)

    series = Table(title=f"Per {metrics.bucket}")
    series.add_column(metrics.bucket)
    for name in _SERIES:
        series.add_column(name.replace("_", " "), justify="right")
    for bucket in series_rows(metrics):
        series.add_row(
            bucket["start"][:16].replace("T", " "),
            *(format_value(name, bucket[name]) for name in _SERIES),
        )
    return [summary, breakdown, series]


def _csv_rows(metrics: Metrics) -> Iterator[tuple[str, str, str, Any]]:
    for key, value in metrics.summary().items():
        yield "summary", "", key, "" if value is None else value
    for name, mapping in (
        ("replies_by_kind", metrics.replies_by_kind),
        ("feedback_reasons", metrics.feedback_reasons),
        ("feedback_by_platform", metrics.feedback_by_platform),
    ):
        for key, count in mapping.items():
            yield name, "", key, count
    for bucket in series_rows(metrics):
        for name in _SERIES:
            value = bucket[name]
            yield "series", bucket["start"], name, "" if value is None else value


def write_csv(metrics: Metrics, path: Path) -> None:
    """Write the figures in long CSV format (see the module docstring)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("section", "bucket", "metric", "value"))
        writer.writerows(_csv_rows(metrics))


def write_json(metrics: Metrics, path: Path) -> None:
    """Write `Metrics.as_dict()` as indented JSON."""
    path.write_text(json.dumps(metrics.as_dict(), indent=2) + "\n", encoding="utf-8")


_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Support bot report, {{ window }}</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem;
         padding: 0 1rem; color: #1d2430; }
  h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { padding: .3rem .6rem; border-bottom: 1px solid #dde2ea; text-align: left; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  tr.never td { color: #a4161a; font-weight: 600; }
  .chart { margin: .5rem 0 1rem; }
  .muted { color: #5c6675; }
</style>
</head>
<body>
<h1>Support bot report</h1>
<p class="muted">{{ window }} · buckets: {{ metrics.bucket }} · deflection window:
  {{ deflection_hours }} h · generated {{ generated }}</p>

<h2>Headline figures</h2>
<table>
  <tr><th>Figure</th><th class="num">Value</th></tr>
  {% for key, label, value in rows %}
  <tr{% if key in never and value not in ("0", "–") %} class="never"{% endif %}>
    <td>{{ label }}</td><td class="num">{{ value }}</td></tr>
  {% endfor %}
</table>

<h2>Breakdowns</h2>
<table>
  {% for title, mapping in breakdowns %}
  <tr><td>{{ title }}</td>
    <td>{% for k, v in mapping.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}
      {% else %}–{% endfor %}</td></tr>
  {% endfor %}
</table>

<h2>Replies per {{ metrics.bucket }}</h2>
<svg class="chart" role="img" aria-label="Replies per {{ metrics.bucket }}"
     viewBox="0 0 {{ chart.width }} {{ chart.height + 20 }}" width="100%" height="180">
  {% for bar in chart.bars %}
  <rect x="{{ bar.x }}" y="{{ bar.y }}" width="{{ bar.w }}" height="{{ bar.h }}" fill="#3b6fd8">
    <title>{{ bar.label }}: {{ bar.value }} replies</title></rect>
  {% endfor %}
  <line x1="0" y1="{{ chart.height }}" x2="{{ chart.width }}" y2="{{ chart.height }}"
        stroke="#8a94a6"/>
</svg>

<table>
  <tr><th>{{ metrics.bucket }}</th>{% for name in series_names %}
    <th class="num">{{ name.replace("_", " ") }}</th>{% endfor %}</tr>
  {% for bucket in series %}
  <tr><td>{{ bucket.start[:16].replace("T", " ") }}</td>{% for name in series_names %}
    <td class="num">{{ fmt(name, bucket[name]) }}</td>{% endfor %}</tr>
  {% endfor %}
</table>
</body>
</html>
"""


def _chart(series: list[dict[str, Any]], width: int = 800, height: int = 150) -> dict[str, Any]:
    top = max((b["replies"] for b in series), default=0) or 1
    step = width / max(len(series), 1)
    bars = []
    for i, bucket in enumerate(series):
        h = round(bucket["replies"] / top * (height - 5), 1)
        bars.append(
            {
                "x": round(i * step + step * 0.1, 1),
                "w": round(step * 0.8, 1),
                "y": round(height - h, 1),
                "h": h,
                "value": bucket["replies"],
                "label": bucket["start"][:16].replace("T", " "),
            }
        )
    return {"width": width, "height": height, "bars": bars}


def write_html(metrics: Metrics, path: Path) -> None:
    """Write one self-contained HTML page of the figures (no scripts, no external assets)."""
    from jinja2 import Environment

    from bot.model import utcnow

    environment = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    template = environment.from_string(_HTML)
    series = series_rows(metrics)
    page = template.render(
        metrics=metrics,
        window=f"{metrics.since:%Y-%m-%d %H:%M} – {metrics.until:%Y-%m-%d %H:%M} UTC",
        deflection_hours=round(metrics.deflection_window.total_seconds() / 3600, 2),
        generated=f"{utcnow():%Y-%m-%d %H:%M} UTC",
        rows=rows(metrics),
        never={"bot_spoke_while_human_owned", "duplicate_replies"},
        breakdowns=[
            ("Replies by kind", dict(metrics.replies_by_kind)),
            ("👎 reasons", dict(metrics.feedback_reasons)),
            ("Ratings by platform", dict(metrics.feedback_by_platform)),
        ],
        chart=_chart(series),
        series=series,
        series_names=_SERIES,
        fmt=format_value,
    )
    path.write_text(page, encoding="utf-8")
