"""What the LLM proxy adds to a completion call, against a direct HTTP call.

Runs the fake OpenAI server of ``tests/proxy_fakes.py`` in a subprocess (so it does not share
this process's GIL) and times, interleaved so drift hits every variant alike:

* ``direct``: ``httpx.AsyncClient.post`` of the same chat-completions body, JSON parsed;
* ``proxy, cache off``: ``Proxy.complete(cache=False)`` -> the same server;
* ``proxy, miss + SQLite write``: cache on, a new prompt each time (lookup, call, store);
* ``proxy, hit (memory)`` / ``proxy, hit (SQLite)``: answered from the cache, no upstream call.

Every proxy call also builds its trace log and hands it to a sink. Overhead is the median of
the variant minus the median of ``direct`` (for hits: the whole call). Usage::

    python benchmarks/proxy_overhead.py [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "proxy_fakes.py"), "openai"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        times = asyncio.run(run(base_url, args.n, args.warmup))
    finally:
        server.terminate()
        server.wait(10)
    direct = statistics.median(times["direct httpx"])
    print(f"{'variant':<28} {'median':>10} {'p90':>10} {'overhead':>10}   (n={args.n}, ms)")
    for name, samples in times.items():
        med = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1]
        overhead = med if "hit" in name else med - direct
        shown = "" if name.startswith("direct") else f"{overhead * 1e3:10.3f}"
        print(f"{name:<28} {med * 1e3:10.3f} {p90 * 1e3:10.3f} {shown:>10}")


if __name__ == "__main__":
    main()
