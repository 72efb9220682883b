"""How every number is written: run summaries, ``show``, ``list``, comparisons and the web UI.

One rule for scores and stats: three significant digits, trailing zeros kept, so the numbers of
a table line up and read alike (``1.00 [0.929, 1.00]`` beside ``0.481``; ``0.790`` beside
``0.898``); from a thousand on, no decimals (``12346``); whole numbers (counts) with thousands
separators (``12,345`` rows). Durations pick their unit (``85 µs``, ``12 ms``, ``1.25 s``, ``3 min 5 s``), so a fast
run is not "in 0.00 s". ``-`` stands for no value.

>>> num(1.0), num(0.48123), num(0.0879812), num(12345.6), num(None), num(7)
('1.00', '0.481', '0.0880', '12346', '-', '7')
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["compact", "interval", "money", "num", "pvalue", "seconds", "signed"]


def num(x: Any, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits (see the module docstring); ``-`` for nothing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    x = float(x)
    if abs(x) >= 1000:  # no separators: "[1200, 1301]" stays readable as an interval
        return f"{x:.0f}"
    text = f"{x:#.{digits}g}"
    return text.rstrip(".") if "e" not in text else text


def compact(x: float | None) -> str:
    """``x`` with at most 3 significant digits and no trailing zeros (``0.75``, ``0.000122``), as
    gate messages quote the numbers they compare; ``n/a`` for nothing."""
    return "n/a" if x is None else f"{x:.3g}"


def signed(x: float | None) -> str:
    """A difference, always with its sign: ``+0.120``, ``-0.0500``."""
    if x is None or not math.isfinite(x):
        return "-"
    text = num(abs(x))  # an int stays an int
    return ("-" if x < 0 else "+") + text


def interval(low: float | None, high: float | None) -> str:
    """``[0.761, 0.867]``, or ``""`` without an interval."""
    if low is None or high is None:
        return ""
    return f"[{num(low)}, {num(high)}]"


def pvalue(p: float | None) -> str:
    """``0.032``, ``<0.001``."""
    if p is None or not math.isfinite(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def seconds(x: float | None) -> str:
    """``85 µs``, ``12 ms``, ``1.25 s``, ``3 min 5 s``."""
    if x is None or not math.isfinite(x):
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    if x < 120:
        return f"{x:.2f} s"
    return f"{int(x // 60)} min {x % 60:.0f} s"


def money(x: float | None) -> str:
    """``$0.0123``, ``$150.00``; ``-`` for no cost."""
    if not x:
        return "-"
    return f"${x:.2f}" if x >= 100 else f"${x:.4g}"
