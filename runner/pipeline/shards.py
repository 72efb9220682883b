"""Scheduler-free shards: many processes fill one run, and ``finish`` ends it once.

``--shard I/N`` runs the rows whose stable row id hashes into shard ``I`` of ``N`` (numbered
from 0, like Kubernetes' ``JOB_COMPLETION_INDEX``) into the run named by ``--run-name``: the
first shard to start creates it, the others (and a shard run again after it died) join it and
skip their rows already stored. A shard never finishes the run; ``finish`` checks that every
row of the dataset is stored, names the missing ones otherwise, and computes the dataset-level
stats from all stored rows — the same numbers one unsharded run gives — before calling
``/finished``. Nothing is merged from per-shard summaries.

>>> parse_shard("3/8")
(3, 8)
>>> parse_shard("auto/4", {"JOB_COMPLETION_INDEX": "2"})
(2, 4)
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, RunNameError
from runner.options import RunOptions
from runner.pipeline.dataset import Row, RowSource

if TYPE_CHECKING:
    from runner.experiment import Experiment
    from runner.pipeline.run import Run
    from runner.results.result import Result

__all__ = ["IncompleteRunError", "afinish", "in_shard", "parse_shard", "shard_items"]

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


async def open_shared_run(run: Run, project_name: str, opts: RunOptions) -> tuple[dict[str, Any], set[tuple[str, int]]]:
    """The run a shard joins (created by whichever shard comes first), or the run ``finish``
    ends; with the row-trials already stored (this shard's only, for a shard)."""
    backend, exp = run.backend, run.exp
    run_name = opts.run_name
    assert run_name is not None
    info = await backend.find_run(project_name, run_name)
    if info is None:
        if opts.finish_only:
            raise ConfigError(
                f"no run called {run_name!r} in project {project_name!r} to finish; "
                "its shards create it (`python -m runner list` shows the runs)"
            )
        try:
            info = await backend.create_experiment(
                project_name=project_name, name=exp.name, run_name=run_name, metadata=_metadata(exp)
            )
        except RunNameError:
            info = await backend.find_run(project_name, run_name)  # another shard created it first
            if info is None:
                raise
    shard = opts.shard
    only = None if shard is None else lambda rid: in_shard(rid, shard)
    _, done = await run._resume(project_name, run_name, only=only)
    if opts.finish_only:
        missing = []
        source = RowSource(await run._records(), limit=opts.limit)
        for row in source:
            missing += [(row.index, row.id, t) for t in range(opts.n_trials) if (row.id, t) not in done]
        if missing:
            shown = ", ".join(f"row {i} (id {rid}) trial {t}" for i, rid, t in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise IncompleteRunError(
                f"run {run_name!r} is not complete: {len(missing)} row-trial(s) are not stored: {shown}{more}. "
                "Run the shard(s) that hold them again (a shard skips what it already stored), then finish"
            )
    return info, done


def _metadata(exp: Experiment) -> dict[str, str]:
    from runner.results.result import mapping_str

    return mapping_str(exp.metadata or {})


async def afinish(exp: Experiment, run_name: str, *, quiet: bool = False, limit: int | None = None) -> Result:
    """Finish the sharded run ``run_name`` of ``exp``: every row stored, stats from all of them.

    Raises :class:`IncompleteRunError` naming the missing rows when some shard has not stored
    its rows yet. Finishing twice is harmless (the same stats are sent again)."""
    from runner.pipeline.run import Run
    from runner.settings import Settings

    settings = Settings.from_env()
    opts = exp._options(run_name, settings, {"quiet": quiet, "resume": True, "keep_errors": True, "limit": limit})
    opts = dataclasses.replace(opts, finish_only=True)
    backend = exp._backend(settings)
    try:
        return await Run(exp, opts, backend, settings).execute()
    finally:
        await backend.aclose()


def finish(exp: Experiment, run_name: str, *, quiet: bool = False) -> Result:
    """:func:`afinish` from sync code."""
    return asyncio.run(afinish(exp, run_name, quiet=quiet))
