"""Server-side SVG line charts: no JavaScript, no chart library, nothing fetched by the page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PALETTE", "Series", "line_chart"]

PALETTE: tuple[str, ...] = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed")

_WIDTH, _HEIGHT = 640, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 16, 40


@dataclass(frozen=True, slots=True)
class Series:
    """One line: its name and a value per x label (None: no data there)."""

    name: str
    values: tuple[float | None, ...]


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    y_max: float | None = None,
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
) -> str:
    """An accessible SVG line chart (a `<svg class="chart">` string, text escaped).

    Args:
        title: the chart's title (also its accessible name).
        labels: the x-axis labels, one per point.
        series: the lines; each has one value per label.
        y_max: the top of the y axis (default: the largest value, at least 1).
        y_format: how y-axis ticks are written.
    """
    values = [v for s in series for v in s.values if v is not None]
    top = y_max if y_max is not None else max([1.0, *values])
    top = top or 1.0
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    n = len(labels)

    def x(i: int) -> float:
        return _LEFT + (plot_w * (i / (n - 1)) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return _TOP + plot_h * (1 - min(max(v / top, 0.0), 1.0))

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
        f'width="{_WIDTH}" height="{_HEIGHT}" xmlns="http://www.w3.org/2000/svg" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{_WIDTH}" height="{_HEIGHT}" fill="#ffffff"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        ty = y(top * fraction)
        parts.append(
            f'<line x1="{_LEFT}" y1="{ty:.1f}" x2="{_WIDTH - _RIGHT}" y2="{ty:.1f}" '
            'stroke="#e5e7eb" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{_LEFT - 6}" y="{ty + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#6b7280">{escape(y_format(top * fraction))}</text>'
        )
    if n:
        shown = sorted({0, n // 2, n - 1})
        for i in shown:
            parts.append(
                f'<text x="{x(i):.1f}" y="{_HEIGHT - _BOTTOM + 16}" font-size="11" '
                f'text-anchor="middle" fill="#6b7280">{escape(labels[i])}</text>'
            )
    for number, line in enumerate(series):
        color = PALETTE[number % len(PALETTE)]
        points = [(x(i), y(v)) for i, v in enumerate(line.values[:n]) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(
                f'<polyline class="series" data-series="{escape(line.name)}" fill="none" '
                f'stroke="{color}" stroke-width="2.5" points="{path}"/>'
            )
        for px, py in points:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{color}"/>')
        lx = _LEFT + number * 150
        parts.append(
            f'<rect x="{lx}" y="{_HEIGHT - 14}" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14}" y="{_HEIGHT - 5}" font-size="11" fill="#111827">'
            f"{escape(line.name)}</text>"
        )
    if not values:
        parts.append(
            f'<text x="{_WIDTH / 2}" y="{_HEIGHT / 2}" font-size="13" text-anchor="middle" '
            'fill="#6b7280">no data in this period</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
