"""An experiment's page: one experiment name in a project, across its runs, over time.

``GET /experiment?project=P&name=N`` charts each score as run means with their 95 % intervals,
latency, tokens and cost per row, and each dataset-level stat, one point per run at the time it
started (a time axis in UTC, see :mod:`runner.server.ui.trend`);
a point names its run when hovered and opens it when clicked; two points (or two rows of the
table under the charts) can be picked to compare.

The figures are the runs page's own: each run's scores come from :func:`~runner.server.ui.runs.listing`
(the run's cached view, summarised as ``python -m runner show`` does, or for a big run not read
yet the mean the backend pinned when it finished, without an interval); latency, tokens and cost
per row are the means the backend pinned at finish; dataset-level stats are those the run
recorded.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from runner.server.deps import StoreDep
from runner.server.ui.auth import PageOwner
from runner.server.ui.routes import _cache, render
from runner.server.ui.runs import Listing, listing
from runner.server.ui.trend import Point, trend

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

#: (label, pinned stat) of the per-row usage charts
USAGE = (("latency per row (s)", "Latency"), ("tokens per row", "Total Tokens"), ("cost per row ($)", "Cost"))


def _pinned(experiment: dict[str, Any]) -> dict[str, float]:
    return {
        p["var1"]: float(p["value"])
        for p in experiment.get("pinned_stats") or []
        if p.get("operation") == "mean" and p.get("value") is not None
    }


def _started(experiment: dict[str, Any]) -> dt.datetime | None:
    """When the run started (naive timestamps are UTC, as everywhere in the store)."""
    from runner.server.fill import parse_timestamp

    return parse_timestamp(experiment.get("created_at"))


def _charts(views: list[Listing]) -> list[tuple[str, str, Any]]:
    """(kind, name, chart) for every score, the usage figures and every dataset-level stat; each
    point at the time its run started."""
    out: list[tuple[str, str, Any]] = []
    at = [_started(v.experiment) for v in views]
    names: list[str] = []
    for v in views:
        names.extend(n for n in v.scores if n not in names)
    for name in names:
        points = []
        for i, v in enumerate(views):
            mean, low, high, n = v.scores.get(name, (None, None, None, None))
            note = f"n = {n} of {v.n_total}" if n is not None else "mean pinned at finish"
            points.append(Point(v.experiment["uuid"], v.experiment["run_name"], mean, low, high, note, at[i]))
        out.append(("score", name, trend(points, name=name)))
    for label, key in USAGE:
        points = [
            Point(v.experiment["uuid"], v.experiment["run_name"], _pinned(v.experiment).get(key), at=at[i])
            for i, v in enumerate(views)
        ]
        if any(p.mean is not None for p in points):
            out.append(("usage", label, trend(points, name=label)))
    stats: list[str] = []
    for v in views:
        stats.extend(d["name"] for d in v.experiment.get("dataset_level_stats") or [] if d["name"] not in stats)
    for name in stats:
        points = []
        for i, v in enumerate(views):
            found = [d for d in v.experiment.get("dataset_level_stats") or [] if d["name"] == name]
            score = found[0]["score"] if found else None
            points.append(Point(v.experiment["uuid"], v.experiment["run_name"], score, at=at[i]))
        out.append(("dataset", name, trend(points, name=name)))
    return out


@router.get("/experiment", response_class=HTMLResponse)
def experiment_page(
    request: Request, store: StoreDep, owner: PageOwner, project: str = "", name: str = ""
) -> HTMLResponse:
    """One experiment's runs over time."""
    runs = [e for e in store.list_experiments(owner, project_name=project or None) if e["name"] == name]
    if not name or not runs:
        what = f"experiment {name!r}" + (f" in project {project!r}" if project else "")
        return render(request, "error.html", 404, title="Not found", message=f"There is no {what} here.")
    runs.sort(key=lambda e: e["created_at"])
    views = [listing(_cache(request), store, e, owner) for e in runs]
    score_names: list[str] = []
    for v in views:
        score_names.extend(n for n in v.scores if n not in score_names)
    return render(
        request,
        "experiment.html",
        title=f"{name} over time",
        name=name,
        project=project or runs[0]["project_name"],
        views=views,
        pinned=[_pinned(v.experiment) for v in views],
        score_names=score_names,
        charts=_charts(views),
    )
