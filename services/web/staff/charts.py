"""Charts drawn on the server as SVG (no script on the page): stacked columns over time and horizontal bars.
Every chart is an image with a title and a description; the numbers it draws are beside it in a table, for screen
readers and for anyone who wants the figures."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from math import ceil, log10

from markupsafe import Markup

# Colour-blind-safe enough on white, and in the same order as the legend's .sw-<n> classes (staff.css).
COLOURS = ("#0b5d3b", "#c25e00", "#2f5fa7", "#8a6d00", "#7a3e9d", "#5f6b64")


@dataclass(frozen=True)
class Series:
    label: str
    values: list[float]


def nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 5 × 10^n)."""
    if value <= 0:
        return 1
    step = 10 ** int(log10(value))
    for factor in (1, 2, 5, 10):
        if value <= factor * step:
            return factor * step
    return 10 * step


def _svg(width: int, height: int, title: str, desc: str, body: list[str], ident: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{ident}-t {ident}-d" focusable="false">'
        f'<title id="{ident}-t">{escape(title)}</title><desc id="{ident}-d">{escape(desc)}</desc>'
        + "".join(body) + "</svg>")


def columns(ident: str, title: str, desc: str, labels: list[str], series: list[Series], *,
            width: int = 640, height: int = 260) -> Markup:
    """Stacked columns, one per label (e.g. a week), one colour per series."""
    left, right, top, bottom = 36, 8, 10, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top_value = max(nice_max(max(totals, default=0)), 4)  # counts: four whole steps at least
    body: list[str] = []
    for k in range(5):  # grid lines and their values
        value = top_value * k / 4
        y = top + plot_h - plot_h * k / 4
        body.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        body.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{value:g}</text>')
    slot = plot_w / max(len(labels), 1)
    bar = max(min(slot * 0.7, 48), 2)
    every = max(1, ceil(len(labels) / 8))  # at most eight labels on the axis
    for i, label in enumerate(labels):
        x = left + slot * i + (slot - bar) / 2
        y = top + plot_h
        for n, s in enumerate(series):
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top_value
            y -= h
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                        f'fill="{COLOURS[n % len(COLOURS)]}"><title>{escape(label)}: {escape(s.label)} {value:g}'
                        f'</title></rect>')
        if i % every == 0:
            body.append(f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                        f'{escape(label)}</text>')
    body.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    return _svg(width, height, title, desc, body, ident)


def bars(ident: str, title: str, desc: str, rows: list[tuple[str, float]], *, width: int = 640,
         colour: str = COLOURS[0], unit: str = "") -> Markup:
    """Horizontal bars, one per row (label, value), largest first as given."""
    row_h, label_w, right = 26, 230, 48
    height = max(len(rows), 1) * row_h + 8
    top_value = nice_max(max((v for _, v in rows), default=0))
    body: list[str] = []
    for i, (label, value) in enumerate(rows):
        y = 4 + i * row_h
        w = (width - label_w - right) * value / top_value
        short = label if len(label) <= 34 else label[:33] + "…"
        body.append(f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end">{escape(short)}</text>')
        body.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row_h - 8}" fill="{colour}">'
                    f'<title>{escape(label)}: {value:g}{escape(unit)}</title></rect>')
        body.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 16}">{value:g}{escape(unit)}</text>')
    return _svg(width, height, title, desc, body, ident)
