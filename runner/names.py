"""Generated run names: short, readable, unique enough (``brisk-otter-4f2a``)."""

from __future__ import annotations

import re
import secrets

__all__ = ["generate_run_name", "sanitise_run_name"]

_ADJECTIVES = (
    "amber", "bold", "brisk", "calm", "clever", "crisp", "eager", "fair", "gentle", "golden", "keen",
    "lively", "lucid", "mellow", "nimble", "quiet", "rapid", "sharp", "steady", "swift", "vivid", "witty",
)
_NOUNS = (
    "badger", "condor", "falcon", "gecko", "heron", "ibis", "lynx", "marten", "newt", "otter", "panda",
    "quail", "raven", "salmon", "tapir", "urchin", "viper", "walrus", "yak", "zebra", "beacon", "comet",
)


def generate_run_name() -> str:
    """A new run name made of letters, digits and dashes only."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.token_hex(2)}"


def sanitise_run_name(text: str) -> str:
    """``text`` as a valid run name: each run of other characters becomes ``-`` (at most 100).

    >>> sanitise_run_name("feat/new-prompt"), sanitise_run_name("v1.2")
    ('feat-new-prompt', 'v1-2')
    """
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:100].strip("-")
    return name or "run"
