"""Charts drawn on the server as inline SVG: no script, no library, nothing fetched.

Every function returns :class:`markupsafe.Markup` built only from numbers it formats itself and
text it escapes, so a template can insert it as is. Colours come from the stylesheet (classes
``bar``, ``band``, ``mean``, ``dot``, ...), so the page's Content-Security-Policy can forbid
inline styles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from markupsafe import Markup

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["diff_interval", "histogram", "scatter", "span_bar"]


def _n(x: float) -> str:
    """A coordinate: short, and never ``nan`` or ``inf``."""
    return f"{x:.1f}" if math.isfinite(x) else "0"


def _v(x: float) -> str:
    """A value in a label: three significant digits."""
    return f"{x:.3g}"


def _svg(width: int, height: int, label: str, body: list[str], cls: str) -> Markup:
    return Markup(
        f'<svg class="chart {cls}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}">{"".join(body)}</svg>'
    )


def histogram(
    values: Sequence[float] | npt.NDArray[np.float64],
    *,
    name: str,
    mean: float | None = None,
    ci: tuple[float | None, float | None] = (None, None),
    width: int = 300,
    height: int = 124,
    bins: int = 20,
) -> Markup:
    """A histogram of one score's values, with its mean and interval marked.

    0/1 scores get two bars (0 and 1); other scores up to ``bins`` equal-width bins between
    their minimum and maximum. The interval is a labelled whisker above the bars (a line with
    end caps and the mean as a dot on it), so it reads as an interval and not as a shading."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    pad_l, pad_r, pad_t, pad_b = 8, 8, 28, 22
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    body: list[str] = []
    if len(v) == 0:
        body.append(f'<text class="axis" x="{width / 2}" y="{height / 2}" text-anchor="middle">no values</text>')
        return _svg(width, height, f"histogram of {name}: no values", body, "hist")
    lo, hi = float(v.min()), float(v.max())
    binary = bool(np.all((v == 0) | (v == 1)))
    if binary:
        lo, hi = 0.0, 1.0
        counts = np.asarray([np.count_nonzero(v == 0), np.count_nonzero(v == 1)])
        edges = np.asarray([-0.5, 0.5, 1.5])
        x0_axis, x1_axis = -0.5, 1.5  # two slots, centred on 0 and on 1
    else:
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        k = int(min(bins, max(1, len(np.unique(v)))))
        counts, edges = np.histogram(v, bins=k, range=(lo, hi))
        x0_axis, x1_axis = lo, hi

    def x_of(x: float) -> float:
        return pad_l + (x - x0_axis) / (x1_axis - x0_axis) * plot_w

    top = max(int(counts.max()), 1)
    for i, c in enumerate(counts.tolist()):
        x0, x1 = x_of(float(edges[i])), x_of(float(edges[i + 1]))
        if binary:  # a slim bar at 0 and at 1, so the mean and its interval read on the same axis
            x0, x1 = x0 + (x1 - x0) * 0.3, x1 - (x1 - x0) * 0.3
        h = c / top * plot_h
        label = f"{int(c)} row(s) with {name} " + (
            f"= {_v((edges[i] + edges[i + 1]) / 2)}" if binary else f"in [{_v(edges[i])}, {_v(edges[i + 1])}]"
        )
        body.append(
            f'<rect class="bar" x="{_n(x0 + 0.5)}" y="{_n(pad_t + plot_h - h)}" width="{_n(max(x1 - x0 - 1, 1))}" '
            f'height="{_n(h)}"><title>{escape(label)}</title></rect>'
        )
    lo_ci, hi_ci = ci
    wy = pad_t - 9  # the whisker's height: above the bars, below the legend
    if mean is not None:
        xm = x_of(mean)
        body.append(
            f'<line class="mean" x1="{_n(xm)}" x2="{_n(xm)}" y1="{wy}" y2="{pad_t + plot_h}">'
            f"<title>mean {_v(mean)}</title></line>"
        )
    if lo_ci is not None and hi_ci is not None:
        x0, x1 = x_of(lo_ci), x_of(hi_ci)
        tip = f"<title>95% interval of the mean: [{_v(lo_ci)}, {_v(hi_ci)}]</title>"
        body.append(
            f'<g class="whisker">{tip}'
            f'<line x1="{_n(x0)}" x2="{_n(x1)}" y1="{wy}" y2="{wy}"/>'
            f'<line x1="{_n(x0)}" x2="{_n(x0)}" y1="{wy - 4}" y2="{wy + 4}"/>'
            f'<line x1="{_n(x1)}" x2="{_n(x1)}" y1="{wy - 4}" y2="{wy + 4}"/></g>'
        )
        anchor, lx = ("end", x0 - 5) if x1 > width - 70 else ("start", x1 + 5)
        body.append(
            f'<text class="ci-label" x="{_n(lx)}" y="{wy + 3}" text-anchor="{anchor}">'
            f"95% CI [{_v(lo_ci)}, {_v(hi_ci)}]</text>"
        )
    if mean is not None:
        body.append(
            f'<circle class="mean-dot" cx="{_n(x_of(mean))}" cy="{wy}" r="3"><title>mean {_v(mean)}</title></circle>'
        )
    base = pad_t + plot_h
    body.append(f'<line class="axis" x1="{pad_l}" x2="{width - pad_r}" y1="{base}" y2="{base}"/>')
    if binary:
        for x in (0, 1):
            body.append(f'<text class="axis" x="{_n(x_of(x))}" y="{base + 14}" text-anchor="middle">{x}</text>')
    else:
        body.append(f'<text class="axis" x="{pad_l}" y="{base + 14}">{_v(lo)}</text>')
        body.append(f'<text class="axis" x="{width - pad_r}" y="{base + 14}" text-anchor="end">{_v(hi)}</text>')
    body.append(f'<text class="axis" x="{pad_l}" y="10">max {top} rows/bin</text>')
    return _svg(width, height, f"histogram of {name} over {len(v)} values", body, "hist")


def scatter(
    xs: Sequence[float] | npt.NDArray[np.float64],
    ys: Sequence[float] | npt.NDArray[np.float64],
    *,
    name: str,
    label_x: str,
    label_y: str,
    size: int = 260,
    grid: int = 40,
) -> Markup:
    """Per-row scores of run A (x) against run B (y), with the diagonal of no change.

    Rows are pooled into a ``grid`` × ``grid`` raster: each occupied cell is one dot at the mean
    of its rows, with an area proportional to their number, so 100,000 rows draw as at most
    1,600 dots and 0/1 scores as four labelled dots."""
    import numpy as np

    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    left, top_pad, bottom = 44, 8, 34
    plot = size - left - 8
    height = plot + top_pad + bottom
    body: list[str] = []
    if len(x) == 0:
        body.append(
            f'<text class="axis" x="{size / 2}" y="{height / 2}" text-anchor="middle">no rows scored in both</text>'
        )
        return _svg(size, height, f"{name}: no rows scored in both runs", body, "scatter")
    lo = float(min(x.min(), y.min()))
    hi = float(max(x.max(), y.max()))
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    lo_axis, hi_axis = lo - span * 0.05, hi + span * 0.05  # room for the dots on the edges
    axis = hi_axis - lo_axis

    def px(v: float) -> float:
        return left + (v - lo_axis) / axis * plot

    def py(v: float) -> float:
        return top_pad + plot - (v - lo_axis) / axis * plot

    cx = np.minimum(((x - lo) / span * grid).astype(np.int64), grid - 1)
    cy = np.minimum(((y - lo) / span * grid).astype(np.int64), grid - 1)
    cell = cx * grid + cy
    counts = np.bincount(cell, minlength=grid * grid)
    sx = np.bincount(cell, weights=x, minlength=grid * grid)
    sy = np.bincount(cell, weights=y, minlength=grid * grid)
    body.append(f'<rect class="frame" x="{left}" y="{top_pad}" width="{plot}" height="{plot}"/>')
    body.append(
        f'<line class="diag" x1="{_n(px(lo_axis))}" y1="{_n(py(lo_axis))}" x2="{_n(px(hi_axis))}" '
        f'y2="{_n(py(hi_axis))}"/>'
    )
    most = int(counts.max())
    for c in np.flatnonzero(counts).tolist():
        n = int(counts[c])
        mx, my = float(sx[c] / n), float(sy[c] / n)
        r = 2.5 + 8 * math.sqrt(n / most)
        cls = "dot up" if my > mx else ("dot down" if my < mx else "dot")
        title = f"{n} row(s): {label_x} {_v(mx)}, {label_y} {_v(my)}"
        body.append(
            f'<circle class="{cls}" cx="{_n(px(mx))}" cy="{_n(py(my))}" r="{_n(r)}">'
            f"<title>{escape(title)}</title></circle>"
        )
    base = top_pad + plot
    for v in (lo, hi):
        body.append(f'<text class="axis" x="{_n(px(v))}" y="{base + 12}" text-anchor="middle">{_v(v)}</text>')
        body.append(f'<text class="axis" x="{left - 4}" y="{_n(py(v) + 3)}" text-anchor="end">{_v(v)}</text>')
    body.append(
        f'<text class="axis label" x="{left + plot / 2}" y="{base + 28}" text-anchor="middle">'
        f"A: {escape(label_x)}</text>"
    )
    body.append(
        f'<text class="axis label" transform="translate(12 {top_pad + plot / 2}) rotate(-90)" text-anchor="middle">'
        f"B: {escape(label_y)}</text>"
    )
    return _svg(size, height, f"{name}: per-row scores, {label_x} against {label_y}, {len(x)} rows", body, "scatter")


def diff_interval(
    diff: float | None, low: float | None, high: float | None, *, width: int = 160, height: int = 34
) -> Markup:
    """B − A as a dot with its interval as a line, on an axis centred on zero and labelled at
    zero and at both ends."""
    if diff is None:
        return Markup("")
    ends = [abs(v) for v in (diff, low, high) if v is not None]
    reach = max(ends) or 1.0

    def px(v: float) -> float:
        return width / 2 + v / reach * (width / 2 - 6)

    cls = "up" if (low is not None and low > 0) else ("down" if (high is not None and high < 0) else "flat")
    mid = (height - 12) / 2
    body = [
        f'<line class="axis" x1="6" x2="{width - 6}" y1="{mid}" y2="{mid}"/>',
        f'<line class="zero" x1="{width / 2}" x2="{width / 2}" y1="2" y2="{mid + 4}"/>',
    ]
    for v, anchor in ((-reach, "start"), (0.0, "middle"), (reach, "end")):
        text = "0" if v == 0 else f"{v:+.2g}"
        body.append(f'<text class="tick" x="{_n(px(v))}" y="{height - 1}" text-anchor="{anchor}">{text}</text>')
    if low is not None and high is not None:
        body.append(f'<line class="ci {cls}" x1="{_n(px(low))}" x2="{_n(px(high))}" y1="{mid}" y2="{mid}"/>')
    body.append(f'<circle class="dot {cls}" cx="{_n(px(diff))}" cy="{mid}" r="4"/>')
    label = f"B − A = {_v(diff)}" + (
        f", 95% interval [{_v(low)}, {_v(high)}]" if low is not None and high is not None else ""
    )
    return _svg(width, height, label, body, "diff")


def span_bar(start: float, length: float, total: float, *, width: int = 160, height: int = 10) -> Markup:
    """Where a span ran within its trace: offset and length relative to the whole trace."""
    total = total if total > 0 else 1.0
    x = max(0.0, min(start / total, 1.0)) * width
    w = max(1.0, min(length / total, 1.0) * width)
    return Markup(
        f'<svg class="chart waterfall" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'aria-hidden="true">'
        f'<rect class="track" x="0" y="0" width="{width}" height="{height}"/>'
        f'<rect class="bar" x="{_n(x)}" y="0" width="{_n(min(w, width - x))}" height="{height}"/></svg>'
    )
