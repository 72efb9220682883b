"""What the LLM proxy adds to a completion call, against a direct HTTP call.

Runs the fake OpenAI server of ``tests/proxy_fakes.py`` in a subprocess (so it does not share
this process's GIL) and times, interleaved so drift hits every variant alike:

* ``direct``: ``httpx.AsyncClient.post`` of the same chat-completions body, JSON parsed;
* ``proxy, cache off``: ``Proxy.complete(cache=False)`` -> the same server;
* ``proxy, miss + SQLite write``: cache on, a new prompt each time (lookup, call, store);
* ``proxy, hit (memory)`` / ``proxy, hit (SQLite)``: answered from the cache, no upstream call.

Every proxy call also builds its trace log and hands it to a sink. Overhead is the median of
the variant minus the median of ``direct`` (for hits: the whole call).

Then, end to end, the same against ``python -m runner serve`` (a second subprocess, whose proxy
reads the fake's URL from its environment) and through ``runner.completion()``:

* ``server /completion, cache off|miss|hit``: an ``httpx`` POST of a ``CompletionsSchema`` body
  to the real route (validation, proxy, trace log written to the store before the answer,
  response JSON), the response parsed;
* ``acompletion() in a row, embedded, ...``: the in-process proxy on the background loop, the
  log attached to the (fake) current row, as inside an experiment;
* ``acompletion() in a row, via server, ...``: the client over HTTP to the server's route, and
  the row's copy of the log built client-side;
* ``ref: server GET /``: the health route, for the cost of the extra HTTP hop alone.

Usage::

    python benchmarks/proxy_overhead.py [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from runner.proxy import (
    CompletionsSchema,
    MemoryCompletionCache,
    ProviderConfig,
    Proxy,
    ProxySettings,
    SQLiteCompletionCache,
)

ROOT = Path(__file__).resolve().parent.parent


def _request(text: str, *, cache: bool = True) -> CompletionsSchema:
    return CompletionsSchema.model_validate({
        "llm_configuration": {
            "model": "gpt-4o-mini", "provider": "openai",
            "model_params": {"temp": 0.0, "max_length": 64},
            "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}],
        },
        "cache": cache,
        "metadata": {"row": 1},
    })


async def run(base_url: str, n: int, warmup: int) -> dict[str, list[float]]:
    settings = ProxySettings(providers={"openai": ProviderConfig("sk-bench", f"{base_url}/v1")})
    sink: deque[dict[str, Any]] = deque(maxlen=1)
    body = {"model": "gpt-4o-mini", "temperature": 0.0, "max_completion_tokens": 64,
            "messages": [{"role": "system", "content": "Answer briefly."},
                         {"role": "user", "content": "what is the overhead?"}]}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_cache = SQLiteCompletionCache(Path(tmp) / "bench.db")
        async with (
            httpx.AsyncClient(headers={"authorization": "Bearer sk-bench"}) as client,
            Proxy(None, settings=settings, log_sink=sink.append) as plain,
            Proxy(MemoryCompletionCache(), settings=settings, log_sink=sink.append) as in_memory,
            Proxy(sqlite_cache, settings=settings, log_sink=sink.append) as on_disk,
        ):
            # Requests are built (validated) up front: the server's route does that in any case.
            hit, uncached = _request("what is the overhead?"), _request("what is the overhead?", cache=False)
            misses = iter([_request(f"miss {i}") for i in range(warmup + n)])
            await in_memory.complete(hit)
            await on_disk.complete(hit)

            async def direct() -> None:
                response = await client.post(f"{base_url}/v1/chat/completions", json=body)
                response.raise_for_status()
                response.json()

            variants: dict[str, Callable[[], Awaitable[Any]]] = {
                "direct httpx": direct,
                "proxy, cache off": lambda: plain.complete(uncached),
                "proxy, miss + SQLite write": lambda: on_disk.complete(next(misses)),
                "proxy, hit (memory)": lambda: in_memory.complete(hit),
                "proxy, hit (SQLite)": lambda: on_disk.complete(hit),
            }
            times: dict[str, list[float]] = {name: [] for name in variants}
            for i in range(warmup + n):
                for name, call in variants.items():
                    t0 = time.perf_counter()
                    await call()
                    if i >= warmup:
                        times[name].append(time.perf_counter() - t0)
        sqlite_cache.close()
    return times


def _request_body(text: str, *, cache: bool = True) -> bytes:
    return _request(text, cache=cache).model_dump_json(exclude_none=True).encode()


async def run_end_to_end(base_url: str, server_url: str, db: Path, n: int, warmup: int) -> dict[str, list[float]]:
    """The server's ``/completion`` and ``runner.acompletion()`` against ``direct``."""
    import runner.integrations.llm
    from runner.pipeline.tracing import Span, TraceRun, set_current

    api = f"{server_url}/api/parea/v1"
    body = {"model": "gpt-4o-mini", "temperature": 0.0, "max_completion_tokens": 64,
            "messages": [{"role": "system", "content": "Answer briefly."},
                         {"role": "user", "content": "what is the overhead?"}]}
    hit, uncached = _request_body("what is the overhead?"), _request_body("what is the overhead?", cache=False)
    misses = iter([_request_body(f"server miss {i}") for i in range(warmup + n)])
    os.environ.update(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="sk-bench", RUNNER_DB=str(db))
    # a current row, as inside an experiment: each call's log is attached to it
    run = TraceRun(None, "default")
    set_current(Span("bench-row", run, None))
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "what is the overhead?"}]
    params = {"temp": 0.0, "max_length": 64}

    def client_call(route: str, *, cache: bool) -> Callable[[], Awaitable[Any]]:
        async def call() -> None:
            if route == "server":
                os.environ["PAREA_BASE_URL"] = api
            else:
                os.environ.pop("PAREA_BASE_URL", None)
            run.llm_route = None  # resolved again from the environment just changed
            await runner.integrations.llm.acompletion(messages, model="gpt-4o-mini", model_params=params, cache=cache)
            run.children.clear()

        return call

    async with httpx.AsyncClient(headers={"authorization": "Bearer sk-bench"}) as client:

        async def direct() -> None:
            response = await client.post(f"{base_url}/v1/chat/completions", json=body)
            response.raise_for_status()
            response.json()

        def server(content: Callable[[], bytes]) -> Callable[[], Awaitable[Any]]:
            async def call() -> None:
                response = await client.post(f"{api}/completion", content=content(),
                                             headers={"content-type": "application/json"})
                response.raise_for_status()
                response.json()

            return call

        await server(lambda: hit)()
        await client_call("embedded", cache=True)()
        async def floor() -> None:
            response = await client.get(f"{api}/")
            response.raise_for_status()
            response.json()

        variants: dict[str, Callable[[], Awaitable[Any]]] = {
            "direct httpx": direct,
            "ref: server GET / (the extra hop)": floor,
            "server /completion, cache off": server(lambda: uncached),
            "server /completion, miss": server(lambda: next(misses)),
            "server /completion, hit": server(lambda: hit),
            "acompletion() embedded, cache off": client_call("embedded", cache=False),
            "acompletion() embedded, hit": client_call("embedded", cache=True),
            "acompletion() via server, cache off": client_call("server", cache=False),
            "acompletion() via server, hit": client_call("server", cache=True),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for i in range(warmup + n):
            for name, call in variants.items():
                t0 = time.perf_counter()
                await call()
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
    runner.integrations.llm.close()
    return times


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _report(times: dict[str, list[float]], n: int) -> None:
    direct = statistics.median(times["direct httpx"])
    print(f"{'variant':<38} {'median':>10} {'p90':>10} {'overhead':>10}   (n={n}, ms)")
    for name, samples in times.items():
        med = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1]
        overhead = med if "hit" in name else med - direct
        shown = "" if name.startswith(("direct", "ref:")) else f"{overhead * 1e3:10.3f}"
        print(f"{name:<38} {med * 1e3:10.3f} {p90 * 1e3:10.3f} {shown:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    fake = subprocess.Popen([sys.executable, str(ROOT / "tests" / "proxy_fakes.py"), "openai"],
                            stdout=subprocess.PIPE, text=True)
    server: subprocess.Popen[bytes] | None = None
    try:
        assert fake.stdout is not None
        base_url = fake.stdout.readline().strip()
        times = asyncio.run(run(base_url, args.n, args.warmup))
        _report(times, args.n)
        with tempfile.TemporaryDirectory() as tmp:
            port = _free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "RUNNER_"))}
            env.update(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="sk-bench")
            server = serving = subprocess.Popen(
                [sys.executable, "-m", "runner", "serve", "--port", str(port), "--db", f"{tmp}/server.db",
                 "--log-level", "warning"],
                env=env, stdout=subprocess.DEVNULL, cwd=tmp,
            )
            server_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{server_url}/api/parea/v1/").raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or serving.poll() is not None:
                        raise RuntimeError("python -m runner serve did not start") from None
                    time.sleep(0.05)
            print()
            _report(asyncio.run(run_end_to_end(base_url, server_url, Path(tmp) / "client.db", args.n, args.warmup)),
                    args.n)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        fake.terminate()
        fake.wait(10)


if __name__ == "__main__":
    main()
