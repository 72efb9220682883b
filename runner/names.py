"""Generated names and ids: run names, short, readable, unique enough (``brisk-otter-4f2a``),
and the trace and span ids (:func:`new_id`)."""

from __future__ import annotations

import os
import random
import re
import secrets

__all__ = ["generate_run_name", "new_id", "sanitise_run_name"]

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


_rand = random.Random()


def _reseed_after_fork() -> None:
    # a forked child (multiprocessing, gunicorn-style workers) inherits the parent's generator
    # state: without a fresh seed, two children would hand out the same span ids
    _rand.seed()


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_id() -> str:
    """A random version-4 UUID string.

    ``uuid.uuid4()`` reads ``os.urandom``, which costs tens of microseconds a call on some
    virtual machines; trace ids need uniqueness, not secrecy, so a seeded-from-urandom PRNG does.
    """
    h = "%032x" % ((_rand.getrandbits(128) & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC << 60) | (0x8 << 60))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
