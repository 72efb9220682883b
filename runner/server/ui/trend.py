"""A metric over time as inline SVG: one point per run, its mean and its 95 % interval.

Like :mod:`runner.server.ui.charts`: numbers formatted here, text escaped, colours from the
stylesheet. Each point is a link to its run, with a ``<title>`` (the browser's tooltip) naming
the run and its figures, and ``data-run`` so the page's script can pick two to compare.

The x axis is time: each run is placed at the time it started, so runs made at irregular times
are spaced as they ran, and the axis is labelled with round times (UTC) at a step that fits
(:func:`time_ticks`: seconds, minutes, hours, days, months or years).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

__all__ = ["Point", "time_ticks", "trend"]


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
    #: when the run started (aware, or naive meaning UTC); None places the points by their order
    at: dt.datetime | None = None


_UTC = dt.timezone.utc
_MINUTE, _HOUR, _DAY = 60, 3600, 86400
#: steps between ticks, in seconds (months and years are calendar steps: see :func:`time_ticks`)
_STEPS = (1, 2, 5, 10, 15, 30, _MINUTE, 2 * _MINUTE, 5 * _MINUTE, 10 * _MINUTE, 15 * _MINUTE, 30 * _MINUTE,
          _HOUR, 2 * _HOUR, 3 * _HOUR, 6 * _HOUR, 12 * _HOUR, _DAY, 2 * _DAY, 7 * _DAY, 14 * _DAY)
_MONTHS = (1, 2, 3, 6, 12, 24, 60, 120, 240, 600, 1200)


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=_UTC) if t.tzinfo is None else t.astimezone(_UTC)


def _month_start(t: dt.datetime, months: int) -> dt.datetime:
    """The first of the month ``months`` after ``t``'s month."""
    index = t.year * 12 + t.month - 1 + months
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=_UTC)


def time_ticks(start: dt.datetime, end: dt.datetime, most: int = 6) -> list[tuple[dt.datetime, str]]:
    """Round times between ``start`` and ``end`` (UTC), at most ``most`` of them, with their labels.

    The step is the smallest of 1 s ... 14 days, or 1 month ... 100 years, that gives at most
    ``most`` ticks; ticks fall on multiples of it (midnight for days, the 1st for months). A label
    says what the step needs: ``09:30:15`` for seconds, ``14:00`` for minutes and hours (with the
    day, ``May 2 00:00``, on the first tick and where the day changes), ``May 2`` for days,
    ``May 2024`` for months, ``2024`` for years.

    >>> [label for _, label in time_ticks(dt.datetime(2024, 5, 1, 9), dt.datetime(2024, 5, 3, 11))]
    ['May 1 12:00', 'May 2 00:00', '12:00', 'May 3 00:00']
    """
    start, end = _utc(start), _utc(end)
    span = (end - start).total_seconds()
    ticks: list[dt.datetime] = []
    step = next((s for s in _STEPS if span / s <= most - 1), None)
    if step is not None:
        epoch = dt.datetime(1970, 1, 1, tzinfo=_UTC)
        if step == 7 * _DAY or step == 14 * _DAY:  # weeks from Monday
            epoch = dt.datetime(1970, 1, 5, tzinfo=_UTC)
        first = math.ceil((start - epoch).total_seconds() / step)
        t = epoch + dt.timedelta(seconds=first * step)
        while t <= end:
            ticks.append(t)
            t += dt.timedelta(seconds=step)
    else:
        months = next((m for m in _MONTHS if span / (m * 30.44 * _DAY) <= most - 1), _MONTHS[-1])
        t = _month_start(start, 0 if (start.day, start.hour, start.minute, start.second) == (1, 0, 0, 0) else 1)
        t = _month_start(t, -((t.year * 12 + t.month - 1) % months) % months)
        while t <= end:
            ticks.append(t)
            t = _month_start(t, months)
    out: list[tuple[dt.datetime, str]] = []
    for i, t in enumerate(ticks):
        if step is not None and step < _DAY:
            new_day = i == 0 or ticks[i - 1].date() != t.date()
            clock = t.strftime("%H:%M:%S" if step < _MINUTE else "%H:%M")
            label = f"{t:%b} {t.day} {clock}" if new_day else clock
        elif step is not None:
            label = f"{t:%b} {t.day}"
        else:
            label = t.strftime("%Y") if months >= 12 else t.strftime("%b %Y")
        out.append((t, label))
    return out


def _n(x: float) -> str:
    return f"{x:.1f}" if math.isfinite(x) else "0"


def _v(x: float) -> str:
    return f"{x:.3g}"


def trend(points: Sequence[Point], *, name: str, width: int = 460, height: int = 170) -> Markup:
    """Points left to right (oldest run first), joined by a line; an interval is drawn as a whisker
    (a vertical line with caps). The y axis is labelled at its ends; the x axis is the runs'
    start times with round-time ticks (:func:`time_ticks`), or, when a point has no time, their
    order."""
    known = [p for p in points if p.mean is not None and math.isfinite(p.mean)]
    pad_l, pad_r, pad_t, pad_b = 58, 16, 12, 24
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
    times = [_utc(p.at) for p in points if p.at is not None]
    timed = bool(points) and len(times) == len(points)
    if timed:  # the runs' time span, with a margin, so the first and last points clear the frame
        t0, t1 = min(times), max(times)
        margin = max((t1 - t0) * 0.04, dt.timedelta(seconds=30))
        t0, t1 = t0 - margin, t1 + margin
        seconds = (t1 - t0).total_seconds()

    def tx(t: dt.datetime) -> float:
        return pad_l + (_utc(t) - t0).total_seconds() / seconds * plot_w

    def px(i: int) -> float:
        if timed:
            at = points[i].at
            assert at is not None
            return tx(at)
        return pad_l + (i * step if len(points) > 1 else plot_w / 2)

    def py(v: float) -> float:
        return pad_t + (hi - v) / (hi - lo) * plot_h

    body = [
        f'<rect class="frame" x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}"/>',
        f'<text class="tick" x="{pad_l - 4}" y="{_n(py(hi) + 4)}" text-anchor="end">{_v(hi)}</text>',
        f'<text class="tick" x="{pad_l - 4}" y="{_n(py(lo))}" text-anchor="end">{_v(lo)}</text>',
    ]
    if timed:
        bottom = pad_t + plot_h
        for t, label in time_ticks(t0, t1):
            at_x = _n(tx(t))
            body.append(
                f'<line class="time-grid" x1="{at_x}" x2="{at_x}" y1="{pad_t}" y2="{bottom}"/>'
                f'<text class="tick time-tick" x="{at_x}" y="{bottom + 12}" text-anchor="middle"'
                f' data-time="{t.isoformat()}">{escape(label)}</text>'
            )
        body.append(f'<text class="axis-label" x="{pad_l - 4}" y="{height - 4}" text-anchor="end">UTC</text>')
    else:
        body += [
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
