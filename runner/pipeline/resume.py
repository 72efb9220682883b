"""Reading a run's rows, and reopening a stored run: ``resume=True``, and the run a shard joins
or ``finish`` ends (:mod:`runner.pipeline.shards`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from runner.backends.base import Backend
from runner.errors import ConfigError, DatasetError, NotFoundError, RunNameError
from runner.pipeline.dataset import RowSource, collection_records, is_dataset_file, iter_records
from runner.pipeline.plan import RunPlan
from runner.pipeline.shards import IncompleteRunError, in_shard
from runner.results.result import Tally
from runner.results.stored import stored_log

__all__ = ["open_shared_run", "records", "resume"]

Done = set[tuple[str, int]]


async def records(plan: RunPlan, backend: Backend) -> Iterator[dict[str, Any]]:
    """The plan's data as records: a file, a list, a DataFrame, an iterable, or a stored dataset."""
    data = plan.data
    if isinstance(data, bool):
        raise DatasetError(f"data={data!r} is not a dataset")
    if isinstance(data, int) or (isinstance(data, str) and not is_dataset_file(data)):
        try:
            collection = await backend.load_dataset(data)
        except NotFoundError as exc:  # a misspelt name is a config error (exit 2), like a missing file
            raise DatasetError(
                f"{exc}; `python -m runner datasets list` shows the stored datasets, and a file path needs "
                "its suffix (.csv, .jsonl, .json)"
            ) from exc
        return iter(collection_records(collection))
    return iter_records(data)


async def resume(
    plan: RunPlan, backend: Backend, tally: Tally, run_name: str, only: Callable[[str], bool] | None = None
) -> tuple[dict[str, Any], Done]:
    """Reopen run ``run_name``: which row-trials are done, and their results in the tally.

    Rows stored as successful are kept (errored ones too with ``keep_errors``); the rest are
    deleted so they run again. A dataset whose rows changed since is refused."""
    project_name = plan.project_name
    info = await backend.find_run(project_name, run_name)
    if info is None:
        raise ConfigError(
            f"no run called {run_name!r} in project {project_name!r} to resume; "
            "`python -m runner list` shows the runs"
        )
    if info["name"] != plan.name:
        raise ConfigError(f"run {run_name!r} belongs to experiment {info['name']!r}, not {plan.name!r}")
    stored = await backend.experiment_rows(info["uuid"])
    if only is not None:  # a shard: its own rows only
        stored = [r for r in stored if only(str((r.get("metadata") or {}).get("row_id")))]
    current = await _scan(plan, backend)
    changed = sorted(
        {
            str(r["metadata"].get("row_id"))
            for r in stored
            if r["metadata"].get("row_id") in current
            and r["metadata"].get("row_hash") not in (None, current[r["metadata"]["row_id"]][0])
        }
    )
    gone = sorted({str(r["metadata"].get("row_id")) for r in stored} - set(current))
    if changed or gone:
        parts = []
        if changed:
            parts.append(f"{len(changed)} row(s) changed (e.g. row {changed[0]})")
        if gone:
            parts.append(f"{len(gone)} stored row(s) are no longer in the data (e.g. row {gone[0]})")
        raise DatasetError(
            f"cannot resume run {run_name!r}: the dataset changed since it ran: {'; '.join(parts)}. "
            "Start a new run instead"
        )
    done: Done = set()
    rerun: list[str] = []
    for r in stored:
        meta = r.get("metadata") or {}
        key = (str(meta.get("row_id")), int(meta.get("trial", 0)))
        if key in done:  # pragma: no cover - ids are unique per row-trial
            continue
        if r.get("status") == "success" or plan.options.keep_errors:
            done.add(key)
            log = stored_log(r, current[key[0]][1])
            tally.add(log, key[0], [r])
        else:
            rerun.append(r["trace_id"])
    if rerun:
        await backend.delete_traces(info["uuid"], rerun)
    return info, done


async def open_shared_run(plan: RunPlan, backend: Backend, tally: Tally) -> tuple[dict[str, Any], Done]:
    """The run a shard joins (created by whichever shard comes first), or the run ``finish``
    ends; with the row-trials already stored (this shard's only, for a shard)."""
    opts = plan.options
    run_name, project_name = opts.run_name, plan.project_name
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
                project_name=project_name, name=plan.name, run_name=run_name, metadata=plan.metadata
            )
        except RunNameError:
            info = await backend.find_run(project_name, run_name)  # another shard created it first
            if info is None:
                raise
    shard = opts.shard
    only = None if shard is None else lambda rid: in_shard(rid, shard)
    _, done = await resume(plan, backend, tally, run_name, only=only)
    if opts.finish_only:
        missing = []
        source = RowSource(await records(plan, backend), limit=opts.limit)
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


async def _scan(plan: RunPlan, backend: Backend) -> dict[str, tuple[str, Any]]:
    """Row id -> (content hash, target) of every row of the data, read once more."""
    if isinstance(plan.data, Iterator):
        raise ConfigError(
            "resume needs data that can be read again (a file, a list, a DataFrame or a stored dataset), "
            "not a one-shot iterator"
        )
    source = RowSource(await records(plan, backend), limit=plan.options.limit)
    return {row.id: (row.hash, row.target) for row in source}
