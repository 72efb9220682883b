"""Many requests in flight at once: ``runner.proxy.http_pool.ClientPool``, the proxy's upstream
pool and the process-wide limit on LLM calls, against servers on real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.proxy import CompletionsSchema, MemoryCompletionCache, ProviderConfig, Proxy, ProxySettings
from runner.proxy.http_pool import ClientPool
from tests.proxy_fakes import FakeProvider, serve

ROOT = Path(__file__).resolve().parent.parent


class Barrier:
    """An OpenAI-shaped endpoint that holds every request until ``need`` have been in flight at
    the same moment (then lets every request through), and records the most ever in flight."""

    def __init__(self, need: int, give_up: float = 60.0) -> None:
        self.need = need
        self.give_up = give_up
        self.in_flight = 0
        self.peak = 0
        self.served = 0
        self._reached: asyncio.Event | None = None

    async def handle(self, request: Request) -> Response:
        if self._reached is None:
            self._reached = asyncio.Event()
        await request.body()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight >= self.need:
            self._reached.set()
        try:
            await asyncio.wait_for(self._reached.wait(), self.give_up)
        except asyncio.TimeoutError:
            return JSONResponse({"error": {"message": f"only {self.peak} requests were ever in flight"}}, 400)
        finally:
            self.in_flight -= 1
        self.served += 1
        return JSONResponse({
            "id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    @contextmanager
    def running(self) -> Iterator[str]:
        app = Starlette(routes=[Route("/v1/chat/completions", self.handle, methods=["POST"])])
        with serve(app) as url:
            yield url


async def test_pool_has_max_connections_requests_in_flight_and_never_more() -> None:
    barrier = Barrier(need=8)
    with barrier.running() as url:
        pool = ClientPool(8, per_client=3, timeout=httpx.Timeout(90.0, pool=None))
        assert len(pool.clients) == 3  # ceil(8 / 3) shards
        try:
            responses = await asyncio.gather(*(pool.post(f"{url}/v1/chat/completions", content=b"{}")
                                               for _ in range(20)))
        finally:
            await pool.aclose()
    assert [r.status_code for r in responses] == [200] * 20
    assert barrier.peak == 8 and barrier.served == 20 and pool.in_flight == 0


def test_pool_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="max_connections must be at least 1"):
        ClientPool(0)
    with pytest.raises(ValueError, match="sets the limits"):
        ClientPool(4, limits=httpx.Limits(max_connections=4))


async def test_the_proxy_reuses_its_connections_under_load() -> None:
    """Three waves of 50 concurrent calls open at most 50 connections: an idle connection is kept
    for the next wave, not closed because the pool holds more than a handful (httpx's old default
    of 20 kept-alive connections made every wave open ~30 new ones)."""
    with FakeProvider.running("openai") as fake:
        fake.delay = 0.05
        settings = ProxySettings(providers={"openai": ProviderConfig("sk", fake.base_url)}, max_connections=50)
        async with Proxy(MemoryCompletionCache(), settings=settings) as proxy:
            for wave in range(3):
                answers = await asyncio.gather(*(proxy.complete(_request(f"wave {wave} call {i}"))
                                                 for i in range(50)))
                assert {a.status for a in answers} == {"success"}
        assert fake.calls == 150
        assert len(set(fake.peers)) <= 50


def _request(text: str) -> CompletionsSchema:
    return CompletionsSchema.model_validate({"llm_configuration": {
        "model": "gpt-4o-mini", "provider": "openai", "messages": [{"role": "user", "content": text}]}})


_CHILD = textwrap.dedent("""
    import asyncio, json
    import runner.integrations.llm

    async def main():
        answers = await asyncio.gather(*(runner.integrations.llm.acompletion(f"call {i}", model="gpt-4o-mini")
                                         for i in range(150)), return_exceptions=True)
        print(json.dumps([a.content if hasattr(a, "content") else repr(a) for a in answers]))

    asyncio.run(main())
    runner.integrations.llm.close()
""")


def test_150_concurrent_completions_are_all_in_flight_at_once(tmp_path: Path) -> None:
    """A fresh process (the LLM limiter is process-wide): 150 concurrent ``acompletion()`` calls
    reach the provider together; a ceiling of 64 calls in flight per provider held the rest back."""
    barrier = Barrier(need=150, give_up=30.0)
    with barrier.running() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "RUNNER_", "OPENAI_"))}
        env.update(OPENAI_BASE_URL=f"{url}/v1", OPENAI_API_KEY="sk-test", RUNNER_DB=str(tmp_path / "r.db"))
        out = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=180)
    assert out.returncode == 0, out.stderr
    answers: list[Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert answers == ["ok"] * 150, answers[:3]
    assert barrier.peak == 150
