"""Scheduler-free shards: many processes fill one run, and ``finish`` ends it once.

``--shard I/N`` runs the rows whose stable row id hashes into shard ``I`` of ``N`` (numbered
from 0, like Kubernetes' ``JOB_COMPLETION_INDEX``) into the run named by ``--run-name``: the
first shard to start creates it, the others (and a shard run again after it died) join it and
skip their rows already stored. A shard never finishes the run; ``finish`` checks that every
row of the dataset is stored, names the missing ones otherwise, and computes the dataset-level
stats from all stored rows — the same numbers one unsharded run gives — before calling
``/finished`` (:func:`runner.experiment.afinish`; opening the shared run is
:func:`runner.pipeline.resume.open_shared_run`). Nothing is merged from per-shard summaries.

>>> parse_shard("3/8")
(3, 8)
>>> parse_shard("auto/4", {"JOB_COMPLETION_INDEX": "2"})
(2, 4)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping

from runner.errors import ConfigError
from runner.pipeline.dataset import Row

__all__ = ["IncompleteRunError", "in_shard", "parse_shard", "shard_items"]

#: environment variables that carry a job's index, read by ``--shard auto/N``
INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")


class IncompleteRunError(ConfigError):
    """``finish`` found rows of the dataset that no shard has stored yet."""


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``"I/N"`` (or ``"auto/N"``: ``I`` from the job's index variable) as ``(I, N)``."""
    env = os.environ if environ is None else environ
    index_text, sep, count_text = str(text).partition("/")
    try:
        count = int(count_text)
    except ValueError:
        count = 0
    if not sep or count < 1:
        raise ConfigError(f"--shard {text!r}: expected I/N with N >= 1 and 0 <= I < N, e.g. --shard 3/8")
    if index_text == "auto":
        found = next(((v, env[v]) for v in INDEX_VARIABLES if env.get(v, "").strip()), None)
        if found is None:
            raise ConfigError(
                f"--shard auto/{count}: neither {' nor '.join(INDEX_VARIABLES)} is set; "
                f"give the index, e.g. --shard 0/{count}"
            )
        variable, index_text = found
    else:
        variable = None
    try:
        index = int(index_text)
    except ValueError:
        index = -1
    if not 0 <= index < count:
        origin = f" (from ${variable})" if variable else ""
        raise ConfigError(f"--shard {text!r}: the index{origin} must be a whole number from 0 to {count - 1}")
    return index, count


def in_shard(row_id: str, shard: tuple[int, int]) -> bool:
    """Whether the row with this stable id belongs to ``shard``: the same answer in every process."""
    digest = hashlib.blake2b(str(row_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard[1] == shard[0]


def shard_items(items: Iterator[tuple[Row, int]], shard: tuple[int, int] | None) -> Iterator[tuple[Row, int]]:
    if shard is None:
        return items
    return (it for it in items if in_shard(it[0].id, shard))
