"""Values of a span as a reader wants them: long text folded, JSON pretty-printed and collapsible,
and an LLM call as a conversation.

Everything returned as :class:`markupsafe.Markup` is built from escaped text only (no inline
style, no script), so the page's Content-Security-Policy holds. Folding uses ``<details>``, which
works without script.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from markupsafe import Markup

from runner._json import json_text

__all__ = ["FOLD_CHARS", "conversation", "foldable", "json_tree"]

#: text longer than this is folded to its first line(s)
FOLD_CHARS = 600
#: JSON containers are open down to this depth, folded below it
OPEN_DEPTH = 2
#: items of one JSON container shown before the rest are left out (the raw value is one click away)
MAX_ITEMS = 200


def _as_json(value: Any) -> Any:
    """A dict or list, also when sent as a JSON string (as the SDKs send outputs); else None."""
    if isinstance(value, (dict, list)):
        return value
    if isinstance(value, str) and value[:1] in "[{":
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, (dict, list)) else None
    return None


def _leaf(value: Any) -> str:
    text = json_text(value, ascii_only=False)
    kind = "null" if value is None else type(value).__name__
    if isinstance(value, str) and len(value) > FOLD_CHARS:
        return _fold_text(value, "json-str")
    return f'<span class="j-{escape(kind)}">{escape(text)}</span>'


def json_tree(value: Any, depth: int = 0) -> str:
    """``value`` as nested ``<details>``: each object and array collapsible, leaves typed."""
    if isinstance(value, dict):
        items = list(value.items())
        opening, closing, label = "{", "}", f"{len(items)} key(s)"
        body = "".join(
            f'<li><span class="j-key">{escape(json.dumps(str(k), ensure_ascii=False))}</span>: '
            f"{json_tree(v, depth + 1)}</li>"
            for k, v in items[:MAX_ITEMS]
        )
    elif isinstance(value, list):
        items = list(enumerate(value))
        opening, closing, label = "[", "]", f"{len(items)} item(s)"
        body = "".join(f"<li>{json_tree(v, depth + 1)}</li>" for _, v in items[:MAX_ITEMS])
    else:
        return _leaf(value)
    if not items:
        return f'<span class="j-empty">{opening}{closing}</span>'
    if len(items) > MAX_ITEMS:
        body += f'<li class="more">… {len(items) - MAX_ITEMS} more</li>'
    open_attr = " open" if depth < OPEN_DEPTH else ""
    return (
        f'<details class="j"{open_attr}><summary>{opening} <small>{label}</small></summary>'
        f'<ul class="j">{body}</ul>{closing}</details>'
    )


def _fold_text(text: str, cls: str) -> str:
    head = text[:200].rstrip()
    return (
        f'<details class="fold"><summary><span class="fold-head">{escape(head)}…</span> '
        f"<small>({len(text):,} characters: show all)</small></summary>"
        f'<pre class="value {cls}">{escape(text)}</pre></details>'
    )


def foldable(value: Any, cls: str = "") -> Markup:
    """A span's value: JSON (also a JSON string) as a collapsible tree, long text folded, short
    text as is. ``cls`` is added to the element holding the value (``output``, ``traceback``)."""
    tree = _as_json(value)
    if tree is not None:
        return Markup(f'<div class="value json {escape(cls)}">{json_tree(tree)}</div>')
    text = value if isinstance(value, str) else json_text(value, indent=2, ascii_only=False)
    if len(text) > FOLD_CHARS:
        return Markup(_fold_text(text, escape(cls)))
    return Markup(f'<pre class="value {escape(cls)}">{escape(text)}</pre>')


def _content(content: Any) -> str:
    """A message's content: text (folded when long), multimodal parts, or JSON."""
    if content is None or content == "":
        return ""
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts = []
        for p in content:
            if p.get("type") == "text":
                parts.append(str(foldable(p.get("text", ""), "msg-text")))
            elif p.get("type") == "image_url":
                url = (
                    (p.get("image_url") or {}).get("url", "")
                    if isinstance(p.get("image_url"), dict)
                    else p.get("image_url")
                )
                parts.append(f'<p class="msg-part">image: <code>{escape(str(url)[:120])}</code></p>')
            else:
                parts.append(str(foldable(p, "msg-json")))
        return "".join(parts)
    return str(foldable(content, "msg-text"))


def _tool_calls(calls: Any) -> str:
    out = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict):
            continue
        fn: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else call
        name = fn.get("name") or call.get("name") or "?"
        args: Any = fn.get("arguments", fn.get("input", ""))
        out.append(
            f'<div class="tool-call"><span class="tool-name">→ {escape(str(name))}</span>'
            f"{' <code>' + escape(str(call['id'])) + '</code>' if call.get('id') else ''}"
            f"{foldable(args, 'tool-args') if args not in ('', None) else ''}</div>"
        )
    return "".join(out)


def _message(m: dict[str, Any], extra_cls: str = "") -> str:
    role = str(m.get("role") or "user")
    head = f'<span class="role">{escape(role)}</span>'
    if m.get("name"):
        head += f' <span class="msg-name">{escape(str(m["name"]))}</span>'
    if m.get("tool_call_id"):
        head += f' <span class="msg-name">result of <code>{escape(str(m["tool_call_id"]))}</code></span>'
    body = _content(m.get("content"))
    calls = m.get("tool_calls") or m.get("function_call")
    if calls:
        body += _tool_calls(calls if isinstance(calls, list) else [calls])
    return f'<li class="msg role-{escape(role)}{extra_cls}"><div class="msg-head">{head}</div>{body}</li>'


def _output_message(output: Any) -> str:
    """The reply: text, or tool calls when the output is a JSON list of them."""
    parsed = _as_json(output)
    if (
        isinstance(parsed, list)
        and parsed
        and all(isinstance(c, dict) and ("function" in c or "name" in c) for c in parsed)
    ):
        return _message({"role": "assistant", "tool_calls": parsed}, " reply")
    if isinstance(parsed, dict) and ("tool_calls" in parsed or "role" in parsed):
        return _message({"role": "assistant", **parsed}, " reply")
    return _message({"role": "assistant", "content": output}, " reply")


def conversation(span: dict[str, Any]) -> Markup:
    """An LLM span (one with ``configuration.messages``) as its conversation: each message with
    its role, tool calls and tool results; then the reply (the span's output)."""
    config = span.get("configuration") or {}
    messages = [m for m in (config.get("history") or []) + (config.get("messages") or []) if isinstance(m, dict)]
    items = [_message(m) for m in messages]
    if span.get("output") not in (None, ""):
        items.append(_output_message(span["output"]))
    return Markup(f'<ol class="conversation">{"".join(items)}</ol>')


def llm_params(span: dict[str, Any]) -> list[tuple[str, str]]:
    """The provider and the model's parameters as (name, value) pairs, those that were set (the
    model itself is among the span's facts)."""
    config = span.get("configuration") or {}
    out = [(k, str(config[k])) for k in ("provider",) if config.get(k)]
    params = config.get("model_params") or {}
    out.extend((str(k), json_text(v)) for k, v in params.items() if v is not None)
    if config.get("functions"):
        names = [
            str(f.get("name") or (f.get("function") or {}).get("name"))
            for f in config["functions"]
            if isinstance(f, dict)
        ]
        out.append(("tools", ", ".join(names)))
    return out


def is_llm(span: dict[str, Any]) -> bool:
    config = span.get("configuration") or {}
    return bool(config.get("messages") or config.get("history"))


def diff_words(a: Any, b: Any) -> tuple[Markup, Markup]:
    """Two outputs with what differs marked: words only in A in ``<del>``, only in B in ``<ins>``."""
    import difflib
    import re

    ta, tb = ("" if a is None else str(a)), ("" if b is None else str(b))
    wa, wb = re.findall(r"\s+|\w+|[^\w\s]", ta), re.findall(r"\s+|\w+|[^\w\s]", tb)
    out_a: list[str] = []
    out_b: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        left, right = escape("".join(wa[i1:i2])), escape("".join(wb[j1:j2]))
        if op == "equal":
            out_a.append(left)
            out_b.append(right)
            continue
        if left:
            out_a.append(f"<del>{left}</del>")
        if right:
            out_b.append(f"<ins>{right}</ins>")
    return Markup("".join(out_a)), Markup("".join(out_b))
