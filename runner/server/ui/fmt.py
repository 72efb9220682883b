"""How the pages write numbers, times, money and values (the templates' filters)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from runner._json import json_text
from runner.results.format import money, num, pvalue, seconds, signed

__all__ = ["FILTERS"]


# numbers are written by runner.results.format, the one place for the CLI, summaries and these pages


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


def pretty(value: Any) -> str:
    """Text as is; anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json_text(value, indent=2, ascii_only=False)


def short(value: Any, n: int = 120) -> str:
    """One line of at most ``n`` characters: ``key: value; ...`` for a dict of inputs."""
    if value is None:
        return ""
    if isinstance(value, dict):
        text = "; ".join(f"{k}: {v if isinstance(v, str) else json_text(v)}" for k, v in value.items())
    elif isinstance(value, str):
        text = value
    else:
        text = json_text(value, ascii_only=False)
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
