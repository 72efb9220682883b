"""A metric over time as inline SVG: one point per run, its mean and its 95 % interval.

Like :mod:`runner.server.ui.charts`: numbers formatted here, text escaped, colours from the
stylesheet. Each point is a link to its run, with a ``<title>`` (the browser's tooltip) naming
the run and its figures, and ``data-run`` so the page's script can pick two to compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

__all__ = ["Point", "trend"]


@dataclass(frozen=True)
class Point:
    """One run's value of a metric: its mean, and its interval when known."""

    uuid: str
    label: str
    mean: float | None
    low: float | None = None
    high: float | None = None
    #: extra text for the tooltip (n scored, when it ran)
    note: str = ""


def _n(x: float) -> str:
    return f"{x:.1f}" if math.isfinite(x) else "0"


def _v(x: float) -> str:
    return f"{x:.3g}"


def trend(points: Sequence[Point], *, name: str, width: int = 460, height: int = 170) -> Markup:
    """Points left to right in the order given (oldest run first), joined by a line; an interval
    is drawn as a whisker (a vertical line with caps). The y axis is labelled at its ends."""
    known = [p for p in points if p.mean is not None and math.isfinite(p.mean)]
    pad_l, pad_r, pad_t, pad_b = 58, 12, 12, 24
    if not known:
        return Markup(
            f'<svg class="chart trend" viewBox="0 0 {width} 40" width="{width}" height="40" role="img" '
            f'aria-label="{escape(name)}: no values"><text x="8" y="24">no values</text></svg>'
        )
    values = [v for p in known for v in (p.mean, p.low, p.high) if v is not None and math.isfinite(v)]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    lo, hi = lo - span * 0.06, hi + span * 0.06
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    step = plot_w / max(1, len(points) - 1) if len(points) > 1 else 0.0

    def px(i: int) -> float:
        return pad_l + (i * step if len(points) > 1 else plot_w / 2)

    def py(v: float) -> float:
        return pad_t + (hi - v) / (hi - lo) * plot_h

    body = [
        f'<rect class="frame" x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}"/>',
        f'<text class="tick" x="{pad_l - 4}" y="{_n(py(hi) + 4)}" text-anchor="end">{_v(hi)}</text>',
        f'<text class="tick" x="{pad_l - 4}" y="{_n(py(lo))}" text-anchor="end">{_v(lo)}</text>',
        f'<text class="axis-label" x="{pad_l}" y="{height - 6}">oldest run</text>',
        f'<text class="axis-label" x="{width - pad_r}" y="{height - 6}" text-anchor="end">newest run</text>',
    ]
    line = [
        f"{_n(px(i))},{_n(py(p.mean))}" for i, p in enumerate(points) if p.mean is not None and math.isfinite(p.mean)
    ]
    if len(line) > 1:
        body.append(f'<polyline class="trend-line" points="{" ".join(line)}"/>')
    for i, p in enumerate(points):
        if p.mean is None or not math.isfinite(p.mean):
            continue
        x, y = px(i), py(p.mean)
        tip = f"{p.label}: {_v(p.mean)}"
        parts = []
        if p.low is not None and p.high is not None:
            tip += f" [95% CI {_v(p.low)}, {_v(p.high)}]"
            y1, y2 = py(p.high), py(p.low)
            parts.append(
                f'<line class="whisker" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(y1)}" y2="{_n(y2)}"/>'
                f'<line class="whisker" x1="{_n(x - 4)}" x2="{_n(x + 4)}" y1="{_n(y1)}" y2="{_n(y1)}"/>'
                f'<line class="whisker" x1="{_n(x - 4)}" x2="{_n(x + 4)}" y1="{_n(y2)}" y2="{_n(y2)}"/>'
            )
        if p.note:
            tip += f" · {p.note}"
        parts.append(f'<circle class="point" cx="{_n(x)}" cy="{_n(y)}" r="5"/>')
        body.append(
            f'<a class="run-point" href="/runs/{escape(p.uuid)}" data-run="{escape(p.uuid)}">'
            f"<title>{escape(tip)}</title>{''.join(parts)}</a>"
        )
    return Markup(
        f'<svg class="chart trend" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(name)} over {len(points)} runs">{"".join(body)}</svg>'
    )
