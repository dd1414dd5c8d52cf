"""Charts as inline SVG, drawn on the server: no JavaScript, no library, nothing fetched, so the
console works offline. Each chart scales to its container's width (a viewBox), carries a title
and a description for screen readers, and its figures are also in a table on the same page.

Colours reach a contrast of at least 4.5:1 against the white background (tests/test_console.py)."""
from __future__ import annotations

from html import escape
from typing import Sequence

from markupsafe import Markup

# dark enough on white for text and lines: blue 8.4:1, orange 5.5:1, green 6.0:1, grey 8.5:1
BLUE, ORANGE, GREY, GREEN = "#1d4e89", "#b34700", "#4d4d4d", "#2e7031"
PALETTE = (BLUE, ORANGE, GREEN, GREY)
W, H, LEFT, BOTTOM, TOP = 640, 260, 64, 30, 26


def _svg(title: str, desc: str, body: str, height: int = H) -> Markup:
    return Markup(f'<svg class="chart" viewBox="0 0 {W} {height}" role="img" aria-label="{escape(title)}" '
                  f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">'
                  f'<title>{escape(title)}</title><desc>{escape(desc)}</desc>{body}</svg>')


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.2f}"


def _axis(lo: float, hi: float, labels: Sequence[str]) -> str:
    """The y scale's two ends and the x labels (about six of them)."""
    out = [f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W}" y2="{H - BOTTOM}" stroke="{GREY}"/>',
           f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end" class="tick">{_fmt(hi)}</text>',
           f'<text x="{LEFT - 4}" y="{H - BOTTOM}" text-anchor="end" class="tick">{_fmt(lo)}</text>']
    step = max(1, len(labels) // (4 if labels and len(labels[0]) > 6 else 6))
    for i in range(0, len(labels), step):
        x = LEFT + (i + 0.5) * (W - LEFT) / len(labels)
        out.append(f'<text x="{x:.1f}" y="{H - 8}" text-anchor="middle" class="tick">{escape(labels[i])}</text>')
    return "".join(out)


def stacked_bars(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]]) -> Markup:
    """One bar per label, its parts stacked (e.g. sends and holds per hour)."""
    totals = [sum(s[1][i] for s in series) for i in range(len(labels))]
    top = max(totals + [1])
    slot = (W - LEFT) / max(1, len(labels))
    scale = (H - BOTTOM - TOP) / top
    parts = []
    for i in range(len(labels)):
        y = H - BOTTOM
        for k, (name, values) in enumerate(series):
            h = values[i] * scale
            y -= h
            if h > 0:
                parts.append(f'<rect x="{LEFT + i * slot + 1:.1f}" y="{y:.1f}" width="{max(1.0, slot - 2):.1f}" '
                             f'height="{h:.1f}" fill="{PALETTE[k]}"><title>{escape(labels[i])}: {escape(name)} '
                             f'{values[i]:g}</title></rect>')
    desc = "; ".join(f"{name}: {sum(values):g} in all" for name, values in series)
    return _svg(title, desc, _axis(0, top, labels) + "".join(parts) + _legend(series))


def lines(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]]) -> Markup:
    """Lines over the labels; a None leaves a gap (no final decision in that bucket)."""
    known = [v for _, values in series for v in values if v is not None]
    lo, hi = (min(known + [0.0]), max(known + [0.0])) if known else (0.0, 1.0)
    if hi == lo:
        hi = lo + 1.0
    slot = (W - LEFT) / max(1, len(labels))

    def y(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * (H - BOTTOM - TOP)

    parts = [f'<line x1="{LEFT}" y1="{y(0):.1f}" x2="{W}" y2="{y(0):.1f}" stroke="{GREY}" stroke-dasharray="3 3"/>']
    for k, (name, values) in enumerate(series):
        points = [(LEFT + (i + 0.5) * slot, y(v), v) for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{PALETTE[k]}" stroke-width="2"/>')
        for px, py, v in points:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{PALETTE[k]}"><title>{escape(name)}: '
                         f'{v:.3f}</title></circle>')
    desc = "; ".join(f"{name}: {sum(1 for v in values if v is not None)} points" for name, values in series)
    return _svg(title, desc, _axis(lo, hi, labels) + "".join(parts) + _legend(series))


def hbars(title: str, items: Sequence[tuple[str, float]]) -> Markup:
    """One horizontal bar per item (e.g. removals by reason), the value written beside it."""
    if not items:
        return _svg(title, "nothing to show", f'<text x="{LEFT}" y="24" class="tick">nothing in this window</text>',
                    40)
    row, label_w = 30, 230
    height = row * len(items) + 8
    top = max(v for _, v in items) or 1
    parts = []
    for i, (name, v) in enumerate(items):
        y = 4 + i * row
        width = (W - label_w - 90) * v / top
        parts.append(f'<text x="{label_w - 6}" y="{y + 20}" text-anchor="end" class="tick">{escape(name)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{width:.1f}" height="{row - 6}" fill="{BLUE}"/>'
                     f'<text x="{label_w + width + 6:.1f}" y="{y + 20}" class="tick">{v:g}</text>')
    return _svg(title, "; ".join(f"{n}: {v:g}" for n, v in items), "".join(parts), height)


def _legend(series: Sequence[tuple[str, Sequence]]) -> str:
    out, x = [], LEFT + 8
    for k, (name, _) in enumerate(series):
        out.append(f'<rect x="{x}" y="4" width="14" height="14" fill="{PALETTE[k]}"/>'
                   f'<text x="{x + 18}" y="17" class="tick">{escape(name)}</text>')
        x += 34 + 10 * len(name)
    return "".join(out)


def contrast(foreground: str, background: str = "#ffffff") -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    def lum(c: str) -> float:
        rgb = [int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    a, b = sorted((lum(foreground), lum(background)), reverse=True)
    return (a + 0.05) / (b + 0.05)
