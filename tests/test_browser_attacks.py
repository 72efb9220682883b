"""A web page on another origin, in a real headless Chromium, attacks a server on loopback.

* **CSRF**: a page on ``http://127.0.0.1:<other port>`` sends the "simple" requests any page may
  send without asking — ``text/plain`` fetches and form posts to the trace-log routes, a form
  logging the browser into another tenant — and none of them may store or change anything.
* **DNS rebinding**: Chromium resolves ``rebind.test`` to 127.0.0.1 (``--host-resolver-rules``,
  exactly what a rebinding DNS server achieves), and a page of that origin reads the API
  same-origin: the server must refuse a ``Host`` that is not its own.

On SQLite only: the guards under attack (origin, content type, ``Host``) refuse a request before
any store is read, the same code whatever the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from runner.server.auth import key_owner
from tests.servers import ServerHandle, experiment, log, start_app, start_server
from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS

playwright_api = pytest.importorskip("playwright.sync_api")

REBIND = "rebind.test"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {REBIND} 127.0.0.1"]
        )
        yield chromium
        chromium.close()


def _attacker(html: str) -> ServerHandle:
    """A second server on loopback (another port: another origin) serving the attack page."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(html)

    return start_app(Starlette(routes=[Route("/attack.html", page)]))


def _csrf_page(target: str) -> str:
    api = target + "/api/parea/v1"
    body = '{"trace_id": "csrf-%s", "start_timestamp": "2024-01-01T00:00:00Z", "output": "planted"}'
    return f"""<!doctype html><html><body>
<form id="f1" method="post" action="{api}/trace_log" enctype="text/plain" target="sink1">
  <input name='{body % "form"}' value="">
</form>
<form id="f2" method="post" action="{api}/trace_logs/batch" enctype="application/x-www-form-urlencoded" target="sink2">
  <input name="logs" value="x">
</form>
<form id="f3" method="post" action="{target}/login" target="sink3">
  <input name="key" value="key-b"><input name="next" value="/">
</form>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe><iframe name="sink3"></iframe>
<script>
window.results = [];
async function attack() {{
  for (const [path, text] of [["/trace_log", '{body % "fetch"}'],
                              ["/trace_logs/batch", '{{"logs": [{body % "batch"}]}}']]) {{
    try {{
      await fetch("{api}" + path, {{method: "POST", mode: "no-cors", credentials: "include",
                                    headers: {{"content-type": "text/plain"}}, body: text}});
      window.results.push(path + ": sent");
    }} catch (e) {{ window.results.push(path + ": " + e); }}
  }}
  document.getElementById("f1").submit();
  document.getElementById("f2").submit();
  document.getElementById("f3").submit();
  window.results.push("done");
}}
attack();
</script></body></html>"""


def _stored(server: ServerHandle, owner: str) -> list[str]:
    assert server.store is not None
    return [r[0] for r in server.store._query("SELECT trace_id FROM traces WHERE owner=?", (owner,))]


def _wait_for_frames(page: Any, count: int) -> None:
    # each form posts into its own iframe: wait until every one has an answer (any answer)
    page.wait_for_function(
        f"Array.from(document.querySelectorAll('iframe')).filter(f => {{"
        "  try { return f.contentWindow.location.href !== 'about:blank'; } catch (e) { return true; } })"
        f".length >= {count}",
        timeout=30_000,
    )


def test_a_page_on_another_origin_cannot_write_logs_to_the_keyless_server(browser: Any, tmp_path: Path) -> None:
    with start_server(tmp_path / "runner.db") as server, _attacker(_csrf_page(server.url)) as evil:
        context = browser.new_context()
        page = context.new_page()
        page.goto(evil.url + "/attack.html")
        page.wait_for_function("window.results.includes('done')", timeout=30_000)
        _wait_for_frames(page, 3)
        # the forms and fetches have all been answered: nothing they sent was stored
        assert [t for t in _stored(server, "") if t.startswith("csrf-")] == []
        context.close()


def test_a_page_on_another_origin_cannot_log_the_browser_into_another_tenant(browser: Any, tmp_path: Path) -> None:
    with (
        start_server(tmp_path / "runner.db", api_keys=["key-a", "key-b"]) as server,
        _attacker(_csrf_page(server.url)) as evil,
    ):
        context = browser.new_context()
        page = context.new_page()
        page.goto(evil.url + "/attack.html")
        page.wait_for_function("window.results.includes('done')", timeout=30_000)
        _wait_for_frames(page, 3)
        assert [c for c in context.cookies(server.url) if c["name"].startswith("runner_")] == []
        assert _stored(server, key_owner("key-a")) == [] and _stored(server, key_owner("key-b")) == []
        # the user's own login, on the server's own page, still works
        own = context.new_page()
        own.goto(server.url + "/login")
        own.fill('input[name="key"]', "key-a")
        own.click("button[type=submit]")
        own.wait_for_url(server.url + "/")
        (session,) = [c for c in context.cookies(server.url) if c["name"] == "runner_session"]
        assert "key-a" not in session["value"] and session["httpOnly"]
        context.close()


def test_a_rebound_hostname_cannot_read_the_server(browser: Any, tmp_path: Path) -> None:
    with start_server(tmp_path / "runner.db") as server:
        with httpx.Client(base_url=server.base_url + "/", timeout=30) as api:
            exp = experiment(api, project="secret-project", name="secret-exp")
            assert (
                api.post("/trace_log", json=log("secret-row", experiment_uuid=exp["uuid"], output="s3cret")).status_code
                == 200
            )
        origin = f"http://{REBIND}:{server.port}"
        script = """async () => {
            const out = {};
            for (const [name, path, init] of [
                ["list", "/api/parea/v1/experiments",
                    {method: "POST", headers: {"content-type": "application/json"}, body: "{}"}],
                ["trace", "/api/parea/v1/trace_log/secret-row", {}],
                ["ui", "/", {}],
                ["completion", "/api/parea/v1/completion",
                    {method: "POST", headers: {"content-type": "application/json"},
                    body: JSON.stringify({llm_configuration: {model: "gpt-4o-mini", provider: "openai",
                                          messages: [{role: "user", content: "hi"}]}})}],
            ]) {
                const r = await fetch(path, init);
                out[name] = [r.status, await r.text()];
            }
            return out;
        }"""
        context = browser.new_context()
        page = context.new_page()
        # after the rebind, the attacker's page (of origin rebind.test:port) talks to 127.0.0.1
        page.goto(f"{origin}/")
        got = page.evaluate(script)
        context.close()
        for name, (status, text) in got.items():
            assert status == 400, (name, status, text[:200])
            assert "s3cret" not in text and "secret-project" not in text
        # the server's own names still work
        with httpx.Client(base_url=server.base_url + "/", timeout=30) as api:
            assert api.post("/experiments", json={}).status_code == 200
