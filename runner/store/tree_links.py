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

One read holds at most :data:`MAX_SPANS` spans of a tree (:func:`fetch`; a caller may ask for up
to :data:`MAX_SPANS_LIMIT`): the first ones logged. A tree cut so carries ``_spans`` = ``(shown,
total)`` on its root node (the server sends it as headers, the UI as a notice), and its roll-ups
cover the spans read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

__all__ = ["MAX_NESTING", "MAX_SPANS", "MAX_SPANS_LIMIT", "fetch", "link"]

#: how many levels of ``children_logs`` a tree read nests (two JSON levels each)
MAX_NESTING = 64
#: spans of one tree in one read, by default and at most
MAX_SPANS, MAX_SPANS_LIMIT = 10_000, 100_000

Query = Callable[[str, Sequence[Any]], list[sqlite3.Row]]


def fetch(query: Query, roots: Sequence[str], owner: str, max_spans: int = MAX_SPANS) -> dict[str, dict[str, Any]]:
    """The stored spans of the traces ``roots`` (the roots and their first ``max_spans - 1``
    descendants each, in logging order), by id, parsed."""
    nodes: dict[str, dict[str, Any]] = {}
    for i in range(0, len(roots), 500):
        chunk = list(roots[i : i + 500])
        marks = ",".join("?" * len(chunk))
        # an index-only count says which trees are too big to read whole (other tenants' spans
        # may count here; they are never read)
        big = {
            r[0]: int(r[1])
            for r in query(
                f"SELECT root_trace_id, count(*) FROM traces WHERE is_root=0 AND root_trace_id IN ({marks})"
                " GROUP BY root_trace_id HAVING count(*) >= ?",
                (*chunk, max_spans),
            )
        }
        small = [r for r in chunk if r not in big]
        rows = list(query(f"SELECT data FROM traces WHERE owner=? AND trace_id IN ({marks})", (owner, *chunk)))
        if small:
            marks_small = ",".join("?" * len(small))
            rows += query(
                f"SELECT data FROM traces WHERE owner=? AND is_root=0 AND root_trace_id IN ({marks_small})",
                (owner, *small),
            )
        for root in big:
            rows += query(
                "SELECT data FROM traces WHERE owner=? AND is_root=0 AND root_trace_id=? ORDER BY rowid LIMIT ?",
                (owner, root, max_spans - 1),
            )
        for r in rows:
            d = orjson.loads(r[0])
            nodes[d["trace_id"]] = d
        for root in big:
            if root in nodes:
                total = int(
                    query("SELECT count(*) FROM traces WHERE owner=? AND is_root=0 AND root_trace_id=?", (owner, root))[
                        0
                    ][0]
                )
                if total >= max_spans:
                    nodes[root]["_spans"] = (max_spans, total + 1)
    return nodes


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
            if "depth" not in node:  # posted without one (an SDK): its real parent's plus one
                node["depth"] = int(parent.get("depth") or 0) + 1
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


def _add(acc: dict[str, list[float]], name: str, value: float, count: float) -> None:
    entry = acc.get(name)
    if entry is None:
        acc[name] = [value, count]
    else:
        entry[0] += value
        entry[1] += count
