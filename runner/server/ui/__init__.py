"""The web UI: pages over the same store as the API, served by the same app at ``/``.

=====================================  ========================================================
``GET /``                              runs: every project's runs, newest first (``project``,
                                       ``q`` filter them); pick two to compare
``GET /runs/{uuid}``                   a run: summary, histograms, rows (``sort``, ``desc``,
                                       ``errors``, ``score`` + ``below``, ``q``, ``page``,
                                       ``per``)
``GET /traces/{trace_id}``             a row's span tree (``partial=1``: the tree alone)
``GET /compare?a=UUID&b=UUID``         run B against run A
``GET /logs``                          every trace: ``project``, ``name``, ``status``, ``kind``,
                                       ``since``/``until``, ``score`` + ``min``/``max``, ``tag``,
                                       ``q``, ``sort``, ``page``, ``per``
``GET /experiment?project=&name=``    one experiment's runs over time: scores, usage, stats
``GET /datasets``, ``/datasets/{ref}`` named datasets and their rows (``page``)
``GET /prompts``, ``/prompts/{name}``  versioned prompts: versions side by side with a diff,
                                       deployments; POST forms to deploy and roll back
``GET|POST /login``, ``POST /logout``  a signed session, with API keys configured
``GET /static/...``                    the stylesheet and the script
=====================================  ========================================================

Nothing is fetched from elsewhere (no CDN, no fonts, no build step): templates, one stylesheet
and one small script ship in the package, and charts are SVG drawn on the server.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from runner.server.auth import KeyRing
from runner.server.browser import LoginThrottle, Sessions
from runner.server.ui import logs, metrics, prompts
from runner.server.ui.auth import LoginRequired
from runner.server.ui.routes import HERE, router
from runner.server.ui.runs import LRU, RunCache

__all__ = ["mount"]


def mount(app: FastAPI, keys: KeyRing, sessions: Sessions) -> None:
    """Serve the pages from ``app`` (whose store they read), asking for one of ``keys`` if any,
    and keeping who logged in as ``sessions``."""
    app.state.ui_keys = keys
    app.state.ui_sessions = sessions
    app.state.ui_throttle = LoginThrottle()
    app.state.ui_runs = RunCache()
    app.state.ui_pairs = LRU(8)
    app.include_router(router)
    app.include_router(prompts.router)
    app.include_router(logs.router)
    app.include_router(metrics.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    async def login_required(request: Request, exc: Exception) -> RedirectResponse:
        assert isinstance(exc, LoginRequired)
        return RedirectResponse(exc.login_url, status_code=303)

    app.add_exception_handler(LoginRequired, login_required)
