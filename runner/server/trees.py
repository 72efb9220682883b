"""Trace trees as the server returns them: never ``null`` where a reader expects a list or dict.

The official SDK posts ``null`` for ``configuration.messages`` and friends but its readers
iterate over them; ``TraceLogTreeSchema`` (the response model) fills the top-level fields, and
:func:`clean_tree` the nested ones it cannot know about.
"""

from __future__ import annotations

from typing import Any

__all__ = ["clean_tree"]

_CONFIG_LISTS = ("messages", "history", "functions")
_LISTS = ("evaluation_metric_names", "children_ids", "evaluation_metric_ids")


def clean_tree(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` and its ``children_logs``, with the lists and dicts the schema may leave null emptied."""
    for key in _LISTS:
        if node.get(key) is None:
            node[key] = []
    config = node.get("configuration")
    if isinstance(config, dict):
        for key in _CONFIG_LISTS:
            if key in config and config[key] is None:
                config[key] = []
        if "model_params" in config and config["model_params"] is None:
            config["model_params"] = {}
    for child in node.get("children_logs") or ():
        clean_tree(child)
    return node
