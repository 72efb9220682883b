"""``--shard I/N`` on ``run``, ``--finish-when-complete``, and the ``finish`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner._json import json_text
from runner.errors import ConfigError

if TYPE_CHECKING:
    from runner.experiment import Experiment

__all__ = ["finish_command", "finish_when_complete", "shard_options"]


def shard_options(args: argparse.Namespace, names: Sequence[str | None]) -> dict[str, Any]:
    """The run options ``--shard`` (and ``--finish-when-complete``) ask for."""
    shard = getattr(args, "shard", None)
    if shard is None:
        if getattr(args, "finish_when_complete", False):
            raise ConfigError("--finish-when-complete finishes a sharded run: use it with --shard I/N")
        return {}
    from runner.pipeline.shards import parse_shard

    if any(n is None for n in names):
        raise ConfigError("--shard fills one run from many processes: name it with --run-name NAME (or --run-prefix P)")
    if getattr(args, "resume", False):
        raise ConfigError("--shard already continues the named run (stored rows are skipped): drop --resume")
    return {"shard": parse_shard(shard)}


def finish_when_complete(experiments: Sequence[Experiment], names: Sequence[str | None], quiet: bool) -> int:
    """After a shard: finish each run whose rows are all stored; say which are still incomplete."""
    from runner.experiment import finish
    from runner.pipeline.shards import IncompleteRunError

    for exp, name in zip(experiments, names, strict=True):
        assert name is not None
        try:
            result = finish(exp, name, quiet=True)
        except IncompleteRunError as exc:
            print(f"not finishing {exp.name!r} yet: {' '.join(str(exc).split())}", file=sys.stderr)
            continue
        print(f"finished run {name!r} of {exp.name!r}: every row is stored", file=sys.stderr)
        if not quiet:
            print(result.summary_text(), flush=True)
    return 0


def finish_command(args: argparse.Namespace) -> int:
    """Finish the runs the shards filled; 0 when every one is complete and finished, else 1."""
    from runner.cli.config import collect_experiments, load_config, run_names, select, with_flags
    from runner.experiment import afinish
    from runner.pipeline.shards import IncompleteRunError

    path = Path(args.config)
    module = load_config(path)
    experiments = select(collect_experiments(module, path), args.only, path)
    names = run_names(experiments, args)
    flags = argparse.Namespace(**{"n_workers": None, "timeout": None, "retries": None, "executor": None, **vars(args)})
    prepared = [with_flags(e, flags, path) for e in experiments]
    import asyncio

    code = 0
    summaries = []
    for exp, name in zip(prepared, names, strict=True):
        assert name is not None
        try:
            result = asyncio.run(afinish(exp, name, quiet=True, limit=args.limit))
        except IncompleteRunError as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            code = 1
            continue
        summaries.append(result.to_dict() if hasattr(result, "to_dict") else {"name": result.name})
        print(result.summary_text(), file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.json:
        print(json_text(summaries, indent=2))
    return code
