"""The overview's graph, drawn on the server as SVG: no script, no library,
nothing fetched. Pure: numbers in, markup out. Every number is formatted
here and every label escaped, so nothing a client sent reaches the markup
unescaped (the series are counts; labels are ours)."""

from dataclasses import dataclass
from html import escape
from typing import Final

WIDTH: Final = 720
HEIGHT: Final = 180
PAD_LEFT: Final = 44
PAD_BOTTOM: Final = 20
PAD_TOP: Final = 8


@dataclass(frozen=True)
class Series:
    name: str  # also its CSS class: series-NAME
    label: str
    values: list[float]  # per slot, oldest first


def buckets(counts: list[int], size: int) -> list[float]:
    """Counts a second, summed ``size`` seconds at a time, as a rate a
    second (the last bucket may be short: the current second counts on)."""
    rates = []
    for start in range(0, len(counts), size):
        part = counts[start : start + size]
        rates.append(sum(part) / len(part))
    return rates


def line_chart(series: list[Series], span_label: str) -> str:
    """A line per series over a shared y axis from 0, with its legend."""
    slots = max((len(s.values) for s in series), default=0)
    top = max((max(s.values, default=0.0) for s in series), default=0.0)
    top = _nice(top)
    plot_w, plot_h = WIDTH - PAD_LEFT, HEIGHT - PAD_BOTTOM - PAD_TOP
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(_summary(series))}">',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" x2="{WIDTH}" '
        f'y2="{PAD_TOP + plot_h}"/>',
    ]
    for fraction in (0.5, 1.0):
        y = PAD_TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{PAD_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_short(top * fraction)}</text>"
        )
    parts.append(f'<text class="tick" x="{PAD_LEFT - 4}" y="{PAD_TOP + plot_h + 4}" '
                 'text-anchor="end">0</text>')  # fmt: skip
    parts.append(
        f'<text class="tick" x="{PAD_LEFT}" y="{HEIGHT - 4}">{escape(span_label)}</text>'
        f'<text class="tick" x="{WIDTH}" y="{HEIGHT - 4}" text-anchor="end">now</text>'
    )
    for one in series:
        if not one.values:
            continue
        step = plot_w / max(slots - 1, 1)
        points = " ".join(
            f"{PAD_LEFT + index * step:.1f},{PAD_TOP + plot_h * (1 - value / top):.1f}"
            for index, value in enumerate(one.values)
        )
        parts.append(f'<polyline class="series-{escape(one.name)}" points="{points}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _nice(top: float) -> float:
    """A round number at or above ``top`` (at least 1) for the axis."""
    if top <= 1:
        return 1.0
    scale = 1.0
    while scale * 10 <= top:
        scale *= 10
    for step in (1, 2, 5, 10):
        if step * scale >= top:
            return step * scale
    return 10 * scale


def _short(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _summary(series: list[Series]) -> str:
    return "; ".join(
        f"{one.label}: now {one.values[-1]:.1f}/s, peak {max(one.values):.1f}/s"
        for one in series
        if one.values
    )
