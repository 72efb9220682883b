"""How the pages write numbers, times, money and values (the templates' filters)."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

__all__ = ["FILTERS"]


def num(x: Any, digits: int = 3) -> str:
    """``0.823``, ``12,345``; ``-`` for nothing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    x = float(x)
    if x == 0:
        return "0"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.{digits}g}"


def signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3g}"


def seconds(x: float | None) -> str:
    """``85 µs``, ``12 ms``, ``1.25 s``, ``3 min 5 s``."""
    if x is None:
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    if x < 120:
        return f"{x:.2f} s"
    return f"{int(x // 60)} min {x % 60:.0f} s"


def money(x: float | None) -> str:
    if not x:
        return "-"
    return f"${x:.2f}" if x >= 100 else f"${x:.4g}"


def when(ts: str | None) -> str:
    """An ISO timestamp as ``2024-05-30 13:48:34`` UTC."""
    if not ts:
        return "-"
    try:
        t = dt.datetime.fromisoformat(ts)
    except ValueError:
        return ts
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def pvalue(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def pretty(value: Any) -> str:
    """Text as is; anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def short(value: Any, n: int = 120) -> str:
    """One line of at most ``n`` characters: ``key: value; ...`` for a dict of inputs."""
    if value is None:
        return ""
    if isinstance(value, dict):
        text = "; ".join(f"{k}: {v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in value.items())
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def last_line(text: str | None) -> str:
    """The last non-empty line of a traceback: the exception itself."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


FILTERS = {
    "num": num,
    "signed": signed,
    "seconds": seconds,
    "money": money,
    "when": when,
    "pvalue": pvalue,
    "pretty": pretty,
    "short": short,
    "last_line": last_line,
}
