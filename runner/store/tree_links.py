"""Trace trees from stored spans, built without recursion: a cycle is cut, depth is no error.

Spans name their parent (``parent_trace_id``) and nothing stops a client from naming a span of
its own subtree (``A.parent = B``, ``B.parent = A``), nor from nesting spans thousands deep (a
recursive ``@trace``: an agent loop). :func:`link` attaches every span to its parent by walking
from the given start spans with an explicit stack, so:

* a span is reached at most once per read: the edge that would close a cycle is dropped, and a
  span no start reaches (a cycle hanging off nothing, or an orphan) is left out of those trees;
* a root (``trace_id == root_trace_id``) is never anyone's child, even if it names a parent;
* ``children_logs`` nest at most :data:`MAX_NESTING` levels below the start span. Spans deeper
  than that are listed, in walk order, among the children of their ancestor at that level
  (their ``parent_trace_id`` still names their real parent), so that every JSON reader (most
  stop at 200 to 512 nested levels) can read any tree we send;
* roll-ups (scores, tokens, cost) follow the real parents, whatever the nesting shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["MAX_NESTING", "link"]

#: how many levels of ``children_logs`` a tree read nests (two JSON levels each)
MAX_NESTING = 64

_USAGE = ("input_tokens", "output_tokens", "total_tokens", "cost")


def link(nodes: dict[str, dict[str, Any]], starts: Iterable[str]) -> None:
    """Attach the spans in ``nodes`` (by id) below each start id, rolling up scores and usage.

    Each start's node gets ``children_logs`` (and ``children``, their ids); a start already
    reached from an earlier one is skipped."""
    kids: dict[str, list[dict[str, Any]]] = {}
    for d in sorted(nodes.values(), key=lambda n: (n.get("depth") or 0, n.get("execution_order") or 0)):
        tid = d["trace_id"]
        d["children_logs"] = []
        d["children"] = []
        parent = d.get("parent_trace_id")
        if parent and parent != tid and parent in nodes and d.get("root_trace_id") != tid:
            kids.setdefault(parent, []).append(d)
    seen: set[str] = set()
    for start in starts:
        if start in nodes and start not in seen:
            _walk(nodes[start], kids, seen)


def _walk(top: dict[str, Any], kids: dict[str, list[dict[str, Any]]], seen: set[str]) -> None:
    order: list[tuple[dict[str, Any], dict[str, Any] | None]] = []  # (span, real parent), pre-order
    level: dict[str, int] = {top["trace_id"]: 0}
    shown_under: dict[str, dict[str, Any]] = {}  # span id -> the span whose children_logs hold it
    seen.add(top["trace_id"])
    stack: list[tuple[dict[str, Any], dict[str, Any] | None]] = [(top, None)]
    while stack:
        node, parent = stack.pop()
        order.append((node, parent))
        tid = node["trace_id"]
        if parent is not None:
            depth = level[parent["trace_id"]] + 1
            level[tid] = depth
            holder = parent if depth <= MAX_NESTING else shown_under[parent["trace_id"]]
            holder["children_logs"].append(node)
            holder["children"].append(tid)
            # below the deepest level shown, descendants join their ancestor there as siblings
            shown_under[tid] = node if depth < MAX_NESTING else holder
        else:
            shown_under[tid] = node
        fresh = [c for c in kids.get(tid, ()) if c["trace_id"] not in seen]
        for child in fresh:
            seen.add(child["trace_id"])
        stack.extend((child, node) for child in reversed(fresh))
    _roll_up(order)


def _roll_up(order: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
    """Children before parents: each span's own scores plus the mean of each other score name
    over its descendants; its tokens and cost plus its descendants' (when it has any)."""
    below: dict[str, dict[str, list[float]]] = {}  # span id -> score name -> [sum, count] below it
    usage: dict[str, list[float]] = {}  # span id -> usage of its subtree
    children: dict[str, list[dict[str, Any]]] = {}
    for node, parent in order:
        if parent is not None:
            children.setdefault(parent["trace_id"], []).append(node)
    for node, _ in reversed(order):
        tid = node["trace_id"]
        own = list(node.get("scores") or [])
        acc: dict[str, list[float]] = {}
        total = [0.0, 0.0, 0.0, 0.0]
        mine = children.get(tid, ())
        for child in mine:
            cid = child["trace_id"]
            for s in child.pop("_own_scores"):
                _add(acc, s["name"], float(s["score"]), 1)
            for name, (sm, n) in below.pop(cid).items():
                _add(acc, name, sm, n)
            for i, v in enumerate(usage.pop(cid)):
                total[i] += v
        names = {s["name"] for s in own}
        node["scores"] = [dict(s) for s in own] + [
            {"name": k, "score": v[0] / v[1]} for k, v in acc.items() if k not in names
        ]
        node["_own_scores"] = own
        below[tid] = acc
        if mine:
            for i, key in enumerate(_USAGE[:3]):
                node[key] = int((node.get(key) or 0) + total[i])
            node["cost"] = (node.get("cost") or 0.0) + total[3]
        usage[tid] = [float(node.get(k) or 0) for k in _USAGE]
    top = order[0][0]
    top.pop("_own_scores", None)


def _add(acc: dict[str, list[float]], name: str, value: float, count: int) -> None:
    entry = acc.get(name)
    if entry is None:
        acc[name] = [value, count]
    else:
        entry[0] += value
        entry[1] += count
