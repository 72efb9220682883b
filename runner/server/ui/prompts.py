"""The Prompts pages: every prompt, and one prompt's versions side by side with their diff, its
deployments with their history, and forms to deploy a version or roll a deployment back.

=========================================  ===================================================
``GET /prompts``                           every prompt: latest version, deployments
``GET /prompts/{name}``                    versions; ``a`` and ``b`` (version numbers) are
                                           shown side by side with a diff (default: the two
                                           latest); deployments and their history
``POST /prompts/{name}/deploy``            form: ``version``, ``deployment_id`` (empty: the
                                           prompt's deployment, or a new one)
``POST /prompts/{name}/rollback``          form: ``deployment_id``
=========================================  ===================================================

The forms post to this server only (``form-action 'self'``), and a POST whose ``Origin`` is
another site is refused: on a server without keys a page elsewhere must not deploy prompts.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from runner.errors import ConfigError, NotFoundError
from runner.proxy.prompts import spec_text
from runner.server.deps import StoreDep
from runner.server.ui.auth import PageOwner
from runner.server.ui.routes import not_found, render, whole

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

#: who the UI's deployments are recorded as
UI_AUTHOR = "web UI"


@router.get("/prompts", response_class=HTMLResponse)
def prompts_page(request: Request, store: StoreDep, owner: PageOwner) -> HTMLResponse:
    """Every prompt of the tenant, by name."""
    return render(request, "prompts.html", title="Prompts", prompts=store.list_prompts(owner))


def _diff_lines(a: str, b: str, label_a: str, label_b: str) -> list[tuple[str, str]]:
    """``(kind, text)`` per line of the unified diff: ``add``, ``del``, ``hunk``, ``head`` or ``ctx``."""
    out = []
    for line in difflib.unified_diff(a.splitlines(), b.splitlines(), label_a, label_b, lineterm=""):
        if line.startswith(("---", "+++")):
            kind = "head"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append((kind, line))
    return out


def _prompt_page(request: Request, store: StoreDep, owner: str, name: str, *, status: int = 200,
                 error: str | None = None) -> HTMLResponse:
    try:
        versions = store.list_prompt_versions(name, owner)
    except NotFoundError:
        return not_found(request, f"There is no prompt {name!r} here.")
    deployments = store.prompt_deployments(name, owner)
    by_number = {v["version"]: v for v in versions}
    latest = versions[-1]["version"]
    p = request.query_params
    b = whole(p.get("b", ""), latest)
    a = whole(p.get("a", ""), max(1, b - 1))
    problems = [f"there is no version {n}: showing the latest" for n in (a, b) if n not in by_number]
    va, vb = by_number.get(a, by_number[max(1, latest - 1)]), by_number.get(b, by_number[latest])
    text_a, text_b = spec_text(va["spec"]), spec_text(vb["spec"])
    serving: dict[int, list[str]] = {}
    for d in deployments:
        serving.setdefault(d["version"], []).append(d["deployment_id"])
    return render(
        request,
        "prompt.html",
        status,
        title=f"Prompt {name}",
        name=name,
        versions=versions,
        deployments=deployments,
        serving=serving,
        va=va,
        vb=vb,
        text_a=text_a,
        text_b=text_b,
        diff=_diff_lines(text_a, text_b, va["ref"], vb["ref"]),
        problems=problems,
        error=error,
        done=p.get("done", ""),
    )


@router.get("/prompts/{name}", response_class=HTMLResponse)
def prompt_page(request: Request, name: str, store: StoreDep, owner: PageOwner) -> HTMLResponse:
    """One prompt: two versions side by side with their diff, its versions and deployments."""
    return _prompt_page(request, store, owner, name)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # no Origin: not a browser's cross-site form post
    return origin.rstrip("/") == str(request.base_url).rstrip("/")


async def _form(request: Request) -> dict[str, str]:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {k: v[0].strip() for k, v in form.items() if v}


def _back(name: str, done: str, **params: str) -> RedirectResponse:
    query = urlencode({**{k: v for k, v in params.items() if v}, "done": done})
    return RedirectResponse(f"/prompts/{quote(name, safe='')}?{query}", status_code=303)


@router.post("/prompts/{name}/deploy", response_model=None)
async def deploy_form(request: Request, name: str, store: StoreDep, owner: PageOwner) -> Response:
    """Deploy ``version`` (to ``deployment_id``, else the prompt's deployment or a new one)."""
    form = await _form(request)

    def deploy() -> dict[str, Any]:
        return store.deploy_prompt(name, whole(form.get("version", ""), 0),
                                   deployment_id=form.get("deployment_id") or None, author=UI_AUTHOR, owner=owner)

    return await run_in_threadpool(_act, request, store, owner, name, deploy, "{id} serves {ref}", form)


@router.post("/prompts/{name}/rollback", response_model=None)
async def rollback_form(request: Request, name: str, store: StoreDep, owner: PageOwner) -> Response:
    """Move ``deployment_id`` back to the version it served before its last move."""
    form = await _form(request)

    def rollback() -> dict[str, Any]:
        return store.rollback_deployment(form.get("deployment_id", ""), author=UI_AUTHOR, owner=owner)

    return await run_in_threadpool(_act, request, store, owner, name, rollback, "{id} serves {ref} again", form)


def _act(request: Request, store: StoreDep, owner: str, name: str, action: Callable[[], dict[str, Any]],
         done: str, form: dict[str, str]) -> Response:
    """Run a form's action (on a worker thread: SQLite), then back to the prompt's page."""
    if not _same_origin(request):
        return render(request, "error.html", 403, title="Forbidden", message="This form must be sent from this server.")
    try:
        d = action()
    except NotFoundError as exc:
        return _prompt_page(request, store, owner, name, status=404, error=str(exc))
    except ConfigError as exc:
        return _prompt_page(request, store, owner, name, status=400, error=str(exc))
    return _back(name, done.format(id=d["deployment_id"], ref=d["ref"]), a=form.get("a", ""), b=form.get("b", ""))
